"""Notifications' rules: [[notify]] blocks in type, schedule and settings files (each mistake
with its file:line), which blocks apply to a task's end, the signature, the retry delays,
the stderr tail and giving up after a day."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import time
from dataclasses import replace
from pathlib import Path

import pytest

from blanket.config.notify import NotifyTarget
from blanket.config.problems import ConfigInvalid
from blanket.config.schedule import parse_schedule_text
from blanket.config.settings import load_settings
from blanket.config.tasktype import TaskType
from blanket.config.typefile import parse_type_file
from blanket.errors import InvalidInput
from blanket.models import Delivery, Task, TaskState
from blanket.server.deliveries import Deliveries
from blanket.server.notifyrules import NotifyRules
from blanket.server.notifysend import (
    MAX_RETRY,
    body_bytes,
    retry_delay,
    signature,
    slack_text,
    stderr_tail,
)
from blanket.store.base import Claim, DeliveryTarget, NewTask, Outcome
from blanket.store.sqlite import SQLiteStore
from blanket.wakeups import Wakeups

HOOK = 'url = "https://hooks.example.com/services/T0/B0/secretpath"'


def type_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "types" / "job.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('command = "true"\n' + text)
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigInvalid) as caught:
        parse_type_file(type_file(tmp_path, text))
    return [str(p) for p in caught.value.problems]


# the blocks

def test_a_type_file_reads_its_notify_blocks(tmp_path: Path) -> None:
    path = type_file(tmp_path, f'[[notify]]\non = ["failed", "timedout"]\n{HOOK}\n'
                               'format = "slack"\nsecret_env = "HOOK_KEY"\ntimeout = "5s"\n'
                               '[[notify]]\non = ["success"]\nrun = "notify-send done"\n')
    hook, command = parse_type_file(path).notify
    assert (hook.on, hook.kind, hook.format, hook.secret_env, hook.timeout) == (
        ("failed", "timedout"), "webhook", "slack", "HOOK_KEY", 5.0)
    assert hook.origin == f"{path}:2"
    assert (command.kind, command.run, command.format) == ("command", "notify-send done", "json")


@pytest.mark.parametrize(("text", "wanted"), [
    (f"[[notify]]\n{HOOK}\n", "job.toml:2: notify[0]: on is missing"),
    (f'[[notify]]\non = ["faild"]\n{HOOK}\n',
     "job.toml:3: notify[0].on: 'faild' is not allowed; use one of: failed, timedout, lost"),
    (f'[[notify]]\non = []\n{HOOK}\n', "job.toml:3: notify[0].on: is empty"),
    ('[[notify]]\non = ["failed"]\n', "job.toml:2: notify[0]: set exactly one of url"),
    (f'[[notify]]\non = ["failed"]\n{HOOK}\nrun = "x"\n', "set exactly one of url"),
    ('[[notify]]\non = ["failed"]\nurl = "ftp://host/x"\n',
     "job.toml:4: notify[0].url: 'ftp://host/x' is not an http(s) URL"),
    ('[[notify]]\non = ["failed"]\nurl = "https:///x"\n', "is not an http(s) URL"),
    (f'[[notify]]\non = ["failed"]\n{HOOK}\nsecret = "abc"\n',
     "job.toml:5: notify[0].secret: a secret is not written in a type or schedule file"),
    (f'[[notify]]\non = ["failed"]\n{HOOK}\nsecret_env = "1BAD"\n',
     "notify[0].secret_env: '1BAD' is not a valid variable name"),
    ('[[notify]]\non = ["failed"]\nrun = "x"\nformat = "slack"\n',
     'notify[0].format: "slack" is for a webhook url'),
    (f'[[notify]]\non = ["failed"]\n{HOOK}\nformat = "xml"\n',
     "notify[0].format: 'xml' is not allowed; use one of: json, slack"),
    (f'[[notify]]\non = ["failed"]\n{HOOK}\ntimeout = "1h"\n',
     "notify[0].timeout: 3600s is too long; the most is 300s"),
    (f'[[notify]]\non = ["failed"]\n{HOOK}\nurll = "x"\n',
     "job.toml:5: unknown key 'urll' in notify[0]; did you mean 'url'?"),
    ('notify = "https://x"\n', "job.toml:2: notify: expected [[notify]] blocks"),
])
def test_each_mistake_in_a_block_is_named_where_it_is(tmp_path: Path, text: str,
                                                      wanted: str) -> None:
    found = problems(tmp_path, text)
    assert any(wanted in p for p in found), found


def test_a_schedule_file_reads_its_notify_blocks() -> None:
    schedule = parse_schedule_text(
        f'type = "job"\nevery = "1h"\n[[notify]]\non = ["failed"]\n{HOOK}\n', "nightly",
        "schedules/nightly.toml")
    assert [t.on for t in schedule.notify] == [("failed",)]
    shown = schedule.to_json()["notify"]
    assert shown == [{"on": ["failed"], "target": "https://hooks.example.com/…"}]
    with pytest.raises(ConfigInvalid) as caught:
        parse_schedule_text(f'type = "job"\nevery = "1h"\n[[notify]]\non = ["x"]\n{HOOK}\n',
                            "nightly", "schedules/nightly.toml")
    assert "schedules/nightly.toml:4: notify[0].on: 'x' is not allowed" in str(
        caught.value.problems[0])


def test_blanket_toml_may_hold_a_secret_and_its_mistakes_carry_their_line(
        tmp_path: Path) -> None:
    path = tmp_path / "blanket.toml"
    path.write_text(f'port = 9000\n[[notify]]\non = ["failed"]\n{HOOK}\n'
                    'secret = "shh-its-a-secret"\n')
    (target,) = load_settings(path, environ={}).notify
    assert target.secret == "shh-its-a-secret"
    assert "shh-its-a-secret" not in json.dumps(target.stored())
    path.write_text('[[notify]]\non = ["failed"]\nurl = "file:///etc/passwd"\n')
    with pytest.raises(InvalidInput) as caught:
        load_settings(path, environ={})
    assert f"{path}:3: notify[0].url: 'file:///etc/passwd' is not an http(s) URL" in str(
        caught.value)


def test_a_type_shows_its_targets_without_their_path_and_never_sends_them_to_workers(
        tmp_path: Path) -> None:
    task_type = parse_type_file(type_file(tmp_path, f'[[notify]]\non = ["failed"]\n{HOOK}\n'))
    assert "notify" not in task_type.to_json()
    assert TaskType.from_json(task_type.to_json()).notify == ()
    assert task_type.shown_json()["notify"] == [
        {"on": ["failed"], "target": "https://hooks.example.com/…"}]


def test_a_target_is_known_by_where_and_how_it_sends_not_by_its_events() -> None:
    one = NotifyTarget(on=("failed",), url="https://h/x", origin="a.toml:1")
    assert one.key == NotifyTarget(on=("success",), url="https://h/x", origin="b.toml:9").key
    assert one.key != NotifyTarget(on=("failed",), url="https://h/x", format="slack").key
    assert one.key != NotifyTarget(on=("failed",), url="https://h/x", secret_env="K").key
    assert NotifyTarget(on=("failed",), url="https://h/x", secret="a").key != \
        NotifyTarget(on=("failed",), url="https://h/x", secret="b").key
    assert one.wants("lost") and not NotifyTarget(on=("success",), url="https://h").wants("lost")
    command = NotifyTarget(on=("failed",), run="curl -H 'Authorization: x' https://h")
    assert command.label == "run: curl …"  # its arguments may hold a credential
    assert "shh" not in repr(NotifyTarget(on=("failed",), url="https://h", secret="shh"))


# which blocks apply

class FakeCatalog:
    def __init__(self, schedules: dict, types: dict | None = None) -> None:
        self.schedules = schedules
        self.types = {} if types is None else types
        self.listeners: list = []

    def get(self, name: str):
        return self.types.get(name)

    def schedule(self, name: str):
        return self.schedules.get(name)

    def add_listener(self, listener) -> None:
        self.listeners.append(listener)


class Loaded:
    def __init__(self, schedule=None, task_type=None) -> None:
        self.schedule = schedule
        self.task_type = task_type


def test_an_end_goes_to_its_types_its_schedules_and_the_global_targets_each_once() -> None:
    mine = NotifyTarget(on=("failed",), url="https://types/x")
    shared = NotifyTarget(on=("failed", "success"), url="https://all/x")
    nightly = NotifyTarget(on=("failed",), url="https://nightly/x")
    job = TaskType(name="job", command="true", notify=(mine, shared))
    schedule = parse_schedule_text('type = "job"\nevery = "1h"\n', "nightly", "n.toml")
    types = {"job": Loaded(task_type=job)}
    catalog = FakeCatalog({"nightly": Loaded(replace(schedule, notify=(nightly,)))}, types)
    rules = NotifyRules(catalog, settings_blocks=(  # type: ignore[arg-type]
        NotifyTarget(on=("failed",), url="https://all/x", origin="blanket.toml:3"),))
    keys = [t.key for t in rules.targets("job", "nightly", "failed")]
    assert keys == [mine.key, shared.key, nightly.key]  # the global one is `shared` again
    assert [t.key for t in rules.targets("job", None, "success")] == [shared.key]
    assert [t.key for t in rules.targets("job", None, "lost")] == [mine.key, shared.key]
    assert len(rules.targets("job", None, "failed")) == 2
    assert rules.targets("other", None, "success") == ()
    # a command schedule's runs (type schedule.NAME, never built here) hear its blocks
    assert [t.key for t in rules.targets("schedule.nightly", "nightly", "failed")] == [
        nightly.key, shared.key]
    assert json.loads(rules.targets("job", None, "success")[0].target)["url"] == "https://all/x"
    types["job"] = Loaded(task_type=TaskType(name="job", command="true"))
    assert len(rules.targets("job", None, "failed")) == 2  # cached until the catalog changes
    for listener in catalog.listeners:
        listener()
    assert [t.key for t in rules.targets("job", None, "failed")] == [shared.key]


# the wire

def test_the_signature_is_an_hmac_of_the_timestamp_and_the_exact_body() -> None:
    body = b'{"event":"failed"}'
    expected = hmac.new(b"key", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signature("key", "1700000000", body) == f"sha256={expected}"
    assert signature("key", "1700000001", body) != signature("key", "1700000000", body)


def test_retries_wait_a_second_doubling_to_an_hour_with_a_little_jitter() -> None:
    rng = random.Random(7)
    waits = [retry_delay(n, rng) for n in range(1, 16)]
    bases = [min(MAX_RETRY, 2.0 ** (n - 1)) for n in range(1, 16)]
    assert all(base <= wait <= base * 1.1 for wait, base in zip(waits, bases, strict=True))
    assert retry_delay(10_000, rng) <= MAX_RETRY * 1.1


def test_the_stderr_tail_is_the_last_twenty_lines_of_the_last_4_kib() -> None:
    lines = [f"line {n}" for n in range(100)]
    assert stderr_tail("\n".join(lines).encode()) == "\n".join(lines[-20:])
    long = (b"x" * 5000 + b"\nend")
    assert stderr_tail(long) == "end"  # the line cut by the 4 KiB bound is dropped
    assert stderr_tail(b"") == ""


def delivery(**fields: object) -> Delivery:
    values: dict = {"id": 7, "task_id": 3, "task_type": "job", "event": "failed",
                    "target_key": "k", "target": {"kind": "webhook"}, "state": "pending",
                    "attempts": 1, "created": 0.0, "next_at": 0.0}
    return Delivery(**{**values, **fields})


def test_a_slack_body_holds_text_only_and_a_json_body_the_record() -> None:
    task = Task(id=3, type="job", state=TaskState.FAILED, environment={"K": "v"},
                tags=(), score=0.0, added=0.0, started=10.0, finished=12.5, exit_code=2,
                error="exit code 2", secrets=("K",))
    slack = json.loads(body_bytes({"format": "slack"}, delivery(), task, "boom", "http://s/#/task/3"))
    assert list(slack) == ["text"]
    assert slack["text"].startswith("blanket: task 3 (job) failed, exit code 2, after 2.5s")
    assert "```boom```" in slack["text"] and slack["text"].endswith("http://s/#/task/3")
    plain = json.loads(body_bytes({}, delivery(), task, "boom", None))
    assert plain["task"]["environment"] == {"K": "***"} and plain["delivery"] == 7
    gone = json.loads(body_bytes({}, delivery(), None, "", None))
    assert gone["task"] == {"id": 3, "type": "job", "removed": True}
    assert "```" not in slack_text(delivery(event="success"), task, "fine", None)


# the loop's rules

def ended_with_target(tmp_path: Path, target: dict, finished: float) -> tuple:
    store = SQLiteStore(tmp_path / "blanket.db")
    store.notify_targets = lambda *_: (DeliveryTarget("k", json.dumps(target)),)
    task = store.add_task(NewTask(type="job", environment={}, tags=(), score=0.0, added=0.0))
    taken = store.claim_task(Claim(worker="w", tags=frozenset(), now=finished))
    store.finish_task(task.id, taken.token, Outcome(TaskState.FAILED, 1, "x", finished))
    loop = Deliveries(store, Wakeups(), NotifyRules(FakeCatalog({})),  # type: ignore[arg-type]
                      lambda *_: tmp_path, lambda _id: None, environ={})
    return store, loop, task


def test_a_delivery_still_failing_a_day_after_the_end_is_given_up(tmp_path: Path) -> None:
    closed = {"kind": "webhook", "url": "http://127.0.0.1:9/x", "timeout": 1.0}
    store, loop, task = ended_with_target(tmp_path, closed, time.time() - 86_400 + 0.5)
    assert loop.run_due() == 1
    (shown,) = store.task_deliveries(task.id)
    assert shown.state == "failed" and shown.result.startswith("not sent:")
    assert shown.finished is not None and store.next_delivery_at() is None


def test_a_missing_secret_is_a_failed_attempt_saying_which_variable(tmp_path: Path) -> None:
    target = {"kind": "webhook", "url": "http://127.0.0.1:9/x", "secret_env": "HOOK_KEY"}
    store, loop, task = ended_with_target(tmp_path, target, time.time())
    assert loop.run_due() == 1
    (shown,) = store.task_deliveries(task.id)
    assert shown.state == "pending" and "has no HOOK_KEY (secret_env)" in shown.result
    assert shown.next_at > time.time()


def test_a_command_that_runs_too_long_is_killed_and_retried(tmp_path: Path) -> None:
    target = {"kind": "command", "run": "echo started; sleep 30", "timeout": 0.5}
    store, loop, task = ended_with_target(tmp_path, target, time.time())
    assert loop.run_due() == 1
    (shown,) = store.task_deliveries(task.id)
    assert shown.state == "pending" and shown.result == "timed out after 0.5s: started"


def test_a_delivered_notification_is_settled_and_logged(tmp_path: Path) -> None:
    target = {"kind": "command", "run": "cat > /dev/null; echo ok", "timeout": 5.0}
    store, loop, task = ended_with_target(tmp_path, target, time.time())
    assert loop.run_due() == 1
    (shown,) = store.task_deliveries(task.id)
    assert (shown.state, shown.attempts, shown.result) == ("delivered", 1, "exit 0: ok")
    assert loop.run_due() == 0


def test_the_tail_never_shows_part_of_a_secret_cut_by_where_it_is_read(tmp_path: Path) -> None:
    secret = "S" * 90 + "\n" + "T" * 10  # a key of several lines
    task = Task(id=3, type="job", state=TaskState.FAILED, environment={"K": secret},
                tags=(), score=0.0, added=0.0, secrets=("K",))
    for cut in range(0, 101, 5):  # the secret's place against the 4 KiB bound
        data = b"x" * 100 + secret.encode() + b"\n" + b"y" * (4096 - 1 - cut) + b"\nend"
        (tmp_path / "stderr.log").write_bytes(data)
        loop = Deliveries(SQLiteStore(":memory:"), Wakeups(), NotifyRules(FakeCatalog({})),  # type: ignore[arg-type]
                          lambda *_: tmp_path, lambda _id: None, environ={})
        tail = loop._tail(task)
        assert "TTTTT" not in tail and "SSSSS" not in tail and tail.endswith("end"), cut


def test_a_type_takes_its_bases_notify_blocks_unless_it_writes_its_own(tmp_path: Path) -> None:
    folder = tmp_path / "types"
    folder.mkdir()
    (folder / "base.toml").write_text(f'abstract = true\ncommand = "true"\n[[notify]]\n'
                                      f'on = ["failed"]\n{HOOK}\n')
    (folder / "child.toml").write_text('extends = "base"\n')
    (folder / "own.toml").write_text('extends = "base"\n[[notify]]\non = ["success"]\n'
                                     'run = "true"\n')
    assert [t.on for t in parse_type_file(folder / "child.toml").notify] == [("failed",)]
    assert [t.kind for t in parse_type_file(folder / "own.toml").notify] == ["command"]


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 100,
    # an error answer's body was read after the deadline had let go: 200 reads of one byte
    b"HTTP/1.1 500 Oops\r\nContent-Length: 100\r\n\r\n" + b"x" * 100,
])
def test_a_receiver_answering_a_byte_at_a_time_is_cut_off_at_the_timeout(answer: bytes):
    """urllib's timeout is per read: a receiver dripping its answer must not hold a
    delivery (and its thread) past the target's timeout."""
    import socket
    import threading
    import time

    from blanket.server.notifysend import post

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    stop = threading.Event()

    def drip() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            head, _, rest = answer.partition(b"\r\n\r\n")
            if rest:  # the status and headers at once, then the body a byte at a time
                conn.sendall(head + b"\r\n\r\n")
            for byte in rest or answer:
                if stop.wait(0.1):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    thread = threading.Thread(target=drip, daemon=True)
    thread.start()
    began = time.monotonic()
    sent = post(f"http://127.0.0.1:{server.getsockname()[1]}/", b"{}", {}, timeout=1.0)
    took = time.monotonic() - began
    stop.set()
    server.close()
    assert not sent.ok and ("timed out after 1s" in sent.result  # what came by then
                            or sent.result.startswith("HTTP 500: x")), sent.result
    assert took < 3.0, took


