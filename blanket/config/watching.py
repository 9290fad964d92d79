"""Watch a directory and report settled bursts of changes: one callback per burst."""

from __future__ import annotations

import fnmatch
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import structlog
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

log = structlog.get_logger()

NOISE_PATTERNS = (".#*", "*~", "*.swp", "*.swx", "*.tmp", "4913")
_KEPT_HIDDEN = frozenset({".blanketignore", ".templateignore"})
# Opening or reading a file is not a change; counting it would make every scan trigger another.
_READ_EVENTS = frozenset({"opened", "closed_no_write"})


def is_editor_noise(path: Path, root: Path) -> bool:
    """True for editors' temporary and swap files, and for hidden paths under `root`."""
    if any(fnmatch.fnmatchcase(path.name, pattern) for pattern in NOISE_PATTERNS):
        return True
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        parts = (path.name,)
    return any(part.startswith(".") and part not in _KEPT_HIDDEN for part in parts)


class DebouncedWatcher:
    """Call `callback(paths)` once the tree under `root` has been quiet for `delay` seconds.

    `ignore` replaces the default filter (`is_editor_noise`); compose with it if needed.
    """

    def __init__(
        self,
        root: Path,
        callback: Callable[[set[Path]], None],
        *,
        delay: float = 0.05,
        recursive: bool = True,
        ignore: Callable[[Path], bool] | None = None,
    ):
        self.root = Path(root)
        self.callback = callback
        self.delay = delay
        self.recursive = recursive
        self.ignore = ignore or (lambda path: is_editor_noise(path, self.root))
        self._pending: set[Path] = set()
        self._last_event = 0.0
        self._wake = threading.Condition()
        self._stopping = False
        self._observer: Observer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Begin watching; returns at once."""
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="blanket-watch", daemon=True)
        self._thread.start()
        observer = Observer()
        observer.schedule(_Handler(self._on_event), str(self.root), recursive=self.recursive)
        observer.start()
        self._observer = observer

    def stop(self) -> None:
        """Stop watching; a burst still settling is dropped."""
        if self._observer is not None:
            self._observer.stop()
            self._observer.join()
            self._observer = None
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _on_event(self, event: FileSystemEvent) -> None:
        if event.event_type in _READ_EVENTS:
            return
        if event.is_directory and event.event_type == "modified":
            return  # the changes inside the folder arrive as their own events
        paths = {Path(os.fsdecode(p)) for p in (event.src_path, event.dest_path) if p}
        paths = {p for p in paths if not self.ignore(p)}
        if not paths:
            return
        with self._wake:
            self._pending |= paths
            self._last_event = time.monotonic()
            self._wake.notify_all()

    def _run(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self.callback(batch)
            except Exception:
                log.exception("watch_callback_failed", root=str(self.root))

    def _next_batch(self) -> set[Path] | None:
        with self._wake:
            while True:
                if self._stopping:
                    return None
                if not self._pending:
                    self._wake.wait()
                    continue
                quiet_for = time.monotonic() - self._last_event
                if quiet_for >= self.delay:
                    batch, self._pending = self._pending, set()
                    return batch
                self._wake.wait(self.delay - quiet_for)


class _Handler(FileSystemEventHandler):
    def __init__(self, on_event: Callable[[FileSystemEvent], None]):
        self._on_event = on_event

    def on_any_event(self, event: FileSystemEvent) -> None:
        self._on_event(event)
