"""One notification on the wire: its body (JSON, or Slack's `{"text"}`), its signature, a
webhook POST and a command run by the server. No state: the delivery loop
(`server/deliveries.py`) decides when to send and what an answer means.

A signed webhook carries

    Blanket-Delivery: ID           the same on every retry of one notification (idempotency)
    Blanket-Event: failed
    Blanket-Timestamp: UNIX-SECONDS
    Blanket-Signature: sha256=HEX  HMAC-SHA256(secret, "TIMESTAMP." + body bytes)

so a receiver checks the MAC over the exact bytes it got and refuses an old timestamp
(replays), as with Stripe's and GitHub's webhooks.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from blanket.models import Delivery, Task
from blanket.server import cpus

TAIL_BYTES = 4096
TAIL_LINES = 20
KILLED_GRACE = 5.0  # seconds to collect a killed command's output
RESULT_CHARS = 500  # what a delivery keeps of an answer or a command's output
FIRST_RETRY = 1.0  # seconds; doubled at each attempt ...
MAX_RETRY = 3600.0  # ... up to an hour
GIVE_UP_AFTER = 86400.0  # a day after the task ended
USER_AGENT = "blanket-notify"


@dataclass(frozen=True)
class Sent:
    """How one attempt went: `ok` (2xx, or a command's exit 0) and what to keep of it."""

    ok: bool
    result: str


def retry_delay(attempts: int, rng: random.Random | None = None) -> float:
    """The wait before the next attempt after `attempts` failed ones: 1 s doubled each time,
    at most an hour, plus up to a tenth more at random so that receivers coming back are
    not met by every sender at once."""
    base = min(MAX_RETRY, FIRST_RETRY * 2 ** max(0, min(attempts - 1, 32)))
    return base * (1 + 0.1 * (rng or random).random())


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The Blanket-Signature header's value for `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def stderr_tail(data: bytes) -> str:
    """The end of a log, as a notification quotes it: at most the last TAIL_BYTES bytes
    and TAIL_LINES lines, a cut line dropped."""
    cut = len(data) > TAIL_BYTES
    data = data[-TAIL_BYTES:]
    if cut and b"\n" in data:
        data = data.split(b"\n", 1)[1]
    lines = data.decode("utf-8", "replace").splitlines()
    return "\n".join(lines[-TAIL_LINES:])


def body_json(delivery: Delivery, task: Task | None, tail: str, link: str | None) -> dict:
    """The JSON body: the event, the task's record (secret values `***`, as viewers see it),
    the tail of its error log and a link to its page."""
    record = task.to_json() if task is not None else {
        "id": delivery.task_id, "type": delivery.task_type, "removed": True}
    return {"event": delivery.event, "delivery": delivery.id, "task": record,
            "stderr_tail": tail, "url": link}


def slack_text(delivery: Delivery, task: Task | None, tail: str, link: str | None) -> str:
    """A line or two for a chat: what ended how, why, and where to look."""
    name = f"task {delivery.task_id} ({delivery.task_type})"
    head = f"blanket: {name} {delivery.event}"
    if task is not None:
        if task.exit_code is not None:
            head += f", exit code {task.exit_code}"
        if task.started is not None and task.finished is not None:
            head += f", after {task.finished - task.started:.1f}s"
        if task.error:
            head += f": {task.error[:300]}"
    parts = [head]
    if tail and delivery.event != "success":
        parts.append("```" + tail[-1500:].replace("```", "'''") + "```")
    if link:
        parts.append(link)
    return "\n".join(parts)


def body_bytes(target: dict, delivery: Delivery, task: Task | None, tail: str,
               link: str | None) -> bytes:
    data: dict[str, Any]
    if target.get("format") == "slack":
        data = {"text": slack_text(delivery, task, tail, link)}
    else:
        data = body_json(delivery, task, tail, link)
    return json.dumps(data, separators=(",", ":")).encode()


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A webhook is sent where its config says, never where an answer points."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None




def post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> Sent:
    """POST `body` to `url`; ok on a 2xx answer (a redirect is not followed: not ok). The
    whole exchange takes `timeout` at most: a receiver that answers a byte at a time (each
    read within the socket's timeout) has its connection closed when the time is up."""
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": USER_AGENT, **headers})
    deadline = _Deadline(timeout)
    try:
        with deadline:  # an error answer's body is read within it too
            try:
                with _OPENER.open(request, timeout=timeout) as answer:
                    answer.read(RESULT_CHARS)
                    return Sent(200 <= answer.status < 300, f"HTTP {answer.status}")
            except urllib.error.HTTPError as e:
                text = e.read(200).decode("utf-8", "replace") if e.fp is not None else ""
                return Sent(False, _short(f"HTTP {e.code}: {text}".rstrip(": ")))
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as e:
        if deadline.passed:
            return Sent(False, f"timed out after {timeout:g}s")
        reason = getattr(e, "reason", e)
        return Sent(False, _short(f"not sent: {reason}"))


class _Deadline:
    """Closes the sockets opened by this thread's request once `seconds` have passed, so
    that no read outlives it (urllib's timeout applies to each read alone)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.passed = False
        self._timer: threading.Timer | None = None
        self._sockets: list[socket.socket] = []

    def __enter__(self) -> _Deadline:
        _OPENED.sockets = self._sockets
        self._timer = threading.Timer(self.seconds, self._expire)
        self._timer.daemon = True
        self._timer.start()
        return self

    def _expire(self) -> None:
        self.passed = True
        for sock in list(self._sockets):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def __exit__(self, *exc: object) -> None:
        if self._timer is not None:
            self._timer.cancel()
        _OPENED.sockets = None


_OPENED = threading.local()  # the sockets the current thread's request opened


def _track(sock: socket.socket | None) -> None:
    opened = getattr(_OPENED, "sockets", None)
    if opened is not None and sock is not None:
        opened.append(sock)


class _TrackedHTTPConnection(http.client.HTTPConnection):
    def connect(self) -> None:
        super().connect()
        _track(self.sock)


class _TrackedHTTPSConnection(http.client.HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        _track(self.sock)


class _HTTP(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> Any:
        return self.do_open(_TrackedHTTPConnection, req)


class _HTTPS(urllib.request.HTTPSHandler):
    def https_open(self, req: urllib.request.Request) -> Any:
        options: dict[str, Any] = {"context": self._context}  # type: ignore[attr-defined]
        if hasattr(self, "_check_hostname"):  # Python 3.11
            options["check_hostname"] = self._check_hostname
        return self.do_open(_TrackedHTTPSConnection, req, **options)


_OPENER = urllib.request.build_opener(_NoRedirects, _HTTP, _HTTPS)


def webhook_headers(delivery: Delivery, body: bytes, secret: str | None,
                    now: float) -> dict[str, str]:
    headers = {"Blanket-Delivery": str(delivery.id), "Blanket-Event": delivery.event}
    if secret is not None:
        timestamp = str(int(now))
        headers["Blanket-Timestamp"] = timestamp
        headers["Blanket-Signature"] = signature(secret, timestamp, body)
    return headers


def run_command(command: str, body: bytes, delivery: Delivery, task: Task | None,
                timeout: float) -> Sent:
    """Run `command` with `sh -c` (in its own process group, ended on timeout), the JSON
    body on its standard input and BLANKET_* variables naming the task; ok on exit 0."""
    # The server's environment, less its own settings (BLANKET_DATABASE may hold the
    # database's password): the command is config, not the server.
    env = {k: v for k, v in os.environ.items() if not k.startswith("BLANKET_")}
    env.update({"BLANKET_TASK_ID": str(delivery.task_id), "BLANKET_TASK_TYPE": delivery.task_type,
                "BLANKET_EVENT": delivery.event, "BLANKET_DELIVERY_ID": str(delivery.id)})
    if task is not None:
        env["BLANKET_TASK_STATE"] = task.state.value
        if task.exit_code is not None:
            env["BLANKET_TASK_EXIT_CODE"] = str(task.exit_code)
        if task.error:
            env["BLANKET_TASK_ERROR"] = task.error[:1000].replace("\x00", "")  # no NUL in env
    with cpus.unconfined():  # not confined with the server (server_cpus)
        process = subprocess.Popen(["/bin/sh", "-c", command], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
    try:
        output, _ = process.communicate(body, timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        try:  # a process it started in a session of its own may still hold the output open
            output, _ = process.communicate(timeout=KILLED_GRACE)
        except subprocess.TimeoutExpired:
            output = b""
            if process.stdout is not None:
                process.stdout.close()
            process.wait()
        return Sent(False, _short(f"timed out after {timeout:g}s: " + _decoded(output)))
    text = _decoded(output)
    if process.returncode == 0:
        return Sent(True, _short(f"exit 0: {text}".rstrip(": ")))
    return Sent(False, _short(f"exit {process.returncode}: {text}".rstrip(": ")))


def _decoded(output: bytes | None) -> str:
    return (output or b"")[-RESULT_CHARS:].decode("utf-8", "replace").strip()


def _short(text: str) -> str:
    return text if len(text) <= RESULT_CHARS else text[:RESULT_CHARS - 1] + "…"
