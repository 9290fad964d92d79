"""The `blanket` command. Client commands talk to the server over HTTP: --server URL, else
BLANKET_SERVER, else the settings (http://127.0.0.1:8773)."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote, urlencode

import click

from blanket import completion
from blanket.auth import client_token
from blanket.client import Client, ClientError
from blanket.config.settings import LogDestination, Settings, load_settings
from blanket.errors import BlanketError, InvalidInput
from blanket.jsontext import is_utf8, parse_json
from blanket.logs import configure_logging
from blanket.models import AFTER_POLICIES, TaskState
from blanket.server.intake import REQUEST_KEYS
from blanket.taskwait import (
    ENDED,
    Progress,
    WaitOption,
    show_failure,
    wait_for,
    wait_limit,
)
from blanket.terminal import exit_code_of, print_table, state_text
from blanket.tls import certificate_fingerprint, local_tls_files
from blanket.undumpable import keep_private
from blanket.workflowcli import workflow

SERVER_HELP = ("server URL: http(s)://HOST:PORT or unix:/PATH (default: BLANKET_SERVER, else the "
               "settings, else http://127.0.0.1:8773)")
CA_HELP = "PEM certificate(s) to trust an https server's certificate with (or BLANKET_CA)"
FINGERPRINT_HELP = ("trust exactly the https server certificate with this SHA-256 fingerprint "
                    "(or BLANKET_FINGERPRINT); `blanket server` prints it")


class TaskId(click.ParamType):
    """A task id as the server takes it: a whole number (kept as its text). An empty or
    other word would name another route (`inspect ''` asked for the task list)."""

    name = "ID"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> str:
        text = str(value).strip()
        if not (text.isascii() and text.isdigit()) or len(text) > 18:
            self.fail(f"{value!r} is not a task id; ids are whole numbers such as 42",
                      param, ctx)
        return text


TASK_ID = TaskId()


def task_ids_of(words: tuple[str, ...]) -> tuple[str, ...]:
    """`words` checked as task ids (for arguments that may also hold other words)."""
    return tuple(TASK_ID.convert(word, None, None) for word in words)


class Context:
    def __init__(self, settings_path: Path | None, server: str | None, verbosity: int,
                 token: str | None = None, ca: str | None = None,
                 fingerprint: str | None = None):
        self.settings_path = settings_path
        self.server = server
        self.verbosity = verbosity
        self.token = token
        self.ca = ca
        self.fingerprint = fingerprint

    def settings(self, **overrides: Any) -> Settings:
        return load_settings(self.settings_path, overrides)

    def credentials(self, url: str, *data_dirs: Path) -> str | None:
        """--token, else BLANKET_TOKEN, else the admin token of the local server at `url`."""
        return client_token(self.token, (*data_dirs, self.settings().data_dir), url)

    def client(self, server: str | None = None) -> Client:
        url = server or self.server or self.settings().url
        return Client(url, timeout=24 * 3600, token=self.credentials(url), **self.trust(url))

    def trust(self, url: str) -> dict[str, str | None]:
        """--ca/--fingerprint; else, for the https server of this machine's settings, the
        certificate it serves (as a local admin token is found in its data dir)."""
        if self.ca or self.fingerprint:
            return {"ca": self.ca, "fingerprint": self.fingerprint}
        settings = self.settings()
        if url.startswith("https:") and url == settings.url:
            with contextlib.suppress(BlanketError):
                files = local_tls_files(settings)
                if files is not None:
                    return {"fingerprint": certificate_fingerprint(files[0])}
        return {}


pass_ctx = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--settings", "settings_path", type=click.Path(path_type=Path),
              help="settings file (default: ./blanket.toml, or BLANKET_SETTINGS)")
@click.option("--server", envvar="BLANKET_SERVER", help=SERVER_HELP)
@click.option("--token", envvar="BLANKET_TOKEN",
              help="API token (default: BLANKET_TOKEN, else the admin token of a server "
                   "whose data dir is on this machine)")
@click.option("--ca", envvar="BLANKET_CA", help=CA_HELP)
@click.option("--fingerprint", envvar="BLANKET_FINGERPRINT", help=FINGERPRINT_HELP)
@click.option("-v", "--verbose", count=True, help="more log output (repeat for more)")
@click.option("-q", "--quiet", count=True, help="less log output")
@click.version_option(package_name="blanket")
@click.pass_context
def cli(ctx: click.Context, settings_path: Path | None, server: str | None,
        token: str | None, ca: str | None, fingerprint: str | None, verbose: int,
        quiet: int) -> None:
    """blanket: task types as TOML files, a durable priority queue, workers over HTTP."""
    ctx.obj = Context(settings_path, server, verbose - quiet, token, ca, fingerprint)


@cli.command()
@click.option("--host", help="address to bind (default 127.0.0.1)")
@click.option("--port", type=int, help="port (default 8773)")
@click.option("--config-dir", type=click.Path(path_type=Path), help="config directory")
@click.option("--data-dir", type=click.Path(path_type=Path), help="data directory")
@click.option("--inbox-dir", type=click.Path(path_type=Path), help="inbox directory")
@click.option("--database", help="sqlite:///PATH (default) or postgresql://...")
@click.option("--workers", type=int,
              help="tasks the server's own worker process runs at once (its slots)")
@click.option("--worker-tags", help="tags of the local workers, comma separated")
@click.option("--listen", multiple=True,
              help="HOST:PORT or unix:/PATH/blanket.sock instead of --host/--port; repeat for "
                   "both")
@click.option("--tls", type=click.Choice(["self-signed"]),
              help="serve HTTPS with a certificate made in the data dir on first use")
@click.option("--tls-cert", type=click.Path(path_type=Path),
              help="serve HTTPS with this PEM certificate (chain)")
@click.option("--tls-key", type=click.Path(path_type=Path), help="the PEM key of --tls-cert")
@click.option("--insecure", is_flag=True,
              help="allow plain HTTP on an address other than loopback")
@pass_ctx
def server(ctx: Context, **flags: Any) -> None:
    """Run the server (API, config watcher, scheduler, inbox, local workers)."""
    from blanket.server.serve import run_server

    keep_private()  # its environment (a database password) is no task's to read

    flags["listen"] = flags["listen"] or None  # unset flags leave the settings as they are
    flags["insecure"] = flags["insecure"] or None
    settings = ctx.settings(**flags)
    destinations = with_log_file(settings.log)
    # Before a log file's folder is made in it: a data dir made on the way would be
    # readable by others (it holds the store and the admin token).
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if destinations != settings.log:
        (settings.data_dir / SERVER_LOG).parent.mkdir(mode=0o700, exist_ok=True)
    configure_logging(destinations, ctx.verbosity, settings.data_dir)
    run_server(settings)


SERVER_LOG = "log/blanket.log"  # in the data dir


def with_log_file(destinations: tuple[LogDestination, ...]) -> tuple[LogDestination, ...]:
    """The server's log destinations: as configured, plus JSON lines in the data dir's
    log/blanket.log (rotated) when none of them is a file, so the log outlives the
    terminal. Its level is the console's."""
    if any(d.destination not in ("stderr", "stdout") for d in destinations):
        return destinations
    level = destinations[0].level if destinations else "info"
    return (*destinations, LogDestination(destination=SERVER_LOG, level=level, format="json"))


