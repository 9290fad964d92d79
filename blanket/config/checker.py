"""The one checker behind every config file (type files, schedule files, inbox task files):
TOML syntax errors with their line, unknown keys with a suggestion, and value checks, each
kind of problem worded one way. A file's own checker subclasses Checker and adds its rules."""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Callable, Iterable
from typing import Any

from blanket.config.problems import ConfigInvalid, ConfigProblem
from blanket.config.tomlkeys import overlong_key_line
from blanket.durations import format_duration, parse_duration
from blanket.envnames import ENV_NAME, too_long
from blanket.nesting import MAX_DEPTH, deeper_than

MAX_INT = 2**31 - 1  # retries, weight, max_missed...: larger is a typo, and overflows columns
# Characters in a string value. Values reach the database, a worker's environment, HTTP
# answers and logs: larger is a mistake (a file pasted in), not a setting.
MAX_STRING = 4096  # names, paths, URLs, cron lines, expressions (PATH_MAX is 4096 bytes)
MAX_DESCRIPTION = 16_384  # a description: a page of prose
MAX_COMMAND = 262_144  # a command may be a whole script; a long one runs from a file
# The bound of a string by its key's last part (any other: MAX_STRING), in every file kind.
_STRING_BOUNDS = {"command": MAX_COMMAND, "description": MAX_DESCRIPTION}
# Seconds in a duration. A year: no timeout, estimate or `every` is longer, and `now +` a
# year is a date like any other (times.py shows moments up to the year 9999; a wait of
# more than threading.TIMEOUT_MAX, about 292 years, raises OverflowError).
MAX_DURATION = 366 * 86400.0
MAX_RETRY_DELAY = 7 * 86400.0  # between a task's attempts, as a submission may ask (intake)
MAX_KEEP = 100 * 365 * 86400.0  # how long ended tasks are kept: a century is "for ever"

# tomllib takes time quadratic in the parts of one dotted key (a key of 100,000 parts takes
# 10 s), and the table it makes nests as deep: a key of more parts than this is refused
# before parsing (config/tomlkeys.py).
MAX_KEY_PARTS = 1000

_LONGEST_DURATION = 100  # characters: "1d2h3m4s" needs a handful; more is no duration
_TOML_POSITION = re.compile(r"\(at line (\d+), column \d+\)")
_TYPE_NAMES = {str: "a string", bool: "a boolean", int: "an integer", float: "a number",
               list: "a list", dict: "a table"}

Line = int | None


def parse_toml(text: str, file: str) -> dict[str, Any]:
    """The TOML document in `text`; ConfigInvalid says where its syntax is wrong, or that it
    nests deeper than MAX_DEPTH levels."""
    line = overlong_key_line(text, MAX_KEY_PARTS) if text.count(".") >= MAX_KEY_PARTS else None
    if line is not None:
        raise ConfigInvalid([ConfigProblem(
            file, f"a key of more than {MAX_KEY_PARTS} dotted parts nests too deeply; "
            "flatten it", line)])
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigInvalid([_syntax_problem(file, exc, text)]) from exc
    except ValueError as exc:  # tomllib lets int() refuse a number of over 4300 digits
        raise ConfigInvalid([ConfigProblem(file, f"not valid TOML: {exc}")]) from exc
    except RecursionError:  # arrays or inline tables nested past the recursion limit
        data = None
    if data is None or deeper_than(data):
        raise ConfigInvalid([ConfigProblem(
            file, f"tables and lists nest more than {MAX_DEPTH} levels deep; flatten them")])
    return data


def _syntax_problem(file: str, exc: tomllib.TOMLDecodeError, text: str) -> ConfigProblem:
    """A ConfigProblem for a TOML syntax error, with tomllib's line moved into `line`."""
    message = str(exc)
    found = _TOML_POSITION.search(message)
    line = int(found.group(1)) if found else None
    if line is None and "(at end of document)" in message:
        line = max(1, len(text.splitlines()))
    clean = _TOML_POSITION.sub("", message).replace("(at end of document)", "").strip()
    return ConfigProblem(file, f"not valid TOML: {clean}", line)


def key_line(text: str, key: str, after: int = 0) -> Line:
    """The 1-based line of the first `key = ...` at or after line `after` (best effort)."""
    pattern = re.compile(rf"""^\s*["']?{re.escape(key)}["']?\s*=""")
    for number, line in enumerate(text.splitlines()[after:], start=after + 1):
        if pattern.match(line):
            return number
    return None


def header_line(text: str, header: str, occurrence: int = 0) -> Line:
    """The 1-based line of the n-th table header such as `[[files]]` (best effort)."""
    parts = r"\s*\.\s*".join(re.escape(p) for p in header.split("."))
    pattern = re.compile(rf"^\s*\[\[?\s*{parts}\s*\]\]?\s*(#.*)?$")
    seen = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if pattern.match(line):
            if seen == occurrence:
                return number
            seen += 1
    return None


def type_name(value: object) -> str:
    """How a problem names the TOML type of `value`: 'a string', 'a table'..."""
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _unknown_key_message(key: str, valid: Iterable[str], where: str = "") -> str:
    valid = tuple(valid)
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown key {key!r}{where}; {hint}valid keys are: {', '.join(valid)}"


