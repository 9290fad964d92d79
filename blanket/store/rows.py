"""Turning database rows into records, shared by the SQLite and PostgreSQL stores."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import msgspec

from blanket.models import Delivery, Run, RunTask, Task, TaskState, Token, Worker
from blanket.store.base import NewTask, Outcome


def tags_key(tags: tuple[str, ...] | list[str]) -> str:
    """The stored form of a tag set: sorted, unique, joined by commas."""
    return ",".join(sorted(set(tags)))


_TASK_STATES: dict[str | None, TaskState | None] = {s.value: s for s in TaskState} | {None: None}


def task_from_row(found: Mapping[str, Any]) -> Task:
    # A SQLite row finds a column by comparing its name with each column's in turn: read
    # once into a dict, the 37 look-ups below cost a third as much.
    row = found if isinstance(found, dict) else dict(zip(found.keys(), found, strict=True))
    return Task(
        id=row["id"], type=row["type"], state=_TASK_STATES[row["state"]],
        environment=_json(row["environment"]),
        tags=tuple(t for t in row["tags"].split(",") if t), score=row["score"],
        added=row["added"], not_before=row["not_before"], version=row["version"],
        claimed=row["claimed"], started=row["started"], finished=row["finished"],
        heartbeat=row["heartbeat"], worker=row["worker"], attempt=row["attempt"],
        token=row["token"], pid=row["pid"], exit_code=row["exit_code"],
        progress=row["progress"], progress_message=row["progress_message"],
        directory=row["directory"], error=row["error"], schedule=row["schedule"],
        retries=row["retries"], retry_delay=row["retry_delay"], timeout=row["timeout"],
        stop_requested=bool(row["stop_requested"]), priority=row["priority"],
        inputs=tuple(_json(row["inputs"])), attempts=tuple(_json(row["attempts"])),
        submitted_by=row["submitted_by"], stopped_by=row["stopped_by"],
        secrets=tuple(_json(row["secrets"])), after=tuple(_json(row["after_ids"])),
        after_policy=row["after_policy"] or "success",
    )


def new_task_record(task_id: int, new: NewTask) -> Task:
    """The task as the store holds it right after inserting `new` under `task_id`, without
    reading it back (what task_from_row would make of the inserted row)."""
    return Task(id=task_id, type=new.type, state=TaskState.QUEUED,
                environment=dict(new.environment), tags=tuple(sorted(set(new.tags))),
                score=new.score, added=new.added, not_before=new.not_before,
                schedule=new.schedule, retries=new.retries, retry_delay=new.retry_delay,
                timeout=new.timeout, priority=new.priority, inputs=tuple(new.inputs),
                submitted_by=new.submitted_by, secrets=tuple(new.secrets))


def worker_from_row(row: Mapping[str, Any]) -> Worker:
    return Worker(
        id=row["id"], tags=tuple(_json(row["tags"])), host=row["host"], pid=row["pid"],
        state=row["state"], registered=row["registered"], heartbeat=row["heartbeat"],
        task=row["task"], stop_mode=row["stop_mode"], owner=row["owner"],
    )


def worker_params(worker: Worker) -> dict[str, Any]:
    return {"id": worker.id, "tags": json.dumps(list(worker.tags)), "host": worker.host,
            "pid": worker.pid, "state": worker.state, "registered": worker.registered,
            "heartbeat": worker.heartbeat, "task": worker.task, "stop_mode": worker.stop_mode,
            "owner": worker.owner}


def attempt_record(task: Task, outcome: Outcome) -> dict[str, Any]:
    """One entry of a task's attempt history."""
    state = TaskState.LOST.value if outcome.lost else outcome.state.value
    record = {"attempt": task.attempt, "worker": task.worker, "state": state,
              "claimed": task.claimed, "started": task.started or outcome.started,
              "finished": outcome.finished, "exit_code": outcome.exit_code,
              "error": outcome.lost or outcome.error, "version": task.version}
    if outcome.refund:  # not counted: the next attempt has this one's number
        record["refunded"] = True
    return record


_decode = msgspec.json.decode


def _json(value: Any) -> Any:
    """A JSON column (SQLite keeps text, PostgreSQL's driver decodes it already)."""
    if isinstance(value, str | bytes):
        if value == "[]":  # most tasks have no inputs, secrets or attempts yet
            return ()
        try:
            return _decode(value)
        except msgspec.DecodeError:  # a lone surrogate (stored before intake refused it)
            return json.loads(value)
    return value


def token_from_row(row: Mapping[str, Any]) -> Token:
    return Token(id=row["id"], name=row["name"], role=row["role"], hash=row["hash"],
                 created=row["created"], types=tuple(_json(row["types"])),
                 tags=tuple(_json(row["tags"])), expires=row["expires"],
                 revoked=row["revoked"], parent=row["parent"])


def token_params(token: Token) -> dict[str, Any]:
    return {"id": token.id, "name": token.name, "role": token.role,
            "types": json.dumps(list(token.types)), "tags": json.dumps(list(token.tags)),
            "hash": token.hash, "created": token.created, "expires": token.expires,
            "parent": token.parent}


def delivery_from_row(row: Mapping[str, Any]) -> Delivery:
    return Delivery(
        id=row["id"], task_id=row["task_id"], task_type=row["task_type"], event=row["event"],
        target_key=row["target_key"], target=json.loads(row["target"]), state=row["state"],
        attempts=row["attempts"], created=row["created"], next_at=row["next_at"],
        finished=row["finished"], result=row["result"])


def run_link(run: tuple[int, str, int, int], task_id: int) -> dict[str, Any]:
    """The parameters of link_run_task for a new task of a run's step."""
    run_id, step, item, round_ = run
    return {"run_id": run_id, "step": step, "item": item, "round": round_, "task_id": task_id}


def run_from_row(row: Mapping[str, Any]) -> Run:
    return Run(id=row["id"], workflow=row["workflow"], version=row["version"],
               definition=row["definition"], environment=_json(row["environment"]),
               state=row["state"], round=row["round"], added=row["added"],
               finished=row["finished"], reason=row["reason"],
               submitted_by=row["submitted_by"], schedule=row["schedule"])


def run_task_from_row(row: Any) -> RunTask:
    """A row of the run_tasks queries, whose columns come in RunTask's order (a SQLite row
    or a PostgreSQL dict)."""
    values = list(row.values() if isinstance(row, dict) else row)
    values[4] = _TASK_STATES[values[4]]
    return RunTask._make(values)