@cli.command()
@click.option("-t", "--tags", default="", help="capabilities, comma separated")
@click.option("-n", "--slots", type=click.IntRange(1, 256), default=1, show_default=True,
              help="tasks run at once, by one process (each slot shows as a worker: ID-1...)")
@click.option("--processes", type=click.IntRange(1, 256), default=1, show_default=True,
              help="worker processes, each with its slots, supervised and restarted if they "
                   "crash")
@click.option("--restart", is_flag=True,
              help="restart the worker process if it crashes (a supervisor runs it; implied by "
                   "--processes above 1)")
@click.option("--id", "worker_id", help="worker id; with several slots each is ID-1 ... ID-N "
              "(default: HOST-PID-random; HOST-PID-N for slots)")
@click.option("--data-dir", type=click.Path(path_type=Path), default=Path("var"),
              show_default=True, help="where task directories and the bundle cache go")
@click.option("--daemon", is_flag=True, help="detach; log to --log-file, pid to --pid-file")
@click.option("--log-file", type=click.Path(path_type=Path), default=Path("var/log/worker.log"),
              show_default=True)
@click.option("--pid-file", type=click.Path(path_type=Path), default=Path("var/worker.pid"),
              show_default=True)
@click.option("--server", "server_url", envvar="BLANKET_SERVER", help=SERVER_HELP)
@click.option("--ca", envvar="BLANKET_CA", help=CA_HELP)
@click.option("--fingerprint", envvar="BLANKET_FINGERPRINT", help=FINGERPRINT_HELP)
@click.option("--grace", type=float, default=None,
              help="seconds a running task may take to finish on SIGTERM before it is handed "
                   "back (default 30)")
@pass_ctx
def worker(ctx: Context, tags: str, slots: int, processes: int, restart: bool,
           worker_id: str | None,
           data_dir: Path, daemon: bool, log_file: Path, pid_file: Path, server_url: str | None,
           ca: str | None, fingerprint: str | None, grace: float | None) -> None:
    """Run worker processes that take tasks matching their tags."""
    from blanket.worker.loop import WorkerOptions, run_workers

    keep_private()  # its token (in its environment) is no task's to read

    url = server_url or ctx.server or ctx.settings().url
    ctx.ca, ctx.fingerprint = ca or ctx.ca, fingerprint or ctx.fingerprint
    extra = {"grace": grace} if grace is not None else {}
    options = WorkerOptions(
        server=url, tags=tuple(t.strip() for t in tags.split(",") if t.strip()),
        processes=processes, slots=slots, restart=restart, worker_id=worker_id,
        data_dir=data_dir,
        daemon=daemon, log_file=log_file, pid_file=pid_file, verbosity=ctx.verbosity,
        token=ctx.credentials(url, data_dir), **ctx.trust(url), **extra)
    run_workers(options)


@cli.command()
@click.argument("directory", type=click.Path(path_type=Path), default=None, required=False)
@pass_ctx
def validate(ctx: Context, directory: Path | None) -> None:
    """Check a config directory without a server; exit 1 listing every problem."""
    from blanket.config.schedule import parse_schedule_file
    from blanket.server.catalog import validate_config_dir

    directory = directory or ctx.settings().config_dir
    problems = validate_config_dir(directory, schedule_parser=parse_schedule_file)
    for problem in problems:
        click.echo(str(problem), err=True)
    if problems:
        click.echo(f"{len(problems)} problem(s) in {directory}", err=True)
        sys.exit(1)
    click.echo(f"{directory}: ok")


def _read_data(data: str | None) -> dict:
    if data is None:
        return {}
    try:
        text = Path(data[1:]).read_bytes() if data.startswith("@") else data
    except OSError as e:
        raise click.BadParameter(f"cannot read {data[1:]}: {e.strerror}",
                                 param_hint="-d") from None
    try:
        value = parse_json(text, "the data")
    except InvalidInput as e:
        raise click.BadParameter(e.message, param_hint="-d") from None
    if not isinstance(value, dict):
        raise click.BadParameter("give a JSON object", param_hint="-d")
    return value


@cli.command(cls=WaitOption)
@click.argument("type_name", metavar="TYPE", required=False,
                shell_complete=completion.type_names)
