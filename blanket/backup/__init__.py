"""Backups of a server's data dir (`blanket backup`, `blanket restore`, run on the server's
machine) and exports of tasks as JSON lines (`blanket export`, over the HTTP API)."""
