"""Which [[notify]] targets a task's end goes to: its type's blocks, its schedule's (when a
schedule made it) and blanket.toml's, every one that asks for the event, each target once
(blocks that send the same way to the same place are one target, whichever file they are
in). Answered from memory, as the store asks inside the transaction that ends the task."""

from __future__ import annotations

import json

from blanket.config.notify import NotifyTarget
from blanket.server.catalog import Catalog
from blanket.store.base import DeliveryTarget


class NotifyRules:
    """`targets(type, schedule, event)` for the store's `notify_targets`; cached until the
    catalog changes. Only the catalog's own records are read (never a command schedule's
    synthetic type, which is built, bundled and recorded on first use: not a thing to do
    inside a store's transaction; its blocks are its schedule's)."""

    def __init__(self, catalog: Catalog, settings_blocks: tuple[NotifyTarget, ...] = ()):
        self.catalog = catalog
        self.settings_blocks = settings_blocks
        self._secrets = {t.key: t.secret for t in settings_blocks if t.secret is not None}
        self._cache: dict[tuple[str, str | None, str], tuple[DeliveryTarget, ...]] = {}
        self._generation = 0
        catalog.add_listener(self.forget)

    def forget(self) -> None:
        self._generation += 1
        self._cache = {}

    def blocks(self, type_name: str, schedule: str | None) -> list[NotifyTarget]:
        """Every block that applies to a task of `type_name` made by `schedule`."""
        loaded = self.catalog.get(type_name)
        found = list(loaded.task_type.notify) if loaded and loaded.task_type else []
        if schedule is not None:
            made_by = self.catalog.schedule(schedule)
            if made_by is not None and made_by.schedule is not None:
                found += made_by.schedule.notify
        return found + list(self.settings_blocks)

    def targets(self, type_name: str, schedule: str | None,
                event: str) -> tuple[DeliveryTarget, ...]:
        key = (type_name, schedule, event)
        cached = self._cache.get(key)
        if cached is None:
            generation, cache = self._generation, self._cache
            chosen: dict[str, DeliveryTarget] = {}
            for block in self.blocks(type_name, schedule):
                if block.wants(event) and block.key not in chosen:
                    chosen[block.key] = DeliveryTarget(block.key, json.dumps(block.stored()))
            cached = tuple(chosen.values())
            if generation == self._generation:  # not worked out from a catalog since changed
                cache[key] = cached
        return cached

    def inline_secret(self, key: str) -> str | None:
        """The secret a blanket.toml block wrote for the target `key` (None if none now)."""
        return self._secrets.get(key)