@click.option("--from", "from_file", type=click.File("rb"),
              help="many tasks at once: a JSON array or NDJSON (one task object a line), "
                   "- for standard input; stored together or not at all")
@click.option("-d", "--data", help="JSON (or @FILE) with environment, tags, not_before, ...")
@click.option("-e", "--env", "env", multiple=True, help="NAME=VALUE (repeatable)")
@click.option("-f", "--file", "files", multiple=True, type=click.Path(exists=True,
              dir_okay=False, path_type=Path), help="a file for the task's directory")
@click.option("--not-before", help="earliest start: ISO 8601 with offset, or +2h")
@click.option("--timeout", "task_timeout", metavar="DURATION",
              help="this task's timeout (90s, 5m, 2h), within its type's max_timeout")
@click.option("--retries", type=click.IntRange(0, 1000),
              help="this task's retries, within its type's max_retries")
@click.option("--retry-delay", metavar="DURATION", help="time between this task's attempts")
@click.option("--after", metavar="IDS", help="task ids (12,13) to wait for: it runs once they "
              "all succeeded, else ends SKIPPED")
@click.option("--after-policy", type=click.Choice(AFTER_POLICIES),
              help="always: run once they all ended, whatever their state")
@click.option("--wait", metavar="[SECONDS]",
              help="wait until the task ends (at most SECONDS: --wait=30, --wait 5m), showing "
                   "its progress; exit with its exit code (124 timed out, 125 still running)")
@click.option("--json", "as_json", is_flag=True, help="print the task as JSON")
@pass_ctx
def submit(ctx: Context, type_name: str | None, from_file: BinaryIO | None, data: str | None,
           env: tuple[str, ...], files: tuple[Path, ...], not_before: str | None,
           task_timeout: str | None, retries: int | None, retry_delay: str | None,
           after: str | None, after_policy: str | None, wait: str | None,
           as_json: bool) -> None:
    """Queue a task of TYPE, or the tasks of a file (--from)."""
    if from_file is not None:
        if type_name or data or env or files or not_before or wait or task_timeout or \
                retries is not None or retry_delay or after or after_policy:
            raise click.UsageError("--from takes its tasks from the file alone: give no TYPE, "
                                   "-d, -e, -f, --not-before, --timeout, --retries, "
                                   "--retry-delay, --after or --wait with it")
        _submit_file(ctx, from_file, as_json)
        return
    if not type_name:
        raise click.UsageError("name the TYPE of task to submit (or give --from FILE)")
    payload = _read_data(data)
    if payload and not set(payload) & set(REQUEST_KEYS):  # -d '{"N": 3}': just the environment
        payload = {"environment": payload}
    payload["type"] = type_name
    environment = dict(payload.get("environment") or {})
    for item in env:
        name, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r}: write NAME=VALUE", param_hint="-e")
        environment[name] = value
    if environment:
        payload["environment"] = environment
    if not_before:
        payload["not_before"] = not_before
    for key, value in (("timeout", task_timeout), ("retries", retries),
                       ("retry_delay", retry_delay), ("after", after),
                       ("after_policy", after_policy)):
        if value is not None:
            payload[key] = value
    limit = wait_limit(wait)
    client = ctx.client()
    if files:
        # Files go as parts named `file` (the server names each by its file name), so a
        # file may be called `data` too.
        fields: list[tuple[str, Any]] = [("data", json.dumps(payload))]
        names: set[str] = set()
        for f in files:
            fields.append(("file", (_upload_name(f, names), f.read_bytes())))
        task = client.request("POST", "/task/", fields=fields)[1]
    else:
        task = client.post("/task/", payload)
    _show_and_wait(ctx, client, task, wait is not None, limit, as_json)


def _upload_name(path: Path, names: set[str]) -> str:
    """The name `path` lands under in the task's directory, checked (UTF-8, as the server's
    names are text, and not given twice) and added to `names`."""
    name = path.name
    if not is_utf8(name):
        shown = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise click.BadParameter(f"the file name '{shown}' is not UTF-8; rename the file",
                                 param_hint="-f")
    if name in names:
        raise click.BadParameter(f"two files are called {name!r}; they would land on the "
                                 "same name in the task's directory: rename one",
                                 param_hint="-f")
    names.add(name)
    return name


def _show_and_wait(ctx: Context, client: Client, task: dict, wait: bool, limit: float | None,
                   as_json: bool) -> None:
    """Print a new task's id (or, with --json, the task once waited for); with `wait`, follow
    it to its end and exit with its exit code."""
    if not as_json:
        click.echo(task["id"])
        sys.stdout.flush()
    if not wait:
        if as_json:
            click.echo(json.dumps(task, indent=2))
        return
    progress = Progress(quiet=ctx.verbosity < 0)
    task = wait_for(client, task, limit, progress)
    progress.done(task)
    if as_json:
        click.echo(json.dumps(task, indent=2))
    show_failure(client, task)
    sys.exit(exit_code_of(task))


def _submit_file(ctx: Context, source: BinaryIO, as_json: bool) -> None:
    """POST the file's tasks in one request; print their ids, one a line."""
    raw = source.read()
    head = raw.lstrip(b" \t\r\n\xef\xbb\xbf")[:1]
    kind = "application/json" if head == b"[" else "application/x-ndjson"
    client = ctx.client()
    try:
        _, answer_raw = client.send("POST", "/task/", raw, content_type=kind)
    except ClientError as e:
        for item in e.items:
            click.echo(f"task {item.get('index')}: {item.get('message')}", err=True)
        raise
    answer = json.loads(answer_raw)
    if as_json:
        click.echo(json.dumps(answer, indent=2))
    else:
        click.echo("\n".join(str(task["id"]) for task in answer["tasks"]))


@cli.group()
def task() -> None:
    """Task commands (task run is submit)."""


task.add_command(submit, "run")


