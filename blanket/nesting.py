"""How deeply a parsed value nests, found without recursing. tomllib builds a table as deep
as a dotted key is long without recursing, and a value nested past Python's recursion limit
breaks whatever walks it later (validation, copying, encoding), so parse_toml refuses it up
front, saying so. (JSON parsers recurse, and refuse such nesting themselves.)"""

from __future__ import annotations

from typing import Any

# Levels of tables and lists in one value. Task requests, type files and workflow results
# nest a handful deep; a hundred is generous and far from the recursion limit (1000).
MAX_DEPTH = 100


def deeper_than(value: Any, limit: int = MAX_DEPTH) -> bool:
    """True when `value` holds dicts or lists more than `limit` levels deep (the value
    itself, if a dict or a list, is level 1)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False
