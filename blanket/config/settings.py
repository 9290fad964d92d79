"""Server and client settings: defaults, then blanket.toml, then BLANKET_* variables, then flags."""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from blanket.auth import ANONYMOUS_ROLES
from blanket.config.checker import MAX_DURATION, MAX_KEEP, Checker, key_line
from blanket.config.notify import NotifyTarget, parse_notify_blocks
from blanket.durations import format_duration, parse_duration
from blanket.errors import InvalidInput
from blanket.taskdir import DataDir

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
    # Where to serve instead of host:port: one "HOST:PORT" and/or one "unix:PATH".
    listen: tuple[str, ...] = ()
    tls: str = ""  # "self-signed": serve HTTPS with a certificate made in data_dir
    tls_cert: Path | None = None  # or serve HTTPS with this certificate (PEM) ...
    tls_key: Path | None = None  # ... and its private key
    insecure: bool = False  # plain HTTP on an address other than loopback, on purpose
    config_dir: Path = Path("conf.d")
    data_dir: Path = Path("var")
    inbox_dir: Path = Path("inbox")
    database: str = ""  # empty: SQLite at data_dir/blanket.db; or postgresql://...
    server_url: str = ""  # what clients and workers talk to; empty: http://host:port
    threads: int = 256  # the most threads answering short requests (per address)
    server_cpus: tuple[int, ...] = ()  # the CPUs the server's threads run on; empty: any
    max_threads: int = 1024  # the most threads holding long polls and followed logs
    workers: int = 0  # tasks the server's own worker process runs at once (its slots)
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
    notify: tuple[NotifyTarget, ...] = ()  # [[notify]] blocks for every task (config/notify.py)
    # Retention (server/retention.py): unset keeps every ended task for ever.
    keep_finished: float | None = None  # how long an ended task is kept
    keep_failed: float | None = None  # FAILED and TIMEDOUT ones, whatever the others say
    keep_per_type: int | None = None  # at most this many ended tasks of each type, the newest
    prune_interval: float = 60.0  # how often the server sweeps

    @property
    def database_url(self) -> str:
        return self.database or f"sqlite:///{DataDir(self.data_dir).store}"

    @property
    def anonymous_role(self) -> str:
        if self.anonymous:
            return self.anonymous
        return "operator" if is_loopback(self.host) else "none"

    @property
    def url(self) -> str:
        if self.server_url:
            return self.server_url.rstrip("/")
        if not self.serves_tcp:
            return f"{UNIX_PREFIX}{self.unix_socket}"
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self.serves_tls else 'http'}://{host}:{self.port}"

    @property
    def local_url(self) -> str:
        """What the server's own workers call: its unix socket if it has one, else `url`."""
        if self.unix_socket is not None:
            return f"{UNIX_PREFIX}{self.unix_socket.absolute()}"
        return self.url

    @property
    def serves_tcp(self) -> bool:
        return not self.listen or any(not a.startswith(UNIX_PREFIX) for a in self.listen)

    @property
    def unix_socket(self) -> Path | None:
        for address in self.listen:
            if address.startswith(UNIX_PREFIX):
                return Path(address[len(UNIX_PREFIX):])
        return None

    @property
    def serves_tls(self) -> bool:
        """Whether TCP is served over TLS (a unix socket never is: its file mode guards it)."""
        return bool(self.tls or self.tls_cert)


_ENV = {
    "host": "BLANKET_HOST",
    "port": "BLANKET_PORT",
    "config_dir": "BLANKET_CONFIG_DIR",
    "data_dir": "BLANKET_DATA_DIR",
    "inbox_dir": "BLANKET_INBOX_DIR",
    "database": "BLANKET_DATABASE",
    "server_url": "BLANKET_SERVER",
    "threads": "BLANKET_THREADS",
    "server_cpus": "BLANKET_SERVER_CPUS",
    "max_threads": "BLANKET_MAX_THREADS",
    "workers": "BLANKET_WORKERS",
    "worker_tags": "BLANKET_WORKER_TAGS",
    "heartbeat_interval": "BLANKET_HEARTBEAT_INTERVAL",
    "lost_after": "BLANKET_LOST_AFTER",
    "forget_workers_after": "BLANKET_FORGET_WORKERS_AFTER",
    "anonymous": "BLANKET_ANONYMOUS",
    "allowed_origins": "BLANKET_ALLOWED_ORIGINS",
    "server_names": "BLANKET_SERVER_NAMES",
    "listen": "BLANKET_LISTEN",
    "tls": "BLANKET_TLS",
    "tls_cert": "BLANKET_TLS_CERT",
    "tls_key": "BLANKET_TLS_KEY",
    "insecure": "BLANKET_INSECURE",
    "keep_finished": "BLANKET_KEEP_FINISHED",
    "keep_failed": "BLANKET_KEEP_FAILED",
    "keep_per_type": "BLANKET_KEEP_PER_TYPE",
    "prune_interval": "BLANKET_PRUNE_INTERVAL",
}
UNIX_PREFIX = "unix:"
TLS_MODES = ("self-signed",)


