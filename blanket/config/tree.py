"""A look over the whole config directory for what no type or schedule reports itself: an
ignore file no type reads, a link that loops or leads nowhere, a name that is not UTF-8, a
folder that cannot be read."""

from __future__ import annotations

import fnmatch
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from blanket.config.ignorefile import read_ignore_file
from blanket.config.problems import ConfigInvalid, ConfigProblem
from blanket.config.selection import IGNORE_FILE, NOT_UTF8_NAME
from blanket.config.templating import TEMPLATEIGNORE
from blanket.config.watching import NOISE_PATTERNS
from blanket.jsontext import is_utf8

IGNORE_FILES = frozenset({IGNORE_FILE, TEMPLATEIGNORE})
_NOISE = re.compile("|".join(fnmatch.translate(p) for p in NOISE_PATTERNS))


@dataclass
class Audit:
    """What `audit_tree` found, and the folders and ignore files it read to find it (their
    change is what could change the findings)."""

    problems: list[ConfigProblem] = field(default_factory=list)
    inputs: list[Path] = field(default_factory=list)


def audit_tree(root: Path) -> Audit:
    """Every such problem under `root` (hidden paths and editors' files are skipped, as the
    watcher skips them; links are not followed)."""
    audit = Audit()
    _audit_folder(os.path.abspath(root), audit)
    return audit


def _audit_folder(folder: str, audit: Audit) -> None:
    problems = audit.problems
    audit.inputs.append(Path(folder))
    try:
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda e: e.name)
    except OSError as exc:
        problems.append(ConfigProblem(folder, f"cannot read this folder: {exc.strerror or exc}; "
                                              "check its permissions"))
        return
    for entry in entries:
        name = entry.name
        if (name.startswith(".") and name not in IGNORE_FILES) or _NOISE.match(name):
            continue
        if not name.isascii() and not is_utf8(name):
            problems.append(ConfigProblem(entry.path, NOT_UTF8_NAME))
        if entry.is_symlink():
            try:
                os.stat(entry.path)
            except OSError as exc:
                problems.append(ConfigProblem(entry.path, "this link cannot be followed: "
                                              f"{exc.strerror or exc}; fix or remove it"))
        elif entry.is_dir(follow_symlinks=False):
            _audit_folder(entry.path, audit)
        elif name in IGNORE_FILES:
            audit.inputs.append(Path(entry.path))
            try:
                read_ignore_file(Path(entry.path))
            except ConfigInvalid as invalid:
                problems.extend(invalid.problems)



def needs_audit(changed: set[Path], reported: set[str]) -> bool:
    """Whether a change among `changed` paths could add or clear a problem `audit_tree`
    finds (`reported`: the files of the problems it found last time)."""
    for path in changed:
        text = str(path)
        if path.name in IGNORE_FILES or text in reported or path.is_symlink():
            return True
        if not is_utf8(text):
            return True
    return False


def merged(own: list[ConfigProblem], found: list[ConfigProblem]) -> list[ConfigProblem]:
    """`own` (the types' and schedules' problems) plus what the audit found that they do
    not already report, by file and line."""
    seen = {(os.path.abspath(p.file), p.line) for p in own}
    return own + [p for p in found if (os.path.abspath(p.file), p.line) not in seen]
