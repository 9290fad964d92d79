"""Fills a task's scratch directory before it runs: its variables, its type's files sections
(text rendered as templates unless ignored or binary, the rest copied), and `task.json`."""

from __future__ import annotations

import json
import os
import posixpath
import shlex
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pathspec

from blanket.config.tasktype import TaskType
from blanket.config.templating import TEMPLATEIGNORE, is_binary, load_templateignore, render_text
from blanket.envnames import too_big
from blanket.models import SECRET_MASK, Task
from blanket.taskdir import TASK_FILE


class RunProblem(Exception):
    """Something in the task or its type that keeps it from running; the message says what."""


def task_variables(task: Task, task_type: TaskType, work_dir: Path,
                   server_url: str = "") -> dict[str, str]:
    """Type defaults, then the submitted environment, then the BLANKET_* variables."""
    blanket = {
        "BLANKET_TASK_ID": str(task.id),
        "BLANKET_TASK_TYPE": task.type,
        "BLANKET_WORKING_DIR": str(work_dir),
        "BLANKET_SERVER": server_url,
        "BLANKET_VERSION": task.version or "",
        "BLANKET_ATTEMPT": str(task.attempt),
        # lets the task report its own progress (POST /task/ID/progress) with no API token
        "BLANKET_TASK_TOKEN": task.token or "",
    }
    merged = {**task_type.defaults, **task.environment, **blanket}
    return {name: str(value) for name, value in merged.items()}


def check_environment_size(task: Task, task_type: TaskType) -> None:
    """RunProblem if the type's defaults and the task's variables together are more than a
    task may be given: each was within the bound when the task was submitted, but the
    type's defaults may have grown since. Better said here than as E2BIG at its start."""
    merged = {**task_type.defaults, **task.environment}
    if (problem := too_big(merged, task_type.defaults)) is not None:
        raise RunProblem(f"environment: {problem}, or shrink the type's defaults (they may "
                         "have grown since the task was submitted)")


def resolve_dest(dest: str, work_dir: Path) -> Path:
    """Where a files section lands: inside `work_dir`, or in the home directory for `~/...`."""
    if dest == "~" or dest.startswith("~/"):
        base, rest, place = Path.home(), dest[2:], "the home directory"
    else:
        base, rest, place = work_dir, dest, "the task directory"
    normal = posixpath.normpath(rest or ".")
    if posixpath.isabs(normal) or normal == ".." or normal.startswith("../"):
        raise RunProblem(f"files dest {dest!r} points outside {place}; use a relative path "
                         "inside the task directory or one starting with '~/'")
    return base / normal


def copy_section(source: Path, dest: Path, *, render: bool, variables: Mapping[str, str]) -> None:
    """Copy one bundle section to `dest`, rendering text files unless ignored or binary."""
    if not source.is_dir():
        return
    ignore = load_templateignore(source) if render else None
    for path in _walk(source):
        relative = path.relative_to(source).as_posix()
        if relative == TEMPLATEIGNORE:
            continue
        target = dest / relative
        if path.is_dir() and not path.is_symlink():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_symlink():
            target.unlink()  # never write through a link left by an earlier attempt
        if render and _renders(path, relative, ignore):
            text = render_text(path.read_text(encoding="utf-8"), variables, where=relative)
            target.write_text(text, encoding="utf-8")
            shutil.copymode(path, target)
        else:
            shutil.copy2(path, target, follow_symlinks=False)


def _walk(root: Path) -> Iterator[Path]:
    for directory, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            yield Path(directory, name)


def _renders(path: Path, relative: str, ignore: pathspec.PathSpec | None) -> bool:
    if path.is_symlink() or (ignore is not None and ignore.match_file(relative)):
        return False
    return not is_binary(path)


def write_task_file(work_dir: Path, task: Task, task_type: TaskType,
                    variables: Mapping[str, str], ended: Mapping[str, Any] | None = None) -> None:
    """Write task.json, once, when the run ends: the task, its type, the variables it ran
    with and how it ended (`ended`: state, exit_code, error, started, finished). One line, by
    the C encoder (`indent` takes the pure-Python one, several times slower, on every task);
    `jq .` shows it indented."""
    data = {**task.to_json(), **(ended or {}), "task_type": task_type.shown_json(),
            "run_environment": shown_variables(task, task_type, variables)}
    # A value that is not Unicode text (a lone surrogate) is kept as its JSON escape.
    (work_dir / TASK_FILE).write_text(json.dumps(data, sort_keys=True, ensure_ascii=False) + "\n",
                                      encoding="utf-8", errors="backslashreplace")


def may_show(command: str, task: Task, task_type: TaskType,
             variables: Mapping[str, str]) -> bool:
    """Whether the rendered `command` may be seen by others (as a process argument): its
    template names none of the variables a task must not show (its secrets, its attempt
    token), and no value of theirs is in it, as given or shell-quoted."""
    template = task_type.command
    for name in _hidden(task, task_type):
        value = variables.get(name)
        if name in template or (value and (value in command or shlex.quote(value) in command)):
            return False
    return True


def shown_variables(task: Task, task_type: TaskType,
                    variables: Mapping[str, str]) -> dict[str, str]:
    hidden = _hidden(task, task_type)
    return {name: SECRET_MASK if name in hidden else value for name, value in variables.items()}


def _hidden(task: Task, task_type: TaskType) -> set[str]:
    return {*task.secrets, *task_type.secrets, "BLANKET_TASK_TOKEN"}
