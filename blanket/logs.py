"""structlog set up once: console lines on a terminal, JSON lines to files, rotated by size."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

import structlog

from blanket.config.settings import LogDestination

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR, "critical": logging.CRITICAL}


def level_number(name: str) -> int:
    try:
        return _LEVELS[name.lower()]
    except KeyError:
        raise ValueError(f"log level {name!r}: use one of {', '.join(_LEVELS)}") from None


def configure_logging(destinations: tuple[LogDestination, ...], verbosity: int = 0,
                      base_dir: Path | None = None) -> None:
    """Send blanket's logs to every destination, each with its own level and format.
    `verbosity` (from -v/-q) shifts every level by 10 per step."""
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    lowest = logging.CRITICAL
    for dest in destinations:
        handler = _handler(dest, base_dir)
        level = min(logging.CRITICAL, max(logging.DEBUG, level_number(dest.level) - 10 * verbosity))
        handler.setLevel(level)
        lowest = min(lowest, level)
        handler.setFormatter(structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                        _renderer(dest, handler)],
        ))
        root.addHandler(handler)
    root.setLevel(lowest)
    logging.getLogger("watchdog").setLevel(logging.WARNING)
    structlog.configure(
        # filter_by_level first: a line below every destination's level costs next to nothing.
        processors=[structlog.stdlib.filter_by_level, *shared,
                    structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def _handler(dest: LogDestination, base_dir: Path | None) -> logging.Handler:
    if dest.destination == "stderr":
        return logging.StreamHandler(sys.stderr)
    if dest.destination == "stdout":
        return logging.StreamHandler(sys.stdout)
    path = Path(dest.destination)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    path.parent.mkdir(parents=True, exist_ok=True)
    return logging.handlers.RotatingFileHandler(
        path, maxBytes=dest.max_bytes, backupCount=dest.backups, encoding="utf-8")


def _renderer(dest: LogDestination, handler: logging.Handler):
    fmt = dest.format
    if fmt == "auto":
        fmt = "json" if isinstance(handler, logging.FileHandler) else "console"
    if fmt == "console":
        return structlog.dev.ConsoleRenderer(colors=False)
    if fmt == "json":
        return structlog.processors.JSONRenderer()
    raise ValueError(f"log format {fmt!r}: use console, json or auto")
