"""`[[notify]]` blocks: who hears of a task's end. The same rules for a type file, a schedule
file and blanket.toml; which blocks apply to a task is `server/notifyrules.py`'s.

    [[notify]]
    on = ["failed", "timedout", "lost"]
    url = "https://hooks.example.com/blanket"   # a webhook: POST of JSON, signed when a
    secret_env = "HOOK_SECRET"                  # secret is given (from the server's env)
    format = "json"                             # or "slack": {"text": "..."}

    [[notify]]
    on = ["success"]
    run = "notify-send blanket \\"task $BLANKET_TASK_ID ended\\""   # run by the server

A secret written in the file itself (`secret = "..."`) is taken from blanket.toml only:
type and schedule files are kept in git and shown to viewers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from blanket.config.checker import Checker, Line

EVENTS = ("failed", "timedout", "lost", "success", "stopped", "skipped")
FORMATS = ("json", "slack")
KEYS = ("on", "url", "run", "format", "secret", "secret_env", "timeout")
DEFAULT_TIMEOUT = 10.0
MAX_TIMEOUT = 300.0
MAX_URL = 2048
MAX_RUN = 8192


@dataclass(frozen=True)
class NotifyTarget:
    """One `[[notify]]` block: the events it wants and where they go (a webhook `url` or a
    command `run` by the server). `origin` says where it was written (FILE:LINE)."""

    on: tuple[str, ...]
    url: str | None = None
    run: str | None = None
    format: str = "json"
    secret_env: str | None = None
    secret: str | None = field(default=None, repr=False)  # blanket.toml only
    timeout: float = DEFAULT_TIMEOUT
    origin: str = ""

    @property
    def kind(self) -> str:
        return "webhook" if self.url is not None else "command"

    def wants(self, event: str) -> bool:
        """Whether this block asks for `event`; a task that ended because its worker died
        ("lost") counts as "failed" too."""
        return event in self.on or (event == "lost" and "failed" in self.on)

    def stored(self) -> dict[str, Any]:
        """What a delivery keeps of its target (so that a config change or a restart does
        not change where a pending notification goes). Never a secret's value: an inline
        secret is looked up again in blanket.toml by the target's key when it is sent."""
        data: dict[str, Any] = {"kind": self.kind, "format": self.format,
                                "timeout": self.timeout, "label": self.label,
                                "origin": self.origin}
        if self.url is not None:
            data["url"] = self.url
        if self.run is not None:
            data["run"] = self.run
        if self.secret_env is not None:
            data["secret_env"] = self.secret_env
        if self.secret is not None:
            data["secret"] = "blanket.toml"
        return data

    @property
    def key(self) -> str:
        """The target's identity: two blocks that send the same way to the same place are one
        target (a task's end reaches it once, whichever blocks matched)."""
        ident = {k: v for k, v in self.stored().items() if k not in ("label", "origin")}
        if self.secret is not None:
            ident["secret"] = hashlib.sha256(self.secret.encode()).hexdigest()
        text = json.dumps(ident, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    @property
    def label(self) -> str:
        """How the API and the page show the target: a URL's path may hold its credential
        (Slack's does), so only its scheme and host are shown; of a command, its first word
        (its arguments may hold one too)."""
        if self.url is not None:
            parts = urlsplit(self.url)
            return f"{parts.scheme}://{parts.hostname or ''}{'/…' if parts.path.strip('/') else ''}"
        words = (self.run or "").split(maxsplit=1)
        return f"run: {words[0] if words else ''}{' …' if len(words) > 1 else ''}"


def parse_notify_blocks(checker: Checker, data: dict, *,
                        allow_secret: bool) -> tuple[NotifyTarget, ...]:
    """The `[[notify]]` blocks of a file's TOML `data`, problems recorded in `checker` (with
    their file:line). `allow_secret`: a `secret = "..."` may be written here (blanket.toml)."""
    if "notify" not in data:
        return ()
    blocks = data["notify"]
    if not isinstance(blocks, list) or not all(isinstance(b, dict) for b in blocks):
        checker.wrong_type("notify", "[[notify]] blocks (a list of tables)", blocks,
                           checker.top_line("notify"))
        return ()
    found = (_block(checker, i, b, allow_secret) for i, b in enumerate(blocks))
    return tuple(t for t in found if t is not None)


def _block(checker: Checker, index: int, block: dict,
           allow_secret: bool) -> NotifyTarget | None:
    header, line = checker.section_lines("notify", index)
    where = f"notify[{index}]"

    before = len(checker.problems)
    checker.unknown_keys(block, KEYS, f" in {where}", line)
    on = _events(checker, where, block.get("on"), line("on") if "on" in block else header)
    url, run = block.get("url"), block.get("run")
    if (url is None) == (run is None):
        checker.problem(header, f'{where}: set exactly one of url (a webhook, like url = '
                                f'"https://hooks.example.com/x") or run (a command the '
                                f'server runs)')
    if url is not None:
        _url(checker, f"{where}.url", url, line("url"))
    if run is not None:
        checker.string(f"{where}.run", run, line("run"), nonempty=True, most=MAX_RUN)
    fmt = checker.choice(f"{where}.format", block.get("format", "json"), line("format"),
                         FORMATS)
    if fmt == "slack" and run is not None:
        checker.problem(line("format"), f'{where}.format: "slack" is for a webhook url; '
                                        "a command gets the JSON on its standard input")
    secret_env = block.get("secret_env")
    if secret_env is not None and checker.string(f"{where}.secret_env", secret_env,
                                                 line("secret_env"), nonempty=True):
        checker.environment_name(f"{where}.secret_env", secret_env, line("secret_env"))
    secret = block.get("secret")
    if secret is not None:
        if not allow_secret:
            checker.problem(line("secret"), f"{where}.secret: a secret is not written in a "
                                            "type or schedule file (they are kept in git and "
                                            "shown to viewers); use secret_env = \"NAME\" (the "
                                            "server's environment) or a [[notify]] in "
                                            "blanket.toml")
        else:
            checker.string(f"{where}.secret", secret, line("secret"), nonempty=True)
        if secret_env is not None:
            checker.problem(line("secret"), f"{where}: set secret or secret_env, not both")
    if (secret is not None or secret_env is not None) and run is not None:
        checker.problem(line("secret") or line("secret_env"),
                        f"{where}: a secret signs a webhook's body; a command has none")
    timeout = checker.duration(f"{where}.timeout", block.get("timeout", DEFAULT_TIMEOUT),
                               line("timeout"), least=0.1)
    if timeout is not None and timeout > MAX_TIMEOUT:
        checker.problem(line("timeout"), f"{where}.timeout: {timeout:g}s is too long; the "
                                         f"most is {MAX_TIMEOUT:g}s")
    if len(checker.problems) > before or on is None or fmt is None or timeout is None:
        return None
    origin = f"{checker.file}:{header}" if header else checker.file
    return NotifyTarget(on=on, url=url, run=run, format=fmt, secret_env=secret_env,
                        secret=secret, timeout=timeout, origin=origin)


def _events(checker: Checker, where: str, value: object, line: Line) -> tuple[str, ...] | None:
    if value is None:
        checker.problem(line, f'{where}: on is missing; say which ends to hear of, like on = '
                              f'["failed", "timedout"] (any of: {", ".join(EVENTS)})')
        return None
    events = checker.string_list(f"{where}.on", value, line)
    if events is None:
        return None
    if not events:
        checker.problem(line, f"{where}.on: is empty; name at least one of: {', '.join(EVENTS)}")
        return None
    wrong = [e for e in events if e not in EVENTS]
    for event in wrong:
        checker.choice(f"{where}.on", event, line, EVENTS)
    return None if wrong else tuple(dict.fromkeys(events))


def _url(checker: Checker, where: str, url: object, line: Line) -> None:
    if not checker.string(where, url, line, nonempty=True, most=MAX_URL):
        return
    assert isinstance(url, str)
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError as exc:
        checker.problem(line, f"{where}: {url!r} is not a URL ({exc})")
        return
    if parts.scheme not in ("http", "https") or not parts.hostname:
        checker.problem(line, f"{where}: {url!r} is not an http(s) URL; write "
                              "https://HOST/PATH")
    elif any(c.isspace() or ord(c) < 32 for c in url):
        checker.problem(line, f"{where}: {url!r} holds spaces or control characters")
