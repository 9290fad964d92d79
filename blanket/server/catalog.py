"""The catalog: task types and schedules loaded from the config directory, kept current."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from blanket.config.bundles import write_bundle
from blanket.config.checker import header_line, key_line
from blanket.config.problems import ConfigInvalid, ConfigProblem, ConfigReads
from blanket.config.selection import Selection, select_files_with_inputs
from blanket.config.tasktype import TaskType
from blanket.config.tree import audit_tree, merged, needs_audit
from blanket.config.typefile import parse_type_file
from blanket.config.versions import RACY_WINDOW_NS, HashCache, base_paths, version_hash
from blanket.config.watching import DebouncedWatcher
from blanket.config.workflow import Workflow, parse_workflow_file, type_problems
from blanket.envnames import too_big, with_fire_time
from blanket.times import iso_utc

log = structlog.get_logger()

RecordVersion = Callable[[str, str, float], bool]
# What a schedule parser returns names its `type` or `workflow`, its `environment`, and the
# `text` it was parsed from (problems found later point at their line in it).
ScheduleParser = Callable[[Path, str], object]
# (path, size, mtime_ns) of every file and folder a loaded type was built from.
Fingerprint = tuple[tuple[str, int, int], ...]


@dataclass(frozen=True)
class LoadedType:
    """A type as the catalog holds it: the last good definition plus any current problems."""

    name: str
    path: Path
    task_type: TaskType | None
    version: str | None
    loaded_at: float | None
    problems: tuple[ConfigProblem, ...] = ()

    def to_json(self) -> dict:
        return _file_json(self, self.task_type.shown_json() if self.task_type else None,
                          version=self.version)


@dataclass(frozen=True)
class LoadedSchedule:
    """A schedule as the catalog holds it: the last good definition plus any current problems."""

    name: str
    path: Path
    schedule: Any
    loaded_at: float | None
    problems: tuple[ConfigProblem, ...] = ()

    def to_json(self) -> dict:
        return _file_json(self, None if self.schedule is None else self.schedule.to_json())


@dataclass(frozen=True)
class LoadedWorkflow:
    """A workflow as the catalog holds it: the last good definition plus any current
    problems (its own, and steps naming types that are missing)."""

    name: str
    path: Path
    workflow: Workflow | None
    loaded_at: float | None
    problems: tuple[ConfigProblem, ...] = ()

    def to_json(self) -> dict:
        workflow = self.workflow
        return _file_json(self, None if workflow is None else workflow.to_json(),
                          version=None if workflow is None else workflow.version)


def _file_json(loaded: LoadedType | LoadedSchedule | LoadedWorkflow, definition: dict | None,
               **extra: object) -> dict:
    """A config file as the API shows it: name, path, its last good definition, when that
    was loaded, and its current problems."""
    return {"name": loaded.name, "path": str(loaded.path), "definition": definition, **extra,
            "loaded_at": iso_utc(loaded.loaded_at),
            "problems": [p.to_json() for p in loaded.problems]}


@dataclass(frozen=True)
class _Built:
    """A type built in this scan, waiting for its bundle before it is recorded."""

    loaded: LoadedType
    selection: Selection
    fingerprint: Fingerprint | None
    reads: ConfigReads  # the bytes of its file and bases that it was parsed and hashed from


@dataclass
class _FileEntry:
    """A schedule's or workflow's file and what was parsed from it last."""

    path: Path
    parsed: object | None = None
    loaded_at: float | None = None
    parse_problems: tuple[ConfigProblem, ...] = ()
    fingerprint: Fingerprint | None = None


@dataclass
class _State:
    types: dict[str, LoadedType] = field(default_factory=dict)
    bases: dict[str, LoadedType] = field(default_factory=dict)  # abstract: only extended
    fingerprints: dict[str, Fingerprint] = field(default_factory=dict)
    schedules: dict[str, _FileEntry] = field(default_factory=dict)
    loaded_schedules: dict[str, LoadedSchedule] = field(default_factory=dict)
    workflows: dict[str, _FileEntry] = field(default_factory=dict)
    loaded_workflows: dict[str, LoadedWorkflow] = field(default_factory=dict)
    unlisted: list[ConfigProblem] = field(default_factory=list)  # folders that cannot be read
    audited: list[ConfigProblem] = field(default_factory=list)  # what configtree found
    audit_fingerprint: Fingerprint | None = None  # of the folders and files it read


class Catalog:
    """Task types from `config_dir/types/*.toml`, schedules from `config_dir/schedules/` and
    workflows from `config_dir/workflows/`."""

    def __init__(
        self,
        config_dir: Path,
        versions_dir: Path,
        record_version: RecordVersion | None = None,
        schedule_parser: ScheduleParser | None = None,
    ):
        self.config_dir = Path(config_dir)
        self.versions_dir = Path(versions_dir)
        self._record_version = record_version
        self._schedule_parser = schedule_parser
        self._hashes = HashCache()
        self._state = _State()
        self._lock = threading.RLock()
        self._listeners: list[Callable[[], None]] = []
        self._watcher: DebouncedWatcher | None = None

    def get(self, name: str) -> LoadedType | None:
        """The loaded type called `name`, or None."""
        return self._state.types.get(name)

    def types(self) -> list[LoadedType]:
        """Every type, sorted by name."""
        return [self._state.types[n] for n in sorted(self._state.types)]

    def bases(self) -> list[str]:
        """The names of the abstract types (only bases others extend), sorted."""
        return sorted(self._state.bases)

    def base(self, name: str) -> LoadedType | None:
        """The abstract type called `name` (to be shown, never run), or None."""
        return self._state.bases.get(name)

    def schedules(self) -> list[LoadedSchedule]:
        """Every schedule, sorted by name."""
        loaded = self._state.loaded_schedules
        return [loaded[n] for n in sorted(loaded)]

    def schedule(self, name: str) -> LoadedSchedule | None:
        """The loaded schedule called `name`, or None."""
        return self._state.loaded_schedules.get(name)

    def workflows(self) -> list[LoadedWorkflow]:
        """Every workflow, sorted by name."""
        loaded = self._state.loaded_workflows
        return [loaded[n] for n in sorted(loaded)]

    def workflow(self, name: str) -> LoadedWorkflow | None:
        """The loaded workflow called `name`, or None."""
        return self._state.loaded_workflows.get(name)

    def problems(self) -> list[ConfigProblem]:
        """Every current problem in types, schedules, workflows and the rest of the config
        directory."""
        found = [p for t in self.types() for p in t.problems]
        found += [p for t in self._state.bases.values() for p in t.problems]
        found += [p for s in self.schedules() for p in s.problems]
        found += [p for w in self.workflows() for p in w.problems]
        found += self._state.unlisted
        found = merged(found, self._state.audited)
        return sorted(found, key=lambda p: (p.file, p.line or 0))

    def holding(self) -> threading.RLock:
        """Held, no scan runs: no bundle is written and no version becomes current (the
        retention sweep removes unused versions under it)."""
        return self._lock

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call `listener()` after every scan that changed something."""
        self._listeners.append(listener)

    def scan(self, paths: set[Path] | None = None) -> bool:
        """Reload what changed on disk; return whether any type, schedule or problem changed.
        `paths` (from the watcher) names the paths that changed, when known."""
        with self._lock:
            different = self._audit(paths)
            unlisted = [problem for problem in map(_unlisted, self._folders()) if problem]
            different = unlisted != self._state.unlisted or different
            self._state.unlisted = unlisted
            if unlisted:  # keep what was loaded rather than drop every type it holds
                log.warning("config_folder_unreadable", problems=[str(p) for p in unlisted])
            else:
                different = self._scan_types() or different
                different = self._scan_workflows() or different  # schedules may name them
                if self._schedule_parser is not None:
                    different = self._scan_schedules() or different
        if different:
            self._notify()
        return different

    def _audit(self, paths: set[Path] | None) -> bool:
        """Look over the whole directory again if `paths` could change what it finds;
        return whether the findings changed."""
        state = self._state
        before = state.audited
        if paths is None:
            needed = state.audit_fingerprint is None or not _still(state.audit_fingerprint)
        else:
            needed = needs_audit(paths, {p.file for p in before})
        if needed:
            audit = audit_tree(self.config_dir)
            state.audited, state.audit_fingerprint = audit.problems, _fingerprint(audit.inputs)
        return before != state.audited

    def _folders(self) -> list[Path]:
        folders = [self.config_dir / "types"]
        if self._schedule_parser is not None:
            folders.append(self.config_dir / "schedules")
        folders.append(self.config_dir / "workflows")
        return folders

    def start_watching(self) -> None:
        """Rescan whenever something under the config directory changes."""
        if self._watcher is None:
            # A fresh setup may have no config directory yet: make it, so files saved
            # into it later are seen.
            self.config_dir.mkdir(parents=True, exist_ok=True)
            self._watcher = DebouncedWatcher(self.config_dir, self.scan)
            self._watcher.start()

    def stop_watching(self) -> None:
        """Stop the watcher started by `start_watching`."""
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None

    def _notify(self) -> None:
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:
                log.exception("catalog_listener_failed")

    def _scan_types(self) -> bool:
        found = _toml_files(self.config_dir / "types")
        old = self._state.types
        old_bases = self._state.bases
        current: dict[str, LoadedType] = {}
        bases: dict[str, LoadedType] = {}
        fingerprints: dict[str, Fingerprint] = {}
        built: list[_Built] = []
        for name, path in found.items():
            loaded, fingerprint, fresh = self._load_type(name, path)
            if loaded.task_type is not None and loaded.task_type.abstract:
                bases[name] = loaded  # checked and shown with its problems, never run
                if fingerprint is not None:
                    fingerprints[name] = fingerprint
                continue
            current[name] = loaded
            if fresh is not None:
                built.append(_Built(loaded, fresh[0], fingerprint, fresh[1]))
            elif fingerprint is not None:
                fingerprints[name] = fingerprint
        for item, failure in self._write_bundles(built):
            name = item.loaded.name
            if failure is not None:
                path = item.loaded.path
                problem = ConfigProblem(str(path), f"cannot bundle this type: {failure}")
                current[name] = _with_problems(name, path, old.get(name), (problem,))
                continue
            if item.fingerprint is not None:
                fingerprints[name] = item.fingerprint
            if item.loaded.version != _version(old.get(name)) and self._record_version:
                self._record_version(item.loaded.version, name, item.loaded.loaded_at)
        new = [n for n, t in current.items() if t.version and t.version != _version(old.get(n))]
        if new:
            log.info("types_loaded", count=len(new), types=new[:10])
        changed = current != old or bases != old_bases
        self._state.types = current
        self._state.bases = bases
        self._state.fingerprints = fingerprints
        return changed

    def _write_bundles(self, built: list[_Built]) -> list[tuple[_Built, OSError | None]]:
        """Write each built type's bundle if missing, noting any that could not be written."""
        results: list[tuple[_Built, OSError | None]] = []
        for item in built:
            loaded = item.loaded
            try:
                assert loaded.task_type is not None
                bases = [(base.name, item.reads.data(base))
                         for base in base_paths(loaded.path, loaded.task_type)]
                write_bundle(self.versions_dir, loaded.version, item.reads.data(loaded.path),
                             item.selection.files, bases, item.reads.stat)
            except OSError as exc:
                results.append((item, exc))
            else:
                results.append((item, None))
        return results

    def _load_type(
        self, name: str, path: Path
    ) -> tuple[LoadedType, Fingerprint | None, tuple[Selection, ConfigReads] | None]:
        """The type in `path`, reusing the loaded one when nothing it depends on changed.

        Returns the selection and the bytes read too when the type was built, so its
        bundle can be written of the bytes it was parsed and hashed from.
        """
        previous = self._state.types.get(name) or self._state.bases.get(name)
        if previous is not None and previous.path != path:
            previous = None
        fingerprint = self._state.fingerprints.get(name)
        if previous is not None and fingerprint is not None and _still(fingerprint):
            return previous, fingerprint, None
        try:
            reads = ConfigReads()
            task_type, selection, version = self._build(name, path, reads)
        except ConfigInvalid as invalid:
            return _with_problems(name, path, previous, tuple(invalid.problems)), None, None
        except OSError as exc:
            return _with_problems(name, path, previous, (unreadable(path, exc),)), None, None
        except Exception as exc:  # a bug: one type must not stop the others from loading
            log.exception("type_load_failed", path=str(path))
            return _with_problems(name, path, previous, (_bug(path, exc),)), None, None
        fingerprint = _fingerprint([path, *base_paths(path, task_type), *selection.inputs,
                                    *(f.abspath for f in selection.files)], reads)
        same = previous is not None and previous.version == version
        loaded_at = previous.loaded_at if same and previous else time.time()
        loaded = LoadedType(name, path, task_type, version, loaded_at, ())
        return loaded, fingerprint, (selection, reads)

    def _build(self, name: str, path: Path,
               reads: ConfigReads) -> tuple[TaskType, Selection, str]:
        task_type = parse_type_file(path, name, reads)
        selection = select_files_with_inputs(path, task_type, self.config_dir)
        version = version_hash(path, task_type, selection.files, self._hashes, reads)
        return task_type, selection, version

    def _scan_schedules(self) -> bool:
        assert self._schedule_parser is not None
        found = _toml_files(self.config_dir / "schedules")
        entries = {name: self._load_schedule(name, path) for name, path in found.items()}
        self._state.schedules = entries
        loaded = {name: self._with_type_check(name, entry) for name, entry in entries.items()}
        changed = loaded != self._state.loaded_schedules
        self._state.loaded_schedules = loaded
        return changed

    def _scan_workflows(self) -> bool:
        found = _toml_files(self.config_dir / "workflows")
        entries = {name: self._load_entry(self._state.workflows.get(name), name, path,
                                          parse_workflow_file)
                   for name, path in found.items()}
        self._state.workflows = entries
        loaded = {name: self._with_step_types(name, entry) for name, entry in entries.items()}
        changed = loaded != self._state.loaded_workflows
        self._state.loaded_workflows = loaded
        return changed

    def _workflow_names(self) -> set[str]:
        return {name for name, w in self._state.loaded_workflows.items()
                if w.workflow is not None}

    def _with_step_types(self, name: str, entry: _FileEntry) -> LoadedWorkflow:
        workflow = entry.parsed
        problems = entry.parse_problems
        if isinstance(workflow, Workflow) and not entry.parse_problems:
            types = {n: t.task_type for n, t in self._state.types.items()
                     if t.task_type is not None}
            problems += tuple(type_problems(workflow, str(entry.path), workflow.text, types,
                                            set(self._state.bases)))
        return LoadedWorkflow(name, entry.path, workflow, entry.loaded_at, problems)

    def _load_schedule(self, name: str, path: Path) -> _FileEntry:
        assert self._schedule_parser is not None
        return self._load_entry(self._state.schedules.get(name), name, path,
                                self._schedule_parser)

    def _load_entry(self, previous: _FileEntry | None, name: str, path: Path,
                    parser: Callable[[Path, str], object]) -> _FileEntry:
        """A schedule's or workflow's file, parsed again only when it changed."""
        if previous is not None and previous.path != path:
            previous = None
        if previous and previous.fingerprint and _still(previous.fingerprint):
            return previous
        entry = _FileEntry(path)
        if previous is not None:
            entry.parsed, entry.loaded_at = previous.parsed, previous.loaded_at
        try:
            entry.parsed = parser(path, name)
        except ConfigInvalid as invalid:
            entry.parse_problems = tuple(invalid.problems)
            return entry
        except Exception as exc:  # a bug: one file must not stop the others from loading
            log.exception("config_file_load_failed", path=str(path))
            entry.parse_problems = (_bug(path, exc),)
            return entry
        entry.loaded_at = time.time()
        entry.fingerprint = _fingerprint([path])
        return entry

    def _with_type_check(self, name: str, entry: _FileEntry) -> LoadedSchedule:
        problems = entry.parse_problems + _missing_type(entry, set(self._state.types),
                                                        set(self._state.bases))
        problems += _missing_workflow(entry, self._workflow_names())
        wanted = getattr(entry.parsed, "type", None)
        loaded = self._state.types.get(wanted) if isinstance(wanted, str) else None
        problems += _environment_with_defaults(entry, loaded and loaded.task_type)
        return LoadedSchedule(name, entry.path, entry.parsed, entry.loaded_at, problems)


