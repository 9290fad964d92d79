"""Type inheritance: `extends = "base"` in a type file takes the keys of `types/base.toml`
(which may extend another in turn); the child's own keys win. Tables are merged key by key
(so `[environment.defaults]` adds to the base's), lists and values are replaced (a child's
`tags` or `[[files]]` are its own). `abstract = true` marks a file that is only a base: it is
checked, but no task can be submitted of it, so it may leave out `command`."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blanket.config.checker import Line, parse_toml
from blanket.config.problems import ConfigInvalid, ConfigProblem, ConfigReads, read_config_text
from blanket.config.tasktype import TYPE_NAME

NOT_INHERITED = ("extends", "abstract")  # what a file says of itself alone
MAX_DEPTH = 16


@dataclass(frozen=True)
class Inherited:
    """A type file's data with its bases' keys merged in, and the base files (nearest
    first): the type's version covers their bytes too."""

    data: dict[str, Any]
    bases: tuple[Path, ...]


def merge(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    """`child` over `base`: tables merged key by key, everything else replaced."""
    merged = dict(base)
    for key, value in child.items():
        below = merged.get(key)
        merged[key] = merge(below, value) if isinstance(value, dict) and isinstance(
            below, dict) else value
    return merged


def resolve(path: Path, data: dict[str, Any], problem: Callable[[Line, str], None],
            line: Line, rename: Callable[[dict[str, Any]], dict[str, Any]] = dict,
            check: Callable[[Path], list[ConfigProblem]] = lambda _: [],
            reads: ConfigReads | None = None,
            ) -> Inherited:
    """Follow `extends` from the file at `path` (its TOML `data`) through its bases, each
    a `NAME.toml` beside it; `problem(line, message)` reports, at the child's `extends`
    line, a base that is missing, unreadable, a cycle, or (`check`) has problems of its own
    (the chain is then cut there). `rename` normalises each base's keys (the seed's
    spellings) before they are merged. `reads` gives each base's bytes as first read in this
    build."""
    reads = ConfigReads() if reads is None else reads
    layers = [data]
    bases: list[Path] = []
    current = data
    while "extends" in current:
        name = current["extends"]
        if isinstance(name, str) and name.endswith(".toml"):
            problem(line, f"extends: name the type, not its file: extends = "
                          f"\"{name.removesuffix('.toml')}\"")
            break
        if not isinstance(name, str) or not TYPE_NAME.fullmatch(name):
            problem(line, f"extends: expected the name of a type file beside this one, "
                          f"like \"base\" for {path.parent}/base.toml; got {name!r}")
            break
        base = path.parent / f"{name}.toml"
        chain = [p.stem for p in (path, *bases)] + [name]
        if base == path or base in bases:
            problem(line, f"extends: {' -> '.join(chain)} is a cycle; a type cannot extend "
                          "itself, directly or through its bases")
            break
        if len(bases) >= MAX_DEPTH:
            problem(line, f"extends: more than {MAX_DEPTH} bases ({' -> '.join(chain)}); "
                          "flatten the chain")
            break
        if not base.exists():  # one that is there but no regular file: its read says so
            if base.is_symlink():
                problem(line, f"extends: {base} is a link to {os.readlink(base)}, which is "
                              "missing; point it at a type file or remove it")
                break
            known = sorted(p.stem for p in path.parent.glob("*.toml")
                           if p != path and p.is_file())
            problem(line, f"extends: no type file {name}.toml in {path.parent}; add it or "
                          f"use one of: {', '.join(known) or 'none yet'}")
            break
        try:
            current = rename(parse_toml(read_config_text(base, reads), str(base)))
        except ConfigInvalid as invalid:
            where = invalid.problems[0] if invalid.problems else None
            problem(line, f"extends: base {name!r} cannot be read ({where}); fix that file")
            break
        bases.append(base)
        layers.append(current)
    else:  # the whole chain read, no cycle: the nearest base checked as a type (its own
        # check covers the bases it extends in turn)
        found = check(bases[0]) if bases else []
        if found:
            first = found[0]
            where = f"{Path(first.file).name}:{first.line}" if first.line else \
                Path(first.file).name
            more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
            problem(line, f"extends: base {bases[0].stem!r} has a problem: {where}: "
                          f"{first.message}{more}; fix that file")
            return Inherited(data, ())
    merged: dict[str, Any] = {}
    for layer in reversed(layers[1:]):
        merged = merge(merged, {k: v for k, v in layer.items() if k not in NOT_INHERITED})
    merged = merge(merged, data)
    return Inherited(merged, tuple(bases))