@task.command(name="stop")
@click.argument("words", nargs=-1, required=True, metavar="[TYPE] ID...")
@pass_ctx
def task_stop(ctx: Context, words: tuple[str, ...]) -> None:
    """Stop tasks (the seed's spelling, `task stop TYPE ID`: the type, if given, is checked)."""
    type_name = words[0] if not words[0].strip().isdigit() else None
    ids = task_ids_of(words[1:] if type_name else words)
    if not ids:
        raise click.UsageError("name the task: blanket task stop [TYPE] ID")
    client = ctx.client()
    for task_id in ids:
        if type_name is not None:
            found = client.get(f"/task/{quote(task_id, safe='')}")
            if found["type"] != type_name:
                raise click.UsageError(f"task {task_id} is of type {found['type']!r}, "
                                       f"not {type_name!r}")
        stopped = client.post(f"/task/{quote(task_id, safe='')}/stop")
        click.echo(f"{stopped['id']} {stopped['state']}")


def printed_plainly(entries: list[dict], as_json: bool, quiet: bool, key: str) -> bool:
    """Print a listing as JSON (--json) or one `key` a line (-q); False when neither was
    asked for and the caller prints its table."""
    if as_json:
        click.echo(json.dumps(entries, indent=2))
    elif quiet:
        for entry in entries:
            click.echo(entry[key])
    return as_json or quiet


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    moment = datetime.fromtimestamp(ts)
    if abs(time.time() - ts) < 86400:
        return moment.strftime("%H:%M:%S")
    return moment.strftime("%Y-%m-%d %H:%M")


