"""Which files a type's version covers: its `[[files]]` sections resolved against the config
tree, honouring `.blanketignore` files, with every path whose change could change the choice."""

from __future__ import annotations

import glob
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pathspec

from blanket.config.ignorefile import read_ignore_file
from blanket.config.problems import ConfigInvalid, ConfigProblem
from blanket.config.tasktype import FileSection, TaskType
from blanket.config.templating import TEMPLATEIGNORE
from blanket.config.typefile import compile_patterns, resolve_src
from blanket.jsontext import is_utf8

IGNORE_FILE = ".blanketignore"
NOT_UTF8_NAME = "the name is not UTF-8; rename it (or exclude it in .blanketignore)"
# A file changed within this window of being read may change again within the same


@dataclass(frozen=True)
class SelectedFile:
    """One file a `[[files]]` section selects; `relpath` is relative to the section's base."""

    section: int
    relpath: str
    abspath: Path


@dataclass(frozen=True)
class Selection:
    """Selected files plus every path whose change could change the selection."""

    files: tuple[SelectedFile, ...]
    inputs: tuple[Path, ...]


def default_root(type_path: Path) -> Path:
    """The config root for a type file: the folder holding `types/`, else the file's folder."""
    folder = type_path.parent
    return folder.parent if folder.name == "types" else folder


def select_files(
    type_path: Path, task_type: TaskType, root: Path | None = None
) -> list[SelectedFile]:
    """Every file the type's `[[files]]` sections select, in section then path order."""
    return list(select_files_with_inputs(type_path, task_type, root).files)


def select_files_with_inputs(
    type_path: Path, task_type: TaskType, root: Path | None = None
) -> Selection:
    """Like `select_files`, also naming the folders and ignore files the selection read."""
    root = Path(os.path.abspath(root if root is not None else default_root(type_path)))
    rules = _IgnoreRules()
    base_dir = Path(os.path.abspath(type_path.parent))
    files: list[SelectedFile] = []
    for index, section in enumerate(task_type.files):
        files.extend(_select_section(index, section, base_dir, root, rules))
    inputs = tuple(Path(p) for p in sorted(rules.folders | rules.ignore_files))
    selection = Selection(tuple(files), inputs)
    _check_selection(task_type, selection)
    return selection


def _check_selection(task_type: TaskType, selection: Selection) -> None:
    """Refuse names a bundle cannot carry, and `.templateignore` files that would fail the
    worker, each as a problem of its own file."""
    problems: list[ConfigProblem] = []
    for item in selection.files:
        if not is_utf8(item.relpath):
            problems.append(ConfigProblem(str(item.abspath), NOT_UTF8_NAME))
        elif item.relpath == TEMPLATEIGNORE and task_type.files[item.section].render:
            try:
                read_ignore_file(item.abspath)
            except ConfigInvalid as invalid:
                problems.extend(invalid.problems)
    if problems:
        raise ConfigInvalid(problems)


def _select_section(
    index: int, section: FileSection, base_dir: Path, root: Path, rules: _IgnoreRules
) -> list[SelectedFile]:
    full = str(resolve_src(base_dir, section.src))
    if glob.has_magic(section.src):
        base = _glob_base(full)
        loops = rules.walk_folders(base, _top(base, root))
        if loops and "**" in section.src:
            raise ConfigInvalid([ConfigProblem(link, f"this link points to its own folder or "
                                               f"one above: the glob {section.src!r} would "
                                               "follow it without end; remove the link or "
                                               "write the glob without **") for link in loops])
        found = _glob_matches(full, base, _top(base, root), rules)
    elif os.path.isdir(full):
        base = full.rstrip(os.sep)
        found = rules.walk_files(base, _top(base, root))
    else:
        base = os.path.dirname(full)
        top = _top(base, root)
        rules.note_chain(base, top)
        found = {} if rules.ignored(full, top, False) else {os.path.basename(full): full}
    keep = _section_filter(section)
    selected = [SelectedFile(index, rel, Path(found[rel])) for rel in sorted(found) if keep(rel)]
    odd = [problem for item in selected if (problem := _not_regular(item.abspath))]
    if odd:
        raise ConfigInvalid(odd)
    return selected


