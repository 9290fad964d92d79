"""The REST API: a Bottle app (app.make_app) whose routes live in one module per resource."""