@cli.command()
@click.option("-a", "--all", "show_all", is_flag=True, help="include ended tasks")
@click.option("-q", "--quiet", is_flag=True, help="ids only")
@click.option("-s", "--state", multiple=True, help="only these states")
@click.option("-t", "--type", "types", multiple=True, help="only these types")
@click.option("-n", "--limit", default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print the tasks as JSON")
@pass_ctx
def ps(ctx: Context, show_all: bool, quiet: bool, state: tuple[str, ...],
       types: tuple[str, ...], limit: int, as_json: bool) -> None:
    """List tasks, newest first (queued and running unless -a)."""
    states = list(state) or ([] if show_all else ["WAITING", "QUEUED", "CLAIMED", "RUNNING"])
    query = f"?limit={limit}"
    if states:
        query += "&state=" + ",".join(states)
    if types:
        query += "&type=" + ",".join(types)
    tasks = ctx.client().get("/task/" + query)
    if printed_plainly(tasks, as_json, quiet, "id"):
        return
    rows = []
    for t in tasks:
        progress = f"{t['progress']}%" if t.get("progress") is not None else ""
        start = _when(t["not_before"]) if t["state"] == "QUEUED" and t.get("not_before") else ""
        rows.append([str(t["id"]), t["type"], t["state"], _when(t["added"]),
                     start or _when(t.get("started")), _when(t.get("finished")),
                     str(t["exit_code"]) if t.get("exit_code") is not None else "",
                     progress, t.get("worker") or "", t.get("submitted_by") or "",
                     _waiting(t)])
    # START: when a queued task may start (its not_before), else when it started. NOTE: why
    # a queued task waits, when it is not just for a free worker.
    print_table(["ID", "TYPE", "STATE", "ADDED", "START", "FINISHED", "EXIT", "PROGRESS",
                 "WORKER", "BY", "NOTE"], rows, flexible=(1, 8, 9, 10), state_column=2,
                droppable=(9, 3, 7, 8, 5))


def _waiting(task: dict) -> str:
    waiting = task.get("waiting") or {}
    code = waiting.get("code")
    if code == "no_worker":
        return "no worker has tags " + (",".join(task.get("tags") or []) or "(none)")
    return {"paused": "its workers are paused", "max_concurrent": "type at max_concurrent",
            "not_before": "not before its start",
            "type_broken": "its type's file is broken"}.get(code or "", "")


@cli.group()
def token() -> None:
    """API tokens: create, list, revoke (admins only)."""


@token.command("create")
@click.argument("name")
@click.option("--role", required=True,
              type=click.Choice(["viewer", "submitter", "operator", "admin", "worker"]),
              help="viewer reads; submitter also submits and changes its own tasks; operator "
                   "changes any task, schedules and workers; admin also tokens; worker runs "
                   "tasks")
@click.option("--types", help="task types it may submit (globs, comma separated; default all)")
@click.option("--tags", help="for workers: tags it may take tasks for (globs; default all)")
@click.option("--expires", help="lifetime, e.g. 30d or 12h (default: never)")
@pass_ctx
def token_create(ctx: Context, name: str, role: str, types: str | None, tags: str | None,
                 expires: str | None) -> None:
    """Create a token; its secret is printed once and kept nowhere."""
    body: dict[str, Any] = {"name": name, "role": role}
    for key, value in (("types", types), ("tags", tags)):
        if value:
            body[key] = [v.strip() for v in value.split(",") if v.strip()]
    if expires:
        body["expires"] = expires
    created = ctx.client().post("/token/", body)
    click.echo(created["token"])
    click.echo(f"token {created['name']!r} ({created['role']}) created; the line above is its "
               "secret, shown only now", err=True)


@token.command("ls")
@click.option("-a", "--all", "show_all", is_flag=True, help="include revoked tokens")
@click.option("-q", "--quiet", is_flag=True, help="names only")
@click.option("--json", "as_json", is_flag=True, help="print them as JSON")
@pass_ctx
def token_ls(ctx: Context, show_all: bool, quiet: bool, as_json: bool) -> None:
    """List tokens (never their secrets)."""
    tokens = [t for t in ctx.client().get("/token/") if show_all or not t["revoked"]]
    if printed_plainly(tokens, as_json, quiet, "name"):
        return
    rows = [[t["name"], t["role"], ",".join(t["types"]) or "*", ",".join(t["tags"]) or "*",
             _when(t["created"]), _when(t["expires"]) if t["expires"] else "never",
             "revoked" if t["revoked"] else "live"] for t in tokens]
    print_table(["NAME", "ROLE", "TYPES", "TAGS", "CREATED", "EXPIRES", "STATE"], rows,
                flexible=(0, 2, 3))


@token.command("revoke")
@click.argument("names", nargs=-1, required=True)
@pass_ctx
def token_revoke(ctx: Context, names: tuple[str, ...]) -> None:
    """Revoke tokens by name; they stop working at once."""
    client = ctx.client()
    for name in names:
        client.delete(f"/token/{quote(name, safe='')}")
        click.echo(f"revoked {name}")


@cli.command()
@click.option("--dry-run", is_flag=True, help="say what would go, and remove nothing")
@click.option("--older-than", metavar="DURATION",
              help="every ended task that ended longer ago than this (30d), whatever the rules")
@click.option("--type", "type_name", shell_complete=completion.type_names,
              help="tasks of this type only")
@click.option("--json", "as_json", is_flag=True, help="print the answer as JSON")
@pass_ctx
def prune(ctx: Context, dry_run: bool, older_than: str | None, type_name: str | None,
          as_json: bool) -> None:
    """Remove ended tasks as the retention rules say (keep_finished, keep_failed,
    keep_per_type; keep, keep_failed, keep_last in type and schedule files), their folders,
    and the versions no kept task uses."""
    query = urlencode({k: v for k, v in (("dry_run", "1" if dry_run else None),
                                         ("older_than", older_than), ("type", type_name))
                       if v is not None})
    report = ctx.client().post(f"/prune{'?' + query if query else ''}", timeout=3600)
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    verb = "would remove" if dry_run else "removed"
    for name, found in report["types"].items():
        size = f", {_bytes(found['bytes'])}" if found["bytes"] is not None else ""
        more = " ..." if found["more_ids"] else ""
        click.echo(f"{name}: {found['tasks']} task(s){size}: "
                   f"{' '.join(map(str, found['ids']))}{more}")
    for version in report["versions"]:
        click.echo(f"version {version['version'][:12]} of {version['type']} "
                   f"({_bytes(version['bytes'])})")
    size = f" ({_bytes(report['bytes'])})" if report["bytes"] is not None else ""
    click.echo(f"{verb} {report['tasks']} task(s){size} and "
               f"{len(report['versions'])} version(s)")


def _bytes(count: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024  # type: ignore[assignment]
    raise AssertionError("unreachable: GiB ends the loop")


@cli.command()
@click.argument("ids", nargs=-1, required=True, shell_complete=completion.task_ids)
@click.option("-f", "--force", is_flag=True, help="also remove running tasks (stops them)")
@pass_ctx
def rm(ctx: Context, ids: tuple[str, ...], force: bool) -> None:
    """Remove tasks and their files (`rm worker ID` stops a worker)."""
    client = ctx.client()
    if ids[0] == "task":  # the seed's spelling: rm task ID
        ids = ids[1:]
        if not ids:
            raise click.UsageError("name the task: blanket rm task ID")
    if ids[0] == "worker":
        for worker_id in ids[1:]:
            client.delete(f"/worker/{quote(worker_id, safe='')}"
                          + ("?mode=handback" if force else ""))
            click.echo(worker_id)
        return
    failed = False
    for task_id in task_ids_of(ids):
        try:
            client.delete(f"/task/{task_id}" + ("?force" if force else ""))
            click.echo(task_id)
        except BlanketError as e:
            click.echo(f"{task_id}: {e.message}", err=True)
            failed = True
    if failed:
        sys.exit(1)


@cli.command()
@click.argument("ids", nargs=-1, required=True, type=TASK_ID,
                shell_complete=completion.task_ids)
@pass_ctx
def stop(ctx: Context, ids: tuple[str, ...]) -> None:
    """Stop tasks: a queued one at once, a running one within a second."""
    client = ctx.client()
    for task_id in ids:
        task = client.post(f"/task/{task_id}/stop")
        click.echo(f"{task['id']} {task['state']}")


@cli.command()
@click.argument("worker_ids", nargs=-1, required=True,
                shell_complete=completion.worker_ids)
@pass_ctx
def pause(ctx: Context, worker_ids: tuple[str, ...]) -> None:
    """Pause workers: they finish their task and take no new one until resumed."""
    for worker_id in worker_ids:
        answer = ctx.client().post(f"/worker/{quote(worker_id, safe='')}/pause")
        click.echo(f"{worker_id} {answer['state']}")


@cli.command()
@click.argument("worker_ids", nargs=-1, required=True,
                shell_complete=completion.worker_ids)
@pass_ctx
def resume(ctx: Context, worker_ids: tuple[str, ...]) -> None:
    """Resume paused workers."""
    for worker_id in worker_ids:
        answer = ctx.client().post(f"/worker/{quote(worker_id, safe='')}/resume")
        click.echo(f"{worker_id} {answer['state']}")


@cli.command()
@click.argument("task_id", type=TASK_ID, shell_complete=completion.task_ids)
@click.option("--stdout", "stream", flag_value="stdout", help="show stdout")
@click.option("--stderr", "stream", flag_value="stderr", help="show stderr")
@click.option("--output", "stream", flag_value="output",
              help="show the combined log (types with combine_output)")
@click.option("-f", "--follow", is_flag=True, help="keep printing until the task ends")
@pass_ctx
def logs(ctx: Context, task_id: str, stream: str | None, follow: bool) -> None:
    """Print a task's output: its combined log for a type that keeps one, else its stdout
    (or the stream asked for)."""
    client = ctx.client()
    task = client.get(f"/task/{quote(task_id, safe='')}")
    if follow and task["state"] in ("WAITING", "QUEUED", "CLAIMED"):
        why = f" until {_when(task['not_before'])}" if task.get("not_before") else ""
        click.echo(f"task {task['id']} is {task['state'].lower()}{why}: waiting for it to "
                   "start...", err=True)
        while task["state"] in ("WAITING", "QUEUED", "CLAIMED"):
            time.sleep(0.5)
            task = client.get(f"/task/{task['id']}")
    stream = stream or _default_stream(client, task)
    if not follow:
        click.echo(client.get(f"/task/{task['id']}/log/{stream}") or "", nl=False)
        return
    response = client.stream(f"/task/{task['id']}/log/{stream}?follow")
    ended = None
    for event, data in server_sent_events(response.stream(None)):
        if event == "end":
            ended = data
        else:
            click.echo(data)
    response.release_conn()
    if ended == "REMOVED":
        click.echo(f"error: task {task['id']} was removed before it ended", err=True)
        sys.exit(1)
    if ended is None:
        click.echo(f"error: the server ended the log of task {task['id']} before the task "
                   f"ended; follow it again with `blanket logs -f {task['id']}`", err=True)
        sys.exit(1)


def server_sent_events(chunks: Iterable[bytes]) -> Iterator[tuple[str, str]]:
    """(event type, data) of each event in a text/event-stream arriving in `chunks` (lines
    may be cut anywhere between chunks): fields by line, data lines joined with newlines, an
    event dispatched at a blank line, comments skipped."""
    partial, event, data = b"", "message", []
    for chunk in chunks:
        lines = (partial + chunk).split(b"\n")
        partial = lines.pop()
        for raw in lines:
            line = raw.decode(errors="replace").removesuffix("\r")
            if not line:
                if data:
                    yield event, "\n".join(data)
                event, data = "message", []
            elif line.startswith("event:"):
                event = line[6:].removeprefix(" ")
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))


