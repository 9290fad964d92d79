"""A worker: its process loop, the protocol's client side, and the runner that runs one task in its
directory. Talks to the server over HTTP only."""
