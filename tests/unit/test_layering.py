"""The rules of the architecture that the code itself can show: which modules may import
what, and who reaches the store. Each rule is a row of RULES; add rows as the design grows."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Rule:
    """Modules matching `files` (globs from the project root, minus `unless`) may not import
    a module under any of `imports`, nor reach an attribute named in `attributes`."""

    why: str
    files: tuple[str, ...]
    imports: tuple[str, ...] = ()
    attributes: tuple[str, ...] = ()
    unless: tuple[str, ...] = ()

    def modules(self) -> list[Path]:
        excluded = {p for glob in self.unless for p in ROOT.glob(glob)}
        return sorted({p for glob in self.files for p in ROOT.glob(glob)} - excluded)


RULES = (
    Rule("routes parse a request, call a service verb and shape the answer; the store is "
         "the services'", files=("blanket/server/api/**/*.py",), imports=("blanket.store",),
         attributes=("store",)),
    Rule("a worker talks to the server over HTTP only: it loads nothing of the server's or "
         "the store's", files=("blanket/worker/**/*.py",),
         imports=("blanket.store", "blanket.server")),
    Rule("the server starts workers as processes; it takes the task directory's names from "
         "blanket.taskdir, not from the worker's code", files=("blanket/server/**/*.py",),
         imports=("blanket.worker",)),
    Rule("what people write (blanket/config/) means the same to the server and a worker: it "
         "knows neither, nor the store", files=("blanket/config/**/*.py",),
         imports=("blanket.server", "blanket.worker", "blanket.store")),
    Rule("the shared modules at the top (records, protocol, layout, client, transport) are "
         "the server's and the worker's common ground: they load neither side",
         files=("blanket/*.py",), unless=("blanket/__main__.py", "blanket/cli.py"),
         imports=("blanket.server", "blanket.worker", "blanket.store")),
    Rule("backups read the data dir and the store on the server's machine; exports read "
         "the API only, from any machine", files=("blanket/backup/**/*.py",),
         imports=("blanket.server", "blanket.worker")),
    Rule("an export works from any machine with a viewer token: the API only",
         files=("blanket/backup/export.py",), imports=("blanket.store",)),
    Rule("SQL lives in blanket/store/: no database driver elsewhere",
         files=("blanket/**/*.py",), unless=("blanket/store/**/*.py",),
         imports=("sqlite3", "psycopg", "psycopg2", "psycopg_pool")),
)


def imported_names(tree: ast.Module, module: str) -> list[tuple[int, str]]:
    """(line, dotted name) of everything `tree` imports; `module` is its own dotted name
    (relative imports are resolved against it). `from a import b` yields a.b, as b may be
    a module."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".")[:-node.level]
                base = ".".join(package + ([base] if base else []))
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def violations(source: str, module: str, rule: Rule) -> list[str]:
    """What in `source` (the module named `module`) breaks `rule`, one line each."""
    tree = ast.parse(source)
    found = [f"line {line}: imports {name}" for line, name in imported_names(tree, module)
             if any(name == p or name.startswith(p + ".") for p in rule.imports)]
    found += [f"line {node.lineno}: reaches .{node.attr}" for node in ast.walk(tree)
              if isinstance(node, ast.Attribute) and node.attr in rule.attributes]
    return sorted(set(found))


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.files[0])
def test_the_code_keeps_the_rule(rule: Rule):
    broken = [f"{path.relative_to(ROOT)} {v}" for path in rule.modules()
              for v in violations(path.read_text(), module_name(path), rule)]
    assert not broken, f"{rule.why}:\n" + "\n".join(broken)


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.files[0])
def test_every_rule_applies_to_some_module(rule: Rule):
    """A rule whose globs match nothing (the modules moved) would pass without checking."""
    for glob in rule.files:
        assert any(ROOT.glob(glob)), f"no module matches {glob}; update the rule"


API = RULES[0]


@pytest.mark.parametrize("source", [
    "import blanket.store",
    "import blanket.store.base as base",
    "from blanket.store.base import Store",
    "from blanket.store import open_store",
    "from blanket import store",
    "from ...store import base",
    "def f(s):\n    return s.store.get_task(1)",
    "def f(services):\n    g(services.store)",
])
def test_a_route_module_reaching_the_store_is_caught(source: str):
    assert violations(source, "blanket.server.api.tasks", API)


@pytest.mark.parametrize("source", [
    "from blanket.models import Task",
    "from blanket.storage_notes import x",  # a name that merely starts the same
    "import blanket.stores",
    "def f(s):\n    return s.tasks.get(1)",
])
def test_what_a_route_module_may_do_is_not_caught(source: str):
    assert not violations(source, "blanket.server.api.tasks", API)