def is_loopback(host: str) -> bool:
    """Whether `host` (a bind address or name, or a peer's address) is on this machine only:
    an IPv6 address's zone is left out, an IPv4 one mapped into IPv6 is read as IPv4."""
    if host == "localhost":
        return True
    try:
        parsed = ipaddress.ip_address(host.strip("[]").partition("%")[0])
    except ValueError:
        return False
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return parsed.ipv4_mapped.is_loopback  # ::ffff:127.0.0.1 on a dual-stack socket
    return parsed.is_loopback


def load_settings(path: Path | None = None, overrides: dict[str, Any] | None = None,
                  environ: dict[str, str] | None = None) -> Settings:
    """Defaults, then the settings file (a missing file is fine), then BLANKET_* variables,
    then `overrides` (CLI flags; None values are ignored)."""
    environ = os.environ if environ is None else environ
    path = path or Path(environ.get("BLANKET_SETTINGS", SETTINGS_FILE))
    values: dict[str, Any] = {}
    text = ""
    if path.is_file():
        text = path.read_text()
        try:
            values.update(tomllib.loads(text))
        except tomllib.TOMLDecodeError as e:
            raise InvalidInput(f"{path}: {e}") from e
        if "notify" in values:
            values["notify"] = _notify_blocks(values, str(path), text)
    from_file = set(values)
    for key, var in _ENV.items():
        if var in environ and environ[var] != "":
            values[key] = environ[var]
    if "BLANKET_LOG_LEVEL" in environ:
        values["log_level"] = environ["BLANKET_LOG_LEVEL"]
    overridden = {k: v for k, v in (overrides or {}).items() if v is not None}
    values.update(overridden)
    from_file -= {*overridden, *(k for k, var in _ENV.items() if environ.get(var))}

    def origin_of(key: str) -> str:
        """The file and line a bad value came from (a file's key), else the file."""
        line = key_line(text, key) if key in from_file else None
        return f"{path}:{line}" if line else str(path)

    return _build(values, str(path), origin_of)


def _build(values: dict[str, Any], origin: str,
           origin_of: Callable[[str], str] | None = None) -> Settings:
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
            where = origin_of(key) if origin_of else origin
            raise InvalidInput(f"{where}: setting {key}: {e}") from e
    converted.update(_listen_host_port(converted, origin))
    _check_tls(converted, origin)
    settings = Settings(**converted)
    if level:
        settings = replace(settings, log=tuple(replace(d, level=level) for d in settings.log))
    return settings


def _convert(key: str, value: Any) -> Any:
    if key in ("config_dir", "data_dir", "inbox_dir", "tls_cert", "tls_key"):
        return Path(os.path.expanduser(str(value)))
    if key == "listen":
        addresses = tuple(_split_tags(value))
        for address in addresses:
            _listen_address(address)
        return tuple(f"{UNIX_PREFIX}{os.path.expanduser(a[len(UNIX_PREFIX):])}"
                     if a.startswith(UNIX_PREFIX) else a for a in addresses)
    if key == "tls":
        if value not in ("", *TLS_MODES):
            raise ValueError(f"{value!r}: the only mode is \"self-signed\" (or set tls_cert and "
                             "tls_key to serve your own certificate)")
        return value
    if key == "insecure":
        return _boolean(value)
    if key in ("threads", "max_threads"):
        number = int(value)
        if number < 1:
            raise ValueError(f"{value!r} must be 1 or more")
        return number
    if key == "server_cpus":
        cpus = []
        for item in _split_tags(value):
            if not item.isdigit():
                raise ValueError(f"{item!r} is not a CPU number (0, 1, ...)")
            cpus.append(int(item))
        return tuple(sorted(set(cpus)))
    if key in ("port", "workers", "max_missed"):
        number = int(value)
        if number < 0:
            raise ValueError(f"{value!r} must be 0 or more")
        return number
    if key in ("heartbeat_interval", "lost_after", "forget_workers_after"):
        # A century for forgetting (a list kept for good); a year for the others.
        return _at_most(value, parse_duration(value),
                        MAX_KEEP if key == "forget_workers_after" else MAX_DURATION)
    if key in ("keep_finished", "keep_failed", "keep_per_type", "prune_interval"):
        return _retention(key, value)
    if key in ("worker_tags", "allowed_origins", "server_names"):
        return tuple(_split_tags(value))
    if key == "anonymous":
        if value not in ANONYMOUS_ROLES:
            raise ValueError(f"{value!r}: use one of {', '.join(ANONYMOUS_ROLES)} (worker and "
                             "admin actions always need a token)")
        return value
    if key == "log":
        return tuple(_log_destination(item) for item in _as_list(value))
    if key == "notify":
        if not isinstance(value, tuple):  # only blanket.toml's [[notify]] blocks, parsed
            raise ValueError("write [[notify]] blocks in the settings file")
        return value
    if not isinstance(value, str):
        raise ValueError(f"{value!r} should be a string")
    return value