def _parsed_text(entry: _FileEntry) -> str:
    """The text `entry` was parsed from (the file may have changed or gone since)."""
    text = getattr(entry.parsed, "text", "")
    return text if isinstance(text, str) else ""


def _environment_with_defaults(entry: _FileEntry,
                               task_type: TaskType | None) -> tuple[ConfigProblem, ...]:
    """A schedule whose `[environment]` and its type's defaults come to more than a task
    may be given: each fire would be refused, so it is a problem of the file."""
    environment = getattr(entry.parsed, "environment", None)
    if not environment or task_type is None:
        return ()
    defaults = task_type.defaults
    if too_big(with_fire_time(environment)) is not None:
        return ()  # over without the defaults: the file's own problem says so
    if (problem := too_big(with_fire_time({**defaults, **environment}), defaults)) is None:
        return ()
    text = _parsed_text(entry)
    line = key_line(text, "environment") or header_line(text, "environment")
    return (ConfigProblem(str(entry.path), f"environment: with the defaults of type "
                                           f"{task_type.name!r}, {problem}", line),)


def _missing_workflow(entry: _FileEntry, names: set[str]) -> tuple[ConfigProblem, ...]:
    wanted = getattr(entry.parsed, "workflow", None)
    if entry.parsed is None or wanted is None or wanted in names:
        return ()
    line = key_line(_parsed_text(entry), "workflow")
    known = ", ".join(sorted(names)) or "none yet"
    return (ConfigProblem(str(entry.path), f"workflow: no workflow named {wanted!r}; add "
                                           f"workflows/{wanted}.toml or use one of: {known}",
                          line),)


