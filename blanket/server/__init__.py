"""The server: HTTP routes (api/), the services they call (intake, queue, worker registry,
schedules, tokens), the catalog of types and schedules, the inbox."""
