"""Server and client settings: defaults, then blanket.toml, then BLANKET_* variables, then flags."""

from __future__ import annotations

import ipaddress
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from blanket.auth import ANONYMOUS_ROLES
from blanket.durations import parse_duration
from blanket.errors import InvalidInput

SETTINGS_FILE = "blanket.toml"


@dataclass(frozen=True)
class LogDestination:
    """Where log lines go: "stderr", "stdout" or a file path; format "console" or "json"."""

    destination: str = "stderr"
    level: str = "info"
    format: str = "auto"  # auto: console for stderr/stdout, json lines for files
    max_bytes: int = 10 * 1024 * 1024
    backups: int = 5


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8773
    config_dir: Path = Path("conf.d")
    data_dir: Path = Path("var")
    inbox_dir: Path = Path("inbox")
    database: str = ""  # empty: SQLite at data_dir/blanket.db; or postgresql://...
    server_url: str = ""  # what clients and workers talk to; empty: http://host:port
    threads: int = 64  # HTTP threads to start with; the pool grows while long polls hold them
    max_threads: int = 1024
    workers: int = 0  # local worker processes the server supervises
    worker_tags: tuple[str, ...] = ()
    heartbeat_interval: float = 2.0
    lost_after: float = 15.0
    forget_workers_after: float = 86400.0  # a worker silent this long leaves the list
    max_missed: int = 100
    # The role of a request without credentials; empty: operator when bound to loopback,
    # else none. Worker and admin actions always need a token.
    anonymous: str = ""
    allowed_origins: tuple[str, ...] = ()  # web origins besides the server's own that may write
    server_names: tuple[str, ...] = ()  # Host headers accepted besides the defaults; "*": any
    log: tuple[LogDestination, ...] = field(default_factory=lambda: (LogDestination(),))

    @property
    def database_url(self) -> str:
        return self.database or f"sqlite:///{self.data_dir / 'blanket.db'}"

    @property
    def anonymous_role(self) -> str:
        if self.anonymous:
            return self.anonymous
        return "operator" if is_loopback(self.host) else "none"

    @property
    def url(self) -> str:
        if self.server_url:
            return self.server_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"


_ENV = {
    "host": "BLANKET_HOST",
    "port": "BLANKET_PORT",
    "config_dir": "BLANKET_CONFIG_DIR",
    "data_dir": "BLANKET_DATA_DIR",
    "inbox_dir": "BLANKET_INBOX_DIR",
    "database": "BLANKET_DATABASE",
    "server_url": "BLANKET_SERVER",
    "threads": "BLANKET_THREADS",
    "max_threads": "BLANKET_MAX_THREADS",
    "workers": "BLANKET_WORKERS",
    "worker_tags": "BLANKET_WORKER_TAGS",
    "heartbeat_interval": "BLANKET_HEARTBEAT_INTERVAL",
    "lost_after": "BLANKET_LOST_AFTER",
    "forget_workers_after": "BLANKET_FORGET_WORKERS_AFTER",
    "anonymous": "BLANKET_ANONYMOUS",
    "allowed_origins": "BLANKET_ALLOWED_ORIGINS",
    "server_names": "BLANKET_SERVER_NAMES",
}


def is_loopback(host: str) -> bool:
    """Whether `host` (a bind address or name) is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_settings(path: Path | None = None, overrides: dict[str, Any] | None = None,
                  environ: dict[str, str] | None = None) -> Settings:
    """Defaults, then the settings file (a missing file is fine), then BLANKET_* variables,
    then `overrides` (CLI flags; None values are ignored)."""
    environ = os.environ if environ is None else environ
    path = path or Path(environ.get("BLANKET_SETTINGS", SETTINGS_FILE))
    values: dict[str, Any] = {}
    if path.is_file():
        try:
            values.update(tomllib.loads(path.read_text()))
        except tomllib.TOMLDecodeError as e:
            raise InvalidInput(f"{path}: {e}") from e
    for key, var in _ENV.items():
        if var in environ and environ[var] != "":
            values[key] = environ[var]
    if "BLANKET_LOG_LEVEL" in environ:
        values["log_level"] = environ["BLANKET_LOG_LEVEL"]
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return _build(values, str(path))


def _build(values: dict[str, Any], origin: str) -> Settings:
    known = {f.name: f for f in fields(Settings)}
    level = values.pop("log_level", None)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise InvalidInput(
            f"{origin}: unknown setting(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}"
        )
    converted: dict[str, Any] = {}
    for key, value in values.items():
        try:
            converted[key] = _convert(key, value)
        except (TypeError, ValueError) as e:
            raise InvalidInput(f"{origin}: setting {key}: {e}") from e
    settings = Settings(**converted)
    if level:
        settings = replace(settings, log=tuple(replace(d, level=level) for d in settings.log))
    return settings


def _convert(key: str, value: Any) -> Any:
    if key in ("config_dir", "data_dir", "inbox_dir"):
        return Path(os.path.expanduser(str(value)))
    if key in ("threads", "max_threads"):
        number = int(value)
        if number < 1:
            raise ValueError(f"{value!r} must be 1 or more")
        return number
    if key in ("port", "workers", "max_missed"):
        number = int(value)
        if number < 0:
            raise ValueError(f"{value!r} must be 0 or more")
        return number
    if key in ("heartbeat_interval", "lost_after", "forget_workers_after"):
        return parse_duration(value)
    if key in ("worker_tags", "allowed_origins", "server_names"):
        return tuple(_split_tags(value))
    if key == "anonymous":
        if value not in ANONYMOUS_ROLES:
            raise ValueError(f"{value!r}: use one of {', '.join(ANONYMOUS_ROLES)} (worker and "
                             "admin actions always need a token)")
        return value
    if key == "log":
        return tuple(_log_destination(item) for item in _as_list(value))
    if not isinstance(value, str):
        raise ValueError(f"{value!r} should be a string")
    return value


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _log_destination(item: Any) -> LogDestination:
    if isinstance(item, str):
        return LogDestination(destination=item)
    if not isinstance(item, dict):
        raise ValueError("each log entry is a table: { destination = ..., level = ... }")
    valid = {f.name for f in fields(LogDestination)}
    bad = sorted(set(item) - valid)
    if bad:
        raise ValueError(f"unknown log key(s) {', '.join(bad)}; valid: {', '.join(sorted(valid))}")
    return LogDestination(**item)


def _split_tags(value: Any) -> list[str]:
    if isinstance(value, str):
        return [t.strip() for t in value.split(",") if t.strip()]
    return [str(t) for t in value]