def unreadable(type_path: Path, exc: OSError) -> ConfigProblem:
    """A file the type uses cannot be read (gone meanwhile, a link loop, no permission)."""
    file = os.fsdecode(exc.filename) if exc.filename is not None else str(type_path)
    return ConfigProblem(file, f"cannot read this file, which type {type_path.stem!r} uses: "
                               f"{exc.strerror or exc}; fix or remove it, or exclude it in "
                               ".blanketignore")


def _bug(path: Path, exc: Exception) -> ConfigProblem:
    return ConfigProblem(str(path), f"blanket failed on this file ({type(exc).__name__}: "
                                    f"{exc}); this is a bug in blanket: please report it")


def _version(loaded: LoadedType | None) -> str | None:
    return loaded.version if loaded else None


def _with_problems(
    name: str, path: Path, previous: LoadedType | None, problems: tuple[ConfigProblem, ...]
) -> LoadedType:
    """A broken type keeps its last good definition and version, and carries the problems."""
    if previous is None:
        return LoadedType(name, path, None, None, None, problems)
    return LoadedType(name, path, previous.task_type, previous.version, previous.loaded_at,
                      problems)


def _missing_type(entry: _FileEntry, type_names: set[str],
                  abstract: set[str] | frozenset[str] = frozenset()) -> tuple[ConfigProblem, ...]:
    wanted = getattr(entry.parsed, "type", None)
    if entry.parsed is None or wanted is None or wanted in type_names:
        return ()
    line = key_line(_parsed_text(entry), "type")
    known = ", ".join(sorted(type_names)) or "none yet"
    if wanted in abstract:
        return (ConfigProblem(str(entry.path), f"type: {wanted!r} is abstract, only a base "
                                               f"other types extend; name one of: {known}",
                              line),)
    return (ConfigProblem(str(entry.path), f"type: no task type named {wanted!r}; add "
                                           f"types/{wanted}.toml or use one of: {known}", line),)