def _not_regular(path: Path) -> ConfigProblem | None:
    """A problem when `path` (followed if a link) is a FIFO, a socket or a device: reading
    one would hang the scan or never end (a link to /dev/zero)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None  # gone or unreadable: the hash says so, as for any file
    if stat.S_ISREG(mode):
        return None
    kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else \
        "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file"
    return ConfigProblem(os.path.normpath(path), f"this file is {kind}, which a type cannot "
                         "carry: a type's files must be regular files; remove it or exclude it "
                         "in .blanketignore")


def _top(base: str, root: Path) -> str:
    """Where ignore files start to apply: the config root, or the base when outside it."""
    top = str(root)
    return top if base == top or base.startswith(top + os.sep) else base


def _glob_base(pattern: str) -> str:
    """The leading folders of a glob pattern that hold no wildcard."""
    plain: list[str] = []
    for part in Path(pattern).parts[:-1]:
        if glob.has_magic(part):
            break
        plain.append(part)
    return os.path.join(*plain) if plain else "."


def _glob_matches(pattern: str, base: str, top: str, rules: _IgnoreRules) -> dict[str, str]:
    found: dict[str, str] = {}
    for match in glob.glob(pattern, recursive=True):
        if os.path.isdir(match):
            for path in rules.walk_files(match.rstrip(os.sep), top).values():
                found[_rel(path, base)] = path
        elif (
            os.path.isfile(match)
            and os.path.basename(match) != IGNORE_FILE
            and not rules.ignored(match, top, False)
        ):
            found[_rel(match, base)] = match
    return found


def _rel(path: str, base: str) -> str:
    return os.path.relpath(path, base).replace(os.sep, "/")


def _section_filter(section: FileSection) -> Callable[[str], bool]:
    include = compile_patterns(section.include) if section.include else None
    exclude = compile_patterns(section.exclude) if section.exclude else None

    def keep(rel: str) -> bool:
        if include is not None and not include.match_file(rel):
            return False
        return exclude is None or not exclude.match_file(rel)

    return keep


class _IgnoreRules:
    """`.blanketignore` files read as git reads `.gitignore`: each applies to its subtree."""

    def __init__(self) -> None:
        self._specs: dict[str, pathspec.GitIgnoreSpec | None] = {}
        self._folder_ignored: dict[tuple[str, str], bool] = {}
        self._active_specs: dict[tuple[str, str], list[tuple[str, pathspec.GitIgnoreSpec]]] = {}
        self.folders: set[str] = set()
        self.ignore_files: set[str] = set()

    def _spec(self, folder: str) -> pathspec.GitIgnoreSpec | None:
        if folder not in self._specs:
            path = os.path.join(folder, IGNORE_FILE)
            self.ignore_files.add(path)
            self._specs[folder] = read_ignore_file(Path(path))
        return self._specs[folder]

    def _chain(self, folder: str, top: str) -> list[str]:
        """Folders from `top` down to `folder`, both included."""
        chain = [folder]
        while folder != top:
            parent = os.path.dirname(folder)
            if parent == folder:
                break
            chain.append(parent)
            folder = parent
        return chain[::-1]

    def note_chain(self, folder: str, top: str) -> None:
        """Record the ignore files that apply in `folder`, so editing one is noticed."""
        for each in self._chain(folder, top):
            self._spec(each)

    def ignored(self, path: str, top: str, is_dir: bool) -> bool:
        """Whether `path` is ignored by the ignore files from `top` down to its folder."""
        parent = os.path.dirname(path)
        if parent != top and len(parent) > len(top) and self.folder_ignored(parent, top):
            return True
        result = False
        suffix = "/" if is_dir else ""
        for folder, spec in self._active(parent, top):
            rel = path[len(folder) + 1:].replace(os.sep, "/") + suffix
            verdict = spec.check_file(rel).include
            if verdict is not None:
                result = verdict
        return result

    def _active(self, folder: str, top: str) -> list[tuple[str, pathspec.GitIgnoreSpec]]:
        """The ignore files that apply inside `folder`, outermost first."""
        key = (folder, top)
        if key not in self._active_specs:
            chain = ((each, self._spec(each)) for each in self._chain(folder, top))
            self._active_specs[key] = [(each, spec) for each, spec in chain if spec is not None]
        return self._active_specs[key]

    def folder_ignored(self, folder: str, top: str) -> bool:
        key = (folder, top)
        if key not in self._folder_ignored:
            self._folder_ignored[key] = self.ignored(folder, top, True)
        return self._folder_ignored[key]

    def walk_files(self, base: str, top: str) -> dict[str, str]:
        """Files under `base` not ignored, keyed by path relative to `base`."""
        found: dict[str, str] = {}
        if base != top and len(base) > len(top) and self.folder_ignored(base, top):
            return found
        self.note_chain(base, top)
        for folder, dirs, names in os.walk(base):
            self.folders.add(folder)
            self._spec(folder)
            dirs[:] = sorted(d for d in dirs
                             if not self.folder_ignored(os.path.join(folder, d), top))
            for name in names:
                path = os.path.join(folder, name)
                if name != IGNORE_FILE and not self.ignored(path, top, False):
                    found[path[len(base) + 1:].replace(os.sep, "/")] = path
        return found

    def walk_folders(self, base: str, top: str) -> list[str]:
        """Note every folder under `base`, so a new match under any of them is noticed.
        Returns the links to folders that hold them (which `**` would follow forever)."""
        self.note_chain(base, top)
        loops = []
        for folder, dirs, _names in os.walk(base):
            self.folders.add(folder)
            self._spec(folder)
            real = os.path.realpath(folder)
            for name in dirs:
                link = os.path.join(folder, name)
                if os.path.islink(link):
                    target = os.path.realpath(link)
                    if real == target or real.startswith(target.rstrip(os.sep) + os.sep):
                        loops.append(link)
        return loops

