"""Verbs whose SQL and row handling are the same in both stores: each store supplies its
named queries and its `_tx`, `_one` and `_all`; the SQL text itself stays per dialect in
blanket/store/sql/."""

from __future__ import annotations

from abc import abstractmethod
from contextlib import AbstractContextManager
from typing import Any

from blanket.models import Delivery, Token, Worker
from blanket.store.base import Store, end_event
from blanket.store.rows import delivery_from_row, token_from_row, worker_from_row, worker_params


class SqlVerbs(Store):
    queries: dict[str, str]  # this dialect's named queries (blanket/store/sql/DIALECT/queries.sql)

    @abstractmethod
    def _tx(self, durable: bool = True) -> AbstractContextManager[Any]:
        """One transaction; yields something with `execute(query, params)`."""

    @abstractmethod
    def _one(self, query: str, params: Any = None) -> Any: ...

    @abstractmethod
    def _all(self, query: str, params: Any = None) -> list[Any]: ...

    # notifications
    def _deliveries_in(self, db: Any, row: Any, lost: str | None = None) -> bool:
        """Inside the transaction that ended the task `row`: make its deliveries, one per
        target `notify_targets` names (none asked: no statement). Whether any were made."""
        event = end_event(row["state"], lost)
        targets = self.notify_targets(row["type"], row["schedule"], event)
        if not targets:
            return False
        db.executemany(self.queries["insert_delivery"], [
            {"task_id": row["id"], "task_type": row["type"], "event": event,
             "target_key": t.key, "target": t.target, "now": row["finished"]}
            for t in targets])
        return True

    def claim_deliveries(self, now: float, lease: float, limit: int) -> list[Delivery]:
        with self._tx(durable=False) as db:
            rows = db.execute(self.queries["claim_deliveries"],
                              {"now": now, "lease": lease, "limit": limit}).fetchall()
        return sorted((delivery_from_row(r) for r in rows), key=lambda d: (d.created, d.id))

    def settle_delivery(self, delivery: Delivery, now: float, *, state: str,
                        result: str | None, retry_at: float | None = None) -> bool:
        with self._tx() as db:
            return db.execute(self.queries["settle_delivery"], {
                "id": delivery.id, "attempts": delivery.attempts, "state": state,
                "retry_at": retry_at, "result": result,
                "finished": None if state == "pending" else now}).rowcount == 1

    def task_deliveries(self, task_id: int) -> list[Delivery]:
        return [delivery_from_row(r)
                for r in self._all(self.queries["task_deliveries"], {"task_id": task_id})]

    def next_delivery_at(self) -> float | None:
        row = self._one(self.queries["next_delivery_at"])
        return None if row is None else row[0] if not isinstance(row, dict) else row["next_at"]
    def queued_by_type(self) -> dict[str, int]:
        return {r["type"]: int(r["n"]) for r in self._all(self.queries["queued_by_type"])}

    # workers
    def save_worker(self, worker: Worker) -> None:
        with self._tx() as db:
            db.execute(self.queries["save_worker"], worker_params(worker))

    def list_workers(self) -> list[Worker]:
        return [worker_from_row(r) for r in self._all(self.queries["list_workers"])]

    def touch_worker(self, worker_id: str, task: int | None, now: float) -> None:
        with self._tx(durable=False) as db:
            db.execute(self.queries["touch_worker"], {"id": worker_id, "task": task, "now": now})

    # tokens
    def get_token(self, token_id: str) -> Token | None:
        row = self._one(self.queries["get_token"], {"id": token_id})
        return token_from_row(row) if row else None

    def list_tokens(self) -> list[Token]:
        return [token_from_row(r) for r in self._all(self.queries["list_tokens"])]

    def revoke_token(self, name: str, now: float) -> Token | None:
        with self._tx() as db:
            row = db.execute(self.queries["revoke_token"], {"name": name, "now": now}).fetchone()
            if row is not None:
                db.execute(self.queries["revoke_sessions"], {"id": row["id"], "now": now})
        return token_from_row(row) if row else None

    def end_session(self, token_id: str, now: float) -> None:
        with self._tx() as db:
            db.execute(self.queries["end_session"], {"id": token_id, "now": now})
