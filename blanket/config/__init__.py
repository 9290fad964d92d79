"""The files people write: settings, type and schedule files, their checker, and the content-hash
versions of types."""
