"""The read side of tasks: one task, a filtered listing, counts. What the API shows and the
dashboards count, without a route reaching into the store."""

from __future__ import annotations

from blanket.errors import NotFound
from blanket.models import Delivery, Task, TaskFilter, TaskState
from blanket.store.base import Store


class TasksView:
    """Tasks as they are recorded now."""

    def __init__(self, store: Store):
        self.store = store

    def find(self, task_id: int) -> Task | None:
        """The task, or None if there is no such task (any more)."""
        return self.store.get_task(task_id)

    def get(self, task_id: int) -> Task:
        """The task; NotFound if there is none."""
        task = self.store.get_task(task_id)
        if task is None:
            raise NotFound(f"no task {task_id}")
        return task

    def notifications(self, task_id: int) -> list[Delivery]:
        """The notifications of the task's end ([[notify]]), oldest first."""
        return self.store.task_deliveries(task_id)

    def list(self, flt: TaskFilter) -> list[Task]:
        return self.store.list_tasks(flt)

    def count(self, flt: TaskFilter) -> int:
        return self.store.count_tasks(flt)

    def queued_ahead(self, task: Task) -> int:
        """Queued tasks before this one in line (any type)."""
        return self.store.queued_ahead(task)

    def versions_run(self, type_name: str, limit: int = 20) -> list[dict]:
        """The versions a type's tasks ran with, latest first, with when and how many."""
        return [{"version": version, "first_added": first, "last_added": last, "tasks": count}
                for version, first, last, count in self.store.versions_run(type_name, limit)]

    def ended_since(self, since: float) -> list[tuple[str, str, int, int, float, int]]:
        """Tasks ended at or after `since`: (type, state, minute, count, waited, started)."""
        return self.store.ended_since(since)

    def count_by_state(self) -> dict[TaskState, int]:
        """How many tasks are in each state (every state, zeros included)."""
        return {state: self.count(TaskFilter(states=(state.value,))) for state in TaskState}

    def queued_by_type(self) -> dict[str, int]:
        """How many tasks are queued, by type."""
        return self.store.queued_by_type()
