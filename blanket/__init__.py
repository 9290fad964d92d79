"""blanket: a job runner whose task types are TOML files in a watched directory."""

__version__ = "0.1.0"