def _default_stream(client: Client, task: dict) -> str:
    """`output` when the task's directory holds the combined log, else `stdout`."""
    if task["state"] in ("WAITING", "QUEUED", "CLAIMED"):
        return "stdout"
    try:
        names = {f.get("path") or f.get("name") for f in client.get(
            f"/task/{task['id']}/files/")}
    except ClientError:
        return "stdout"
    return "output" if "output.log" in names else "stdout"


@cli.command()
@click.argument("task_ids", nargs=-1, required=True, type=TASK_ID,
                shell_complete=completion.task_ids)
@click.option("--json", "as_json", is_flag=True, help="print the records as JSON")
@pass_ctx
def inspect(ctx: Context, task_ids: tuple[str, ...], as_json: bool) -> None:
    """Print every field of tasks' records (secret values shown as ***)."""
    client = ctx.client()
    tasks = [client.get(f"/task/{quote(task_id, safe='')}") for task_id in task_ids]
    if as_json:
        click.echo(json.dumps(tasks[0] if len(tasks) == 1 else tasks, indent=2))
        return
    for n, task in enumerate(tasks):
        if n:
            click.echo()
        _print_record(task)
        _print_notifications(client, task)


def _print_notifications(client: Client, task: dict) -> None:
    """The notifications an ended task's end made ([[notify]]), a line each."""
    if task.get("finished") is None:
        return  # only an end makes them: no request for a task still going
    try:
        found = client.get(f"/task/{task['id']}/notifications")["notifications"]
    except ClientError:
        return  # a server from before notifications
    for n in found:
        click.echo(f"notification  {n['event']} -> {n['target']}: {n['state']} (attempts "
                   f"{n['attempts']}, last: {n['result'] or '-'})")


def _print_record(task: dict) -> None:
    width = max(len(key) for key in task)
    for key, value in task.items():
        if key == "state":
            shown = state_text(str(value))
        elif key in ("added", "not_before", "claimed", "started", "finished",
                     "heartbeat") and isinstance(value, int | float):
            shown = f"{datetime.fromtimestamp(value).isoformat(sep=' ', timespec='seconds')}"
        elif isinstance(value, dict | list):
            shown = json.dumps(value, ensure_ascii=False) if value else "-"
        else:
            shown = "-" if value is None else str(value)
        click.echo(f"{key.ljust(width)}  {shown}")


@cli.command(cls=WaitOption)
@click.argument("task_id", type=TASK_ID, shell_complete=completion.task_ids)
@click.option("--wait", metavar="[SECONDS]",
              help="wait until the new task ends (at most SECONDS), as submit --wait")
@click.option("--json", "as_json", is_flag=True, help="print the new task as JSON")
@pass_ctx
def rerun(ctx: Context, task_id: str, wait: str | None, as_json: bool) -> None:
    """Submit a task again with the same type, environment, files and tags; print the new
    task's id."""
    limit = wait_limit(wait)
    client = ctx.client()
    task = client.post(f"/task/{quote(task_id, safe='')}/rerun")
    _show_and_wait(ctx, client, task, wait is not None, limit, as_json)


@cli.command(name="wait")
@click.argument("task_ids", nargs=-1, required=True, type=TASK_ID,
                shell_complete=completion.task_ids)
@click.option("--timeout", "limit", metavar="SECONDS",
              help="give up after this long (90, 5m); exit 125 then")
