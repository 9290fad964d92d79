"""`blanket export`: tasks as JSON lines, read through the HTTP API (`GET /task/`), so that it
works from any machine with a viewer token; with `files`, their folders as a tar.gz, read
through the task files routes (`GET /task/ID/files/...`).

Each line is the task's record as the API shows it, so secret values are `***`, and the
files are served as the API serves them (text with the task's secret values replaced by
`***`); the backup (`blanket backup`, on the server's machine) is what keeps secret values.
Pages are read oldest first by id; each page is asked to begin with the last task already
seen, and a page that begins past it (tasks removed meanwhile shifted the listing) is asked
again from earlier, so that no task that stays is skipped and none is written twice.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO
from urllib.parse import quote, urlencode

from blanket.backup.archive import ArchiveWriter, BadBackup
from blanket.client import Client, ClientError
from blanket.config.tasktype import TYPE_NAME

PAGE = 1000


def exported_tasks(client: Client, since: str | None = None, until: str | None = None,
                   types: tuple[str, ...] = (), states: tuple[str, ...] = (),
                   page: int = PAGE) -> Iterator[dict]:
    """Every task the filters select, oldest first, each once."""
    query = {"sort": "id", "order": "asc", "limit": page}
    for key, value in (("added_after", since), ("added_before", until),
                       ("type", ",".join(types)), ("state", ",".join(states))):
        if value:
            query[key] = value
    last: int | None = None
    offset = 0
    while True:
        tasks = client.get("/task/?" + urlencode({**query, "offset": offset}))
        if last is not None and offset > 0 and tasks and tasks[0]["id"] > last:
            offset = max(0, offset - page)  # removals moved the listing: look earlier
            continue
        for task in tasks:
            if last is None or task["id"] > last:
                last = task["id"]
                yield task
        if len(tasks) < page:
            return
        offset += len(tasks) - 1  # the next page begins with this one's last task


def write_lines(tasks: Iterator[dict], out: IO[str]) -> list[dict]:
    """Write each task as one JSON line; the tasks written (their ids and types)."""
    written = []
    for task in tasks:
        out.write(json.dumps(task, separators=(",", ":")) + "\n")
        written.append({"id": task["id"], "type": task["type"]})
    return written


def write_files(client: Client, tasks: list[dict], dest: Path) -> int:
    """The folders of `tasks` as a tar.gz at `dest` (a new file, mode 0600): TYPE/ID/PATH
    for each file the API lists. Returns how many files it holds."""
    writer = ArchiveWriter(dest)
    try:
        with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}.") as work:
            temp = Path(work) / "file"
            for task in tasks:
                base = f"/task/{task['id']}/files/"
                try:
                    listed = client.get(base)
                except ClientError as e:
                    if e.status == 404:  # removed since it was listed
                        continue
                    raise
                for entry in listed:
                    name = _member_name(task, entry["path"])
                    try:
                        client.download(base + quote(entry["path"]), str(temp))
                    except ClientError as e:
                        if e.status == 404:
                            continue
                        raise
                    writer.add_file(temp, name)
                    os.unlink(temp)
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return writer.count


def _member_name(task: dict, path: str) -> str:
    """TYPE/ID/PATH in the files archive; a name that would unpack outside its task's folder
    (from a server that should never list one) is refused."""
    parts = path.split("/")
    if not TYPE_NAME.fullmatch(str(task["type"])) or path.startswith("/") or \
            any(p in ("", ".", "..") for p in parts) or "\0" in path:
        raise BadBackup(f"the server listed {task['type']!r}/{path!r} for task {task['id']}, "
                        "which would unpack outside the task's folder: refused")
    return f"{task['type']}/{int(task['id'])}/{path}"


@contextlib.contextmanager
def private_text_file(dest: Path) -> Iterator[IO[str]]:
    """`dest` to write as a new file of mode 0600 (an export names who submitted what; it
    is not for everyone), through `dest.partial`, renamed once whole."""
    partial = dest.with_name(dest.name + ".partial")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        raise BadBackup(f"{partial} exists: left by an export that did not finish, or one "
                        "still running; remove it if none is") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.rename(partial, dest)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