class Checker:
    """Collects every problem in one file while its values are converted. Each check takes
    the key's dotted name (for the message) and the line to report, and returns the value,
    or None after recording a problem, so that one pass reports everything."""

    def __init__(self, file: str, text: str):
        self.file = file
        self.text = text
        self.problems: list[ConfigProblem] = []

    def problem(self, line: Line, message: str) -> None:
        self.problems.append(ConfigProblem(self.file, message, line))

    def top_line(self, key: str) -> Line:
        """The line of a top-level `key = ...` (they come before the first [table]), or of
        a `[key]` table header."""
        top = "" if self.text.startswith("[") else self.text.split("\n[", 1)[0]
        return key_line(top, key) or header_line(self.text, key)

    def section_lines(self, name: str, index: int) -> tuple[Line, Callable[[str], Line]]:
        """The line of the `index`-th `[[name]]` header, and a function giving the line of a
        key in that section (the header's when the key is not found)."""
        header = header_line(self.text, name, index)

        def line(key: str) -> Line:
            return (key_line(self.text, key, header) if header else None) or header
        return header, line

    def unknown_keys(self, data: dict, valid: tuple[str, ...], where: str = "",
                     line: Callable[[str], Line] | None = None) -> None:
        """Report each key of `data` not in `valid` (`where` says which table, such as
        " in [environment]"), at the line `line(key)` finds (a top-level key's by default)."""
        locate = line or self.top_line
        for key in data:
            if key not in valid:
                self.problem(locate(key), _unknown_key_message(key, valid, where))

    def wrong_type(self, key: str, expected: str, value: object, line: Line) -> None:
        self.problem(line, f"{key}: expected {expected}, got {type_name(value)} ({value!r})")

    def string(self, key: str, value: object, line: Line, nonempty: bool = False,
               most: int | None = None) -> str | None:
        """A string of at most `most` characters (non-blank when `nonempty`); by default as
        its key's kind allows: a command 256 Ki, a description 16 Ki, anything else 4 Ki."""
        if most is None:
            most = _STRING_BOUNDS.get(key.rpartition(".")[2], MAX_STRING)
        if isinstance(value, str) and (value.strip() or not nonempty):
            if len(value) > most:
                self.problem(line, f"{key}: {len(value)} characters is too long; the most "
                                   f"is {most}")
                return None
            return value
        self.wrong_type(key, "a non-empty string" if nonempty else "a string", value, line)
        return None

    def string_list(self, key: str, value: object, line: Line) -> tuple[str, ...] | None:
        if isinstance(value, list) and all(isinstance(v, str) and v for v in value):
            return tuple(value)
        self.wrong_type(key, 'a list of non-empty strings, like ["a", "b"]', value, line)
        return None

    def boolean(self, key: str, value: object, line: Line) -> bool | None:
        if isinstance(value, bool):
            return value
        self.wrong_type(key, "true or false", value, line)
        return None

    def integer(self, key: str, value: object, line: Line, low: int = -MAX_INT,
                high: int = MAX_INT) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.wrong_type(key, self._whole_number(low, high), value, line)
            return None
        if value < low:
            self.problem(line, f"{key}: {value} is too small; the least is {low}")
            return None
        if value > high:
            self.problem(line, f"{key}: {value} is too large; the most is {high}")
            return None
        return value

    @staticmethod
    def _whole_number(low: int, high: int) -> str:
        if low == -MAX_INT and high == MAX_INT:
            return "a whole number"
        if high == MAX_INT:
            return f"a whole number of {low} or more"
        return f"a whole number from {low} to {high}"

    def duration(self, key: str, value: object, line: Line, least: float = 0.0,
                 most: float = MAX_DURATION) -> float | None:
        """Seconds, from `least` to `most` (a year unless the key says otherwise)."""
        if isinstance(value, str) and len(value) > _LONGEST_DURATION:
            self.problem(line, f"{key}: {len(value)} characters is too long for a duration; "
                               "write seconds (90) or a string like '90s', '5m', '2h', '1h30m'")
            return None
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.problem(line, f"{key}: {exc}")
            return None
        if seconds < least:
            self.problem(line, f"{key}: {value!r} is too short; the least is {least:g}s")
            return None
        if seconds > most:
            self.problem(line, f"{key}: {value!r} is too long; the most is "
                               f"{format_duration(most)}")
            return None
        return seconds

    def choice(self, key: str, value: object, line: Line, allowed: tuple[str, ...]) -> str | None:
        if isinstance(value, str) and value in allowed:
            return value
        self.problem(line, f"{key}: {value!r} is not allowed; use one of: {', '.join(allowed)}")
        return None

    def environment_name(self, key: str, name: str, line: Line) -> bool:
        if ENV_NAME.fullmatch(name):
            return True
        self.problem(line, f"{key}: {name!r} is not a valid variable name; use letters, "
                           "digits and '_', not starting with a digit")
        return False

    def environment_value(self, key: str, value: object, line: Line) -> str | None:
        """A variable's value as the process will see it: strings, numbers and booleans."""
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str | int | float):
            problem = too_long(key.rpartition(".")[2], str(value))
            if problem is not None:
                self.problem(line, f"{key}: {problem}")
                return None
            return str(value)
        # Not quoted: it may be a secret's, and problems are shown to viewers.
        self.problem(line, f"{key}: expected a string, number or boolean, got "
                           f"{type_name(value)}")
        return None

    def finish(self, result: Any) -> Any:
        """`result`, or ConfigInvalid listing every problem found."""
        if self.problems:
            raise ConfigInvalid(self.problems)
        return result