@click.option("--json", "as_json", is_flag=True, help="print the tasks as JSON at the end")
@pass_ctx
def wait_command(ctx: Context, task_ids: tuple[str, ...], limit: str | None,
                 as_json: bool) -> None:
    """Wait until tasks end; exit with the first unsuccessful one's exit code (0 when all
    succeeded; 124 timed out, 125 still running at --timeout)."""
    seconds = wait_limit(limit) if limit is not None else None
    deadline = None if seconds is None else time.monotonic() + seconds
    client = ctx.client()
    ended = []
    for task_id in task_ids:
        task = client.get(f"/task/{quote(task_id, safe='')}")
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        progress = Progress(quiet=ctx.verbosity < 0 or as_json)
        task = wait_for(client, task, left, progress)
        progress.done(task)
        ended.append(task)
    if as_json:
        click.echo(json.dumps(ended[0] if len(ended) == 1 else ended, indent=2))
    failed = next((t for t in ended if t["state"] != "SUCCESS"), None)
    if failed is not None:
        if failed["state"] in ENDED:
            show_failure(client, failed)
        sys.exit(exit_code_of(failed))


@cli.command(name="ls")
@click.argument("what", type=click.Choice(["types", "workers", "schedules", "tasks",
                                           "tasktypes"]))
@click.option("-q", "--quiet", is_flag=True, help="names (worker ids) only")
@click.option("--json", "as_json", is_flag=True, help="print them as JSON")
@pass_ctx
@click.pass_context
def ls(click_ctx: click.Context, ctx: Context, what: str, quiet: bool, as_json: bool) -> None:
    """List types, workers or schedules (`ls tasks` is `ps -a`; `ls tasktypes` is `ls types`,
    as the seed spells them)."""
    if what == "tasks":
        click_ctx.invoke(ps, show_all=True, quiet=quiet, state=(), types=(), limit=100,
                         as_json=as_json)
        return
    if what == "tasktypes":
        what = "types"
    path = {"types": "/task_type/", "workers": "/worker/", "schedules": "/schedule/"}[what]
    entries = ctx.client().get(path)
    if printed_plainly(entries, as_json, quiet, "id" if what == "workers" else "name"):
        return
    if what == "types":
        rows = [[t["name"], (t.get("version") or "-")[:12], _problem_mark(t),
                 (t.get("definition") or {}).get("description") or ""] for t in entries]
        print_table(["NAME", "VERSION", "STATUS", "DESCRIPTION"], rows, flexible=(0, 2, 3))
    elif what == "workers":
        rows = [[w["id"], w["state"], ",".join(w["tags"]), w["host"], str(w["pid"]),
                 str(w["task"] or ""), _when(w["heartbeat"])] for w in entries]
        print_table(["ID", "STATE", "TAGS", "HOST", "PID", "TASK", "HEARTBEAT"], rows,
                    flexible=(0, 2, 3), state_column=1)
    else:
        rows = [[s["name"], _cadence(s.get("definition") or {}), _iso_short(s.get("next_fire")),
                 s.get("state", ""), _problem_mark(s)] for s in entries]
        print_table(["NAME", "WHEN", "NEXT", "STATE", "STATUS"], rows, flexible=(0, 1, 4),
                    state_column=3)


def _cadence(definition: dict) -> str:
    if definition.get("cron"):
        return definition["cron"]
    every = definition.get("every")
    return f"every {every:g}s" if every is not None else ""


def _iso_short(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return value
    return _when(value)


@cli.group()
def schedule() -> None:
    """Schedule commands: run now, pause, resume."""


@schedule.command(name="run")
@click.argument("name", shell_complete=completion.schedule_names)
@click.option("--json", "as_json", is_flag=True, help="print the task as JSON")
@pass_ctx
def schedule_run(ctx: Context, name: str, as_json: bool) -> None:
    """Run schedule NAME now; print the new task's id."""
    task = ctx.client().post(f"/schedule/{name}/run")
    click.echo(json.dumps(task, indent=2) if as_json else str(task["id"]))


@schedule.command(name="pause")
@click.argument("names", nargs=-1, required=True,
                shell_complete=completion.schedule_names)
@pass_ctx
def schedule_pause(ctx: Context, names: tuple[str, ...]) -> None:
    """Stop schedules firing until resumed."""
    for name in names:
        ctx.client().post(f"/schedule/{name}/pause")
        click.echo(f"{name}: paused")


@schedule.command(name="resume")
@click.argument("names", nargs=-1, required=True,
                shell_complete=completion.schedule_names)
@pass_ctx
def schedule_resume(ctx: Context, names: tuple[str, ...]) -> None:
    """Fire paused schedules again (runs missed while paused are not caught up)."""
    for name in names:
        shown = ctx.client().post(f"/schedule/{name}/resume")
        click.echo(f"{name}: {shown['state']}")


def _problem_mark(entry: dict) -> str:
    problems = entry.get("problems") or []
    return f"error: {problems[0]['message']}" if problems else "ok"


@cli.command()
@click.argument("directory", type=click.Path(path_type=Path), default=Path("."))
def init(directory: Path) -> None:
    """Create a config directory with an example type and a settings file."""
    types = directory / "conf.d" / "types"
    types.mkdir(parents=True, exist_ok=True)
    (directory / "conf.d" / "schedules").mkdir(exist_ok=True)
    example = types / "hello.toml"
    if not example.exists():
        example.write_text('description = "Say hello"\ncommand = "echo hello {{ NAME }}"\n'
                           '\n[environment.defaults]\nNAME = "world"\n')
    settings = directory / "blanket.toml"
    if not settings.exists():
        settings.write_text('# Every key is optional; see the README.\n'
                            '# port = 8773\n# config_dir = "conf.d"\n# data_dir = "var"\n'
                            '# Ended tasks are kept for ever unless these say otherwise:\n'
                            '# keep_finished = "90d"\n# keep_failed = "180d"\n'
                            '# keep_per_type = 10000\n')
    click.echo(f"created {example} and {settings}; start with: blanket server --workers 2")


@cli.command()
@click.option("-n", "--interval", type=click.FloatRange(0.1, 3600), default=1.0,
              show_default=True, help="seconds between refreshes")
@click.option("--once", is_flag=True, help="print one view and exit (also when not on a "
                                           "terminal)")
@pass_ctx
def top(ctx: Context, interval: float, once: bool) -> None:
    """A live view of tasks by state, ends per second, workers, running and queued tasks."""
    from blanket.top import run

    client = ctx.client()
    run(client, client.base_url, interval, once)


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--with-tasks", is_flag=True,
              help="every task's folder (logs, results); else those of tasks not yet ended")
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="the server's data dir (default: the settings')")
@click.option("--database", help="the server's database URL (default: the settings')")
@click.option("--json", "as_json", is_flag=True, help="print the backup's manifest as JSON")
@pass_ctx
def backup(ctx: Context, file: Path, with_tasks: bool, data_dir: Path | None,
           database: str | None, as_json: bool) -> None:
    """Copy the server's data dir (store, versions, folders of tasks not yet ended) to FILE, a
    new file of mode 0600, while the server runs; run it on the server's machine. With
    PostgreSQL, the database is pg_dump's: FILE holds the files."""
    from blanket.backup.create import make_backup
    from blanket.store import without_password

    settings = ctx.settings(data_dir=data_dir, database=database)
    made = make_backup(settings.data_dir, settings.database_url, file, with_tasks)
    m = made.manifest
    if as_json:
        click.echo(m.to_bytes().decode(), nl=False)
    else:
        states = ", ".join(f"{n} {s.lower()}" for s, n in m.tasks.items()) or "none"
        click.echo(f"{file}: tasks {states}; {m.versions} versions, {m.task_dirs} task "
                   f"folders; {made.files} files, {made.size:,} bytes in {made.seconds:.1f}s")
    if not m.database_included:
        click.echo("the database is not in this backup: PostgreSQL's own tools copy it, e.g. "
                   f"pg_dump --format=custom --file={file}.pgdump "
                   f"'{without_password(settings.database_url)}'", err=True)


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path),
              help="the new data dir, absent or empty (default: the settings')")