def _unlisted(folder: Path) -> ConfigProblem | None:
    """A problem when `folder` exists but cannot be listed (a missing one holds nothing)."""
    try:
        _toml_files(folder)
    except OSError as exc:
        return ConfigProblem(str(folder), f"cannot list this folder: {exc.strerror or exc}; "
                                          "check its permissions")
    return None


def _toml_files(folder: Path) -> dict[str, Path]:
    """NAME -> path for every `NAME.toml` file directly in `folder` (none if it is missing);
    OSError when it exists but cannot be listed."""
    try:
        names = sorted(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return {}
    # Anything but a folder is listed: a link that leads nowhere or loops is then reported
    # as a file that cannot be read, not skipped in silence.
    return {name[:-5]: folder / name for name in names
            if name.endswith(".toml") and not name.startswith(".")
            and not (folder / name).is_dir()}


def _fingerprint(paths: list[Path], reads: ConfigReads | None = None) -> Fingerprint | None:
    """Sizes and mtimes of `paths`, or None when one was touched too recently to trust.

    A file in `reads` counts with the size and mtime it had when it was read: one saved
    again since then no longer matches, so the next scan builds it again."""
    trusted_before = time.time_ns() - RACY_WINDOW_NS
    entries = []
    for path in paths:
        known = reads.stat(path) if reads is not None else None
        if known is not None:
            size, mtime_ns = known
        else:
            try:
                stat = os.stat(path)
            except OSError:
                entries.append((str(path), -1, -1))
                continue
            size, mtime_ns = stat.st_size, stat.st_mtime_ns
        if mtime_ns >= trusted_before:
            return None
        entries.append((str(path), size, mtime_ns))
    return tuple(entries)


def _still(fingerprint: Fingerprint) -> bool:
    """Whether every path in `fingerprint` still has the recorded size and mtime."""
    for path, size, mtime in fingerprint:
        try:
            stat = os.stat(path)
        except OSError:
            if size != -1:
                return False
            continue
        if (stat.st_size, stat.st_mtime_ns) != (size, mtime):
            return False
    return True


def validate_config_dir(
    config_dir: Path, schedule_parser: ScheduleParser | None = None
) -> list[ConfigProblem]:
    """Every problem `blanket validate DIR` reports; writes nothing."""
    config_dir = Path(config_dir)
    if not config_dir.is_dir():
        return [ConfigProblem(str(config_dir), "config directory not found; create it with "
                                               "`blanket init` or pass the right path")]
    folders = [config_dir / "types", config_dir / "workflows"] + (
        [config_dir / "schedules"] if schedule_parser else [])
    problems = [problem for problem in map(_unlisted, folders) if problem]
    if problems:
        return problems
    type_names, abstract = set(), set()
    parsed_types: dict[str, TaskType] = {}
    for name, path in _toml_files(config_dir / "types").items():
        type_names.add(name)
        try:
            task_type = parse_type_file(path, name)
            parsed_types[name] = task_type
            if task_type.abstract:
                type_names.discard(name)  # a base alone: no schedule can run it
                abstract.add(name)
            select_files_with_inputs(path, task_type, config_dir)
        except ConfigInvalid as invalid:
            problems.extend(invalid.problems)
        except OSError as exc:
            problems.append(unreadable(path, exc))
        except Exception as exc:  # a bug: report it with the file, and check the rest
            problems.append(_bug(path, exc))
    workflow_names = set()
    for name, path in _toml_files(config_dir / "workflows").items():
        try:
            workflow = parse_workflow_file(path, name)
        except ConfigInvalid as invalid:
            problems.extend(invalid.problems)
            continue
        except Exception as exc:
            problems.append(_bug(path, exc))
            continue
        workflow_names.add(name)
        usable = {n: t for n, t in parsed_types.items() if n in type_names}
        problems.extend(type_problems(workflow, str(path), workflow.text, usable, abstract))
    if schedule_parser is not None:
        for name, path in _toml_files(config_dir / "schedules").items():
            entry = _FileEntry(path)
            try:
                entry.parsed = schedule_parser(path, name)
            except ConfigInvalid as invalid:
                problems.extend(invalid.problems)
            except Exception as exc:
                problems.append(_bug(path, exc))
            problems.extend(_missing_type(entry, type_names, abstract))
            problems.extend(_missing_workflow(entry, workflow_names))
            wanted = getattr(entry.parsed, "type", None)
            problems.extend(_environment_with_defaults(
                entry, parsed_types.get(wanted) if isinstance(wanted, str) else None))
    problems = merged(problems, audit_tree(config_dir).problems)
    return sorted(problems, key=lambda p: (p.file, p.line or 0))
