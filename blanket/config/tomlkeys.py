"""How many dotted parts the longest key of a TOML text has, found without parsing it.

tomllib takes time quadratic in the parts of one dotted key (100,000 parts: 10 s; a key of
number parts, `10.10.10...`, is as slow), so a text is looked over for such a key first.
A small scanner, not a parser: it knows strings (all four kinds, with their escapes and
lines), comments, and where a key stands (at the start of a line, in a `[table]` header, and
after `{` or `,` in an inline table) as opposed to a value (after `=`, inside an array), and
counts the dots between a key's parts there only. Text that is not TOML is left for tomllib
to refuse in its own words."""

from __future__ import annotations

import re

_TOKEN = re.compile(r'"""|\'\'\'|["\'#\n=\[\]{},.]')
_BASIC_END = re.compile(r'(?:[^"\\\n]|\\.)*"')  # the rest of a "..." string, with its quote
_LITERAL_END = re.compile(r"[^'\n]*'")  # the rest of a '...' string, with its quote
# A multi-line string's closing quotes may have one or two more of the same just before them
# (`"""a""""` is `a"`): those are the string's.
_ML_BASIC_END = re.compile(r'(?:[^"\\]|\\.|"(?!""))*"""(?:""?)?', re.DOTALL)
_ML_LITERAL_END = re.compile(r"'''(?:''?)?")


def overlong_key_line(text: str, limit: int) -> int | None:
    """The line of the first key of more than `limit` dotted parts, or None."""
    line, key, header, dots = 1, True, False, 0
    inside: list[str] = []  # the value brackets open: "{" an inline table, "[" an array
    at = 0
    while (found := _TOKEN.search(text, at)) is not None:
        token, at = found.group(), found.end()
        if token == "\n":
            line += 1
            if not inside:
                key, header, dots = True, False, 0
        elif token == "#":
            end = text.find("\n", at)
            at = len(text) if end < 0 else end
        elif token in ('"', "'", '"""', "'''"):
            end = _string_end(text, at, token)
            line += text.count("\n", at, end)
            at = end
        elif token == ".":
            if key or header:
                dots += 1
                if dots >= limit:  # parts are one more than the dots between them
                    return line
        elif token == "=":
            key, dots = False, 0
        elif token == "[":
            if key and not inside and not header:
                header = True
            elif not key:
                inside.append("[")
        elif token == "]":
            if header:
                header, key, dots = False, False, 0
            elif inside and inside[-1] == "[":
                inside.pop()
        elif token == "{":
            inside.append("{")
            key, dots = True, 0
        elif token == "}":
            if inside:
                inside.pop()
            key = False
        elif token == "," and inside and inside[-1] == "{":
            key, dots = True, 0
    return None


def _string_end(text: str, at: int, quote: str) -> int:
    """Where the string opened by `quote` just before `at` ends (after its closing quote);
    the end of the text if it does not."""
    if quote == '"':
        found = _BASIC_END.match(text, at)
        return found.end() if found else _line_end(text, at)
    if quote == "'":
        found = _LITERAL_END.match(text, at)
        return found.end() if found else _line_end(text, at)
    if quote == '"""':
        found = _ML_BASIC_END.match(text, at)
        return found.end() if found else len(text)
    end = text.find("'''", at)
    return _ML_LITERAL_END.match(text, end).end() if end >= 0 else len(text)


def _line_end(text: str, at: int) -> int:
    end = text.find("\n", at)
    return len(text) if end < 0 else end