@pass_ctx
def restore(ctx: Context, file: Path, data_dir: Path | None) -> None:
    """Unpack the backup FILE as a new data dir (refused into one that holds anything)."""
    from blanket.backup.create import sqlite_path
    from blanket.backup.restore import restore_backup
    from blanket.store import without_password
    from blanket.taskdir import DataDir

    settings = ctx.settings(data_dir=data_dir)
    target = settings.data_dir
    done = restore_backup(file, target)
    m = done.manifest
    if m.database_included and settings.database and \
            sqlite_path(settings.database) != DataDir(target).store:
        click.echo(f"note: the store is restored as {DataDir(target).store}, but the settings "
                   f"name the database {without_password(settings.database)}: point them at "
                   "it", err=True)
    click.echo(f"restored {file} ({m.created}, blanket {m.blanket}) into {done.data_dir}: "
               f"{sum(m.tasks.values())} tasks, {m.versions} versions, {m.task_dirs} task "
               f"folders; start the server with --data-dir {target}")
    if not m.database_included:
        click.echo("this backup holds no database (the server used PostgreSQL): restore the "
                   f"database first, e.g. pg_restore --clean --if-exists --dbname=URL "
                   f"{file}.pgdump", err=True)


@cli.command()
@click.option("--since", help="tasks added at or after: Unix seconds, ISO 8601, or -2h")
@click.option("--until", help="tasks added before: Unix seconds, ISO 8601, or -2h")
@click.option("--type", "types", multiple=True, help="tasks of this type (repeatable)")
@click.option("--state", "states", multiple=True, help="tasks in this state (repeatable)",
              type=click.Choice([s.value for s in TaskState], case_sensitive=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="a new file for the JSON lines (default: standard output)")
@click.option("--files", "files_to", type=click.Path(dir_okay=False, path_type=Path),
              help="also a new tar.gz of the tasks' folders (TYPE/ID/PATH)")
@pass_ctx
def export(ctx: Context, since: str | None, until: str | None, types: tuple[str, ...],
           states: tuple[str, ...], output: Path | None, files_to: Path | None) -> None:
    """Write tasks as JSON lines, as the API shows them (secret values as ***), oldest first;
    through the API, so any machine with a viewer token can."""
    from blanket.backup.export import exported_tasks, private_text_file, write_files, write_lines

    client = ctx.client()
    for path in (output, files_to):
        if path is not None and (path.exists() or path.is_symlink()):
            raise click.BadParameter(f"{path} exists: name a new file")
    tasks = exported_tasks(client, since, until, types, tuple(s.upper() for s in states))
    try:
        if output is None:
            written = write_lines(tasks, sys.stdout)
        else:
            with private_text_file(output) as out:
                written = write_lines(tasks, out)
    except ClientError as e:  # the API's names for the options
        raise ClientError(e.message.replace("added_after:", "--since:").replace(
            "added_before:", "--until:"), status=e.status) from None
    if files_to is not None:
        count = write_files(client, written, files_to)
        click.echo(f"{files_to}: {count} files of {len(written)} tasks", err=True)
    elif output is not None:
        click.echo(f"{output}: {len(written)} tasks", err=True)


cli.add_command(workflow)


@cli.command(name="completion")
@click.argument("shell", type=click.Choice(completion.SHELLS))
def completion_command(shell: str) -> None:
    """Print the shell completion script for SHELL; it completes commands and options, and
    type names, schedule names, task ids and worker ids from the server. Load it with:
    bash: eval "$(blanket completion bash)" in ~/.bashrc; zsh: eval "$(blanket completion
    zsh)" in ~/.zshrc; fish: blanket completion fish > ~/.config/fish/completions/blanket.fish"""
    click.echo(completion.script(shell, cli))


def main() -> None:
    try:
        cli(standalone_mode=True)
    except BlanketError as e:
        click.echo(f"error: {e.message}", err=True)
        sys.exit(1)