def _retention(key: str, value: Any) -> float | int:
    if key == "keep_per_type":
        text = str(value).strip()
        if isinstance(value, bool) or not text.isdigit() or int(text) < 1:
            raise ValueError(f"{value!r}: write a whole number of 1 or more (the most ended "
                             "tasks kept for each type)")
        return int(text)
    seconds = parse_duration(value)
    least = 1.0 if key == "prune_interval" else 60.0
    if seconds < least:
        raise ValueError(f"{value!r} is too short; the least is {least:g}s (write \"30d\" "
                         "for 30 days)")
    return _at_most(value, seconds, MAX_DURATION if key == "prune_interval" else MAX_KEEP)


def _at_most(value: Any, seconds: float, most: float) -> float:
    """`seconds` if no more than `most` (as a type file's durations are bounded)."""
    if seconds > most:
        raise ValueError(f"{value!r} is too long; the most is {format_duration(most)}")
    return seconds


def _notify_blocks(values: dict[str, Any], file: str, text: str) -> tuple[NotifyTarget, ...]:
    """blanket.toml's [[notify]] blocks (the only file where `secret = "..."` may be
    written); InvalidInput lists each problem with its file:line."""
    checker = Checker(file, text)
    blocks = parse_notify_blocks(checker, values, allow_secret=True)
    if checker.problems:
        raise InvalidInput("; ".join(str(p) for p in checker.problems))
    return blocks


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"{value!r}: write true or false")


def _listen_address(address: str) -> tuple[str, int] | Path:
    """("HOST", PORT) for "HOST:PORT" or "[V6]:PORT"; the path for "unix:PATH"."""
    if address.startswith(UNIX_PREFIX):
        if not address[len(UNIX_PREFIX):]:
            raise ValueError(f"{address!r}: write unix:/PATH/TO/blanket.sock")
        return Path(os.path.expanduser(address[len(UNIX_PREFIX):]))
    host, sep, port = address.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{address!r}: write HOST:PORT (like 127.0.0.1:8773 or [::1]:8773) "
                         "or unix:/PATH/TO/blanket.sock")
    return host, int(port)


def _listen_host_port(converted: dict[str, Any], origin: str) -> dict[str, Any]:
    """`listen` replaces host and port: its TCP address, if any, becomes them."""
    listen = converted.get("listen")
    if not listen:
        return {}
    example = 'listen = ["127.0.0.1:8773", "unix:/run/blanket/blanket.sock"]'
    clash = [key for key in ("host", "port") if key in converted]
    if clash:
        raise InvalidInput(f"{origin}: listen replaces host and port, and {' and '.join(clash)} "
                           f"is set too: put the TCP address in listen ({example}), or use "
                           "host and port alone")
    tcp = [a for a in listen if not a.startswith(UNIX_PREFIX)]
    if len(tcp) > 1 or len(listen) - len(tcp) > 1:
        raise InvalidInput(f"{origin}: listen takes one TCP address and one unix socket at "
                           f"most ({example})")
    if not tcp:
        return {}
    host, port = _listen_address(tcp[0])
    return {"host": host, "port": port}


def _check_tls(converted: dict[str, Any], origin: str) -> None:
    cert, key = converted.get("tls_cert"), converted.get("tls_key")
    if (cert is None) != (key is None):
        raise InvalidInput(f"{origin}: set both tls_cert (the certificate) and tls_key (its "
                           "private key), or neither")
    if cert is not None and converted.get("tls"):
        raise InvalidInput(f"{origin}: tls = \"self-signed\" makes its own certificate; "
                           "remove it to serve tls_cert and tls_key, or remove those")


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