def test_a_command_does_not_get_the_servers_own_settings(monkeypatch, tmp_path):
    from blanket.models import Delivery
    from blanket.server.notifysend import run_command

    monkeypatch.setenv("BLANKET_DATABASE", "postgresql://u:hunter2@db/blanket")
    monkeypatch.setenv("SOMETHING_ELSE", "kept")
    delivery = Delivery(id=1, task_id=7, task_type="t", event="failed", target_key="k",
                        target={}, state="pending", attempts=1, created=0.0, next_at=0.0)
    sent = run_command('echo "db=${BLANKET_DATABASE:-none} other=$SOMETHING_ELSE '
                       'task=$BLANKET_TASK_ID"', b"{}", delivery, None, 10)
    assert sent.ok and "db=none other=kept task=7" in sent.result


def test_a_tasks_error_holding_a_nul_reaches_a_command_without_it():
    """A worker's error text may hold a NUL, which no environment variable can: the
    command ran not at all (ValueError), and its delivery failed every time."""
    from blanket.models import Delivery, Task, TaskState
    from blanket.server.notifysend import run_command

    delivery = Delivery(id=1, task_id=7, task_type="t", event="failed", target_key="k",
                        target={}, state="pending", attempts=1, created=0.0, next_at=0.0)
    task = Task(id=7, type="t", state=TaskState.FAILED, environment={}, tags=(), score=1.0,
                added=0.0, error="bad\x00news")
    sent = run_command('echo "error=$BLANKET_TASK_ERROR"', b"{}", delivery, task, 10)
    assert sent.ok and "error=badnews" in sent.result


def test_a_command_whose_own_child_keeps_its_output_open_does_not_hold_the_sender(
        monkeypatch):
    """After a timeout the command's process group is killed; a process it started in a
    session of its own keeps the output pipe open, and collecting the output waited for it
    without end."""
    import time

    from blanket.models import Delivery
    from blanket.server.notifysend import run_command

    monkeypatch.setattr("blanket.server.notifysend.KILLED_GRACE", 0.2)
    delivery = Delivery(id=1, task_id=7, task_type="t", event="failed", target_key="k",
                        target={}, state="pending", attempts=1, created=0.0, next_at=0.0)
    began = time.monotonic()
    sent = run_command("echo started; setsid sleep 20 & sleep 10", b"{}", delivery, None, 0.5)
    assert not sent.ok and "timed out after 0.5s" in sent.result
    assert time.monotonic() - began < 5
