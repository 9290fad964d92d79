"""Read a task type file (conf.d/types/NAME.toml) into a TaskType, reporting every problem."""

from __future__ import annotations

import difflib
import functools
import glob
import os
import re
import shutil
import tomllib
from collections.abc import Callable
from pathlib import Path

import jinja2
import pathspec

from blanket.config.problems import ConfigInvalid, ConfigProblem, read_config_text
from blanket.config.tasktype import FileSection, RequiredVariable, TaskType
from blanket.durations import parse_duration
from blanket.envnames import ENV_NAME

TYPE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
BUILTIN_EXECUTORS = ("bash", "sh", "python")
VARIABLE_TYPES = ("string", "integer", "number", "boolean")
MAX_INT = 2**31 - 1  # retries, weight, max_concurrent: larger is a typo, and overflows columns

TOP_KEYS = (
    "description", "command", "executor", "tags", "timeout", "retries", "retry_delay",
    "max_concurrent", "estimate", "weight", "combine_output", "environment", "files",
    "results", "checks", "allow_extra_environment",
)
ENVIRONMENT_KEYS = ("defaults", "required")
REQUIRED_KEYS = ("description", "type", "secret")
DEFAULT_KEYS = ("value", "secret")
FILES_KEYS = ("src", "dest", "include", "exclude", "render")

_TOML_POSITION = re.compile(r"\(at line (\d+), column \d+\)")
_JINJA = jinja2.Environment()


def parse_type_file(path: Path, name: str | None = None) -> TaskType:
    """Parse and validate `path`; raise ConfigInvalid listing every problem found."""
    path = Path(path)
    name = path.stem if name is None else name
    text = read_config_text(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigInvalid([toml_syntax_problem(str(path), exc, text)]) from exc
    except ValueError as exc:  # tomllib lets int() refuse a number of over 4300 digits
        raise ConfigInvalid([ConfigProblem(str(path), f"not valid TOML: {exc}")]) from exc
    checker = _Checker(path, text)
    if not TYPE_NAME.fullmatch(name):
        checker.problem(None, f"type name {name!r} is not allowed; name the file with letters, "
                              "digits, '_', '.' or '-', starting with a letter or digit")
    task_type = checker.task_type(name, data)
    if checker.problems:
        raise ConfigInvalid(checker.problems)
    return task_type


def toml_syntax_problem(file: str, exc: tomllib.TOMLDecodeError, text: str) -> ConfigProblem:
    """A ConfigProblem for a TOML syntax error, with tomllib's line moved into `line`."""
    message = str(exc)
    found = _TOML_POSITION.search(message)
    line = int(found.group(1)) if found else None
    if line is None and "(at end of document)" in message:
        line = max(1, len(text.splitlines()))
    clean = _TOML_POSITION.sub("", message).replace("(at end of document)", "").strip()
    return ConfigProblem(file, f"not valid TOML: {clean}", line)


def key_line(text: str, key: str, after: int = 0) -> int | None:
    """The 1-based line of the first `key = ...` at or after line `after` (best effort)."""
    pattern = re.compile(rf"""^\s*["']?{re.escape(key)}["']?\s*=""")
    for number, line in enumerate(text.splitlines()[after:], start=after + 1):
        if pattern.match(line):
            return number
    return None


def _header_line(text: str, header: str, occurrence: int = 0) -> int | None:
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


def _type_name(value: object) -> str:
    names = {str: "a string", bool: "a boolean", int: "an integer", float: "a number",
             list: "a list", dict: "a table"}
    return names.get(type(value), type(value).__name__)


def _unknown_key_message(key: str, valid: tuple[str, ...], where: str = "") -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown key {key!r}{where}; {hint}valid keys are: {', '.join(valid)}"


class _Checker:
    """Collects problems while converting the TOML data into a TaskType."""

    def __init__(self, path: Path, text: str):
        self.path = path
        self.text = text
        self.problems: list[ConfigProblem] = []
        self.secret_defaults: set[str] = set()

    def problem(self, line: int | None, message: str) -> None:
        self.problems.append(ConfigProblem(str(self.path), message, line))

    def task_type(self, name: str, data: dict) -> TaskType:
        for key in data:
            if key not in TOP_KEYS:
                self.problem(key_line(self.text, key) or _header_line(self.text, key),
                             _unknown_key_message(key, TOP_KEYS))
        fields: dict = {"name": name, "command": self._command(data)}
        fields.update(self._scalars(data))
        defaults, required = self._environment(data.get("environment", {}))
        fields["defaults"], fields["required"] = defaults, required
        fields["secret_defaults"] = tuple(sorted(self.secret_defaults))
        if "allow_extra_environment" in data:
            fields["extra_environment"] = self._extra_environment(
                data["allow_extra_environment"])
        fields["files"] = self._files(data.get("files", []))
        return TaskType(**fields)

    def _scalars(self, data: dict) -> dict:
        fields: dict = {}
        checks: dict[str, Callable[[str, object], object]] = {
            "description": self._string, "executor": self._executor,
            "tags": self._string_list, "results": self._string_list, "checks": self._string_list,
            "timeout": self._duration, "retry_delay": self._duration, "estimate": self._duration,
            "retries": self._int_at_least(0), "max_concurrent": self._int_at_least(1),
            "weight": self._int_at_least(1), "combine_output": self._bool,
        }
        for key, check in checks.items():
            if key in data:
                fields[key] = check(key, data[key])
        return {k: v for k, v in fields.items() if v is not None}

    def _at(self, key: str) -> int | None:
        # Top-level keys must come before the first [table] header, so look only there.
        top = self.text.split("\n[", 1)[0] if not self.text.startswith("[") else ""
        return key_line(top, key)

    def _wrong_type(self, key: str, expected: str, value: object, line: int | None = None) -> None:
        self.problem(line or self._at(key.rsplit(".", 1)[-1]),
                     f"{key}: expected {expected}, got {_type_name(value)} ({value!r})")

    def _string(self, key: str, value: object) -> str | None:
        if isinstance(value, str):
            return value
        self._wrong_type(key, "a string", value)
        return None

    def _string_list(self, key: str, value: object, line: int | None = None) -> tuple | None:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        self._wrong_type(key, 'a list of strings, like ["a", "b"]', value, line)
        return None

    def _bool(self, key: str, value: object, line: int | None = None) -> bool | None:
        if isinstance(value, bool):
            return value
        self._wrong_type(key, "true or false", value, line)
        return None

    def _duration(self, key: str, value: object) -> float | None:
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.problem(self._at(key), f"{key}: {exc}")
            return None

    def _int_at_least(self, low: int) -> Callable[[str, object], int | None]:
        def check(key: str, value: object) -> int | None:
            if isinstance(value, int) and not isinstance(value, bool) and value >= low:
                if value <= MAX_INT:
                    return value
                self.problem(self._at(key), f"{key}: too large; the most is {MAX_INT}")
                return None
            self._wrong_type(key, f"a whole number of {low} or more", value)
            return None
        return check

    def _executor(self, key: str, value: object) -> str | None:
        if self._string(key, value) is None:
            return None
        assert isinstance(value, str)
        if value in BUILTIN_EXECUTORS or shutil.which(value):
            return value
        candidate = os.path.expanduser(value)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return value
        self.problem(self._at(key), f"executor: {value!r} is not an installed program or an "
                                    f"executable file; use {', '.join(BUILTIN_EXECUTORS)} "
                                    "or the path of an interpreter")
        return None

    def _command(self, data: dict) -> str:
        if "command" not in data:
            self.problem(None, 'command is missing; add a line such as command = "echo hello"')
            return ""
        command = self._string("command", data["command"])
        if command is None:
            return ""
        if not command.strip():
            self.problem(self._at("command"), "command: is empty; write the shell command to run")
        try:
            _JINJA.parse(command)
        except jinja2.TemplateSyntaxError as exc:
            self.problem(self._command_line(exc.lineno),
                         f"command: template error on line {exc.lineno} of the command: "
                         f"{exc.message}")
        return command

    def _command_line(self, template_line: int) -> int | None:
        start = self._at("command")
        if start is None:
            return None
        # TOML drops a newline right after an opening triple quote, so the template starts below.
        opener = self.text.splitlines()[start - 1].rstrip()
        skip = 1 if opener.endswith(('"""', "'''")) else 0
        return start + skip + template_line - 1

    def _environment(self, env: object) -> tuple[dict[str, str], tuple[RequiredVariable, ...]]:
        if not isinstance(env, dict):
            self._wrong_type("environment", "a table with defaults and required", env)
            return {}, ()
        for key in env:
            if key not in ENVIRONMENT_KEYS:
                self.problem(self._env_line(key),
                             _unknown_key_message(key, ENVIRONMENT_KEYS, " in [environment]"))
        return self._defaults(env.get("defaults", {})), self._required(env.get("required", {}))

    def _env_line(self, section: str, name: str | None = None) -> int | None:
        header = _header_line(self.text, f"environment.{section}")
        if header is None:
            return key_line(self.text, section)
        return key_line(self.text, name, header) if name else header

    def _check_env_name(self, section: str, name: str) -> bool:
        if ENV_NAME.fullmatch(name):
            return True
        self.problem(self._env_line(section, name),
                     f"environment.{section}: {name!r} is not a valid variable name; use "
                     "letters, digits and '_', not starting with a digit")
        return False

    def _defaults(self, defaults: object) -> dict[str, str]:
        if not isinstance(defaults, dict):
            self._wrong_type("environment.defaults", "a table of NAME = value", defaults)
            return {}
        result = {}
        for name, value in defaults.items():
            if not self._check_env_name("defaults", name):
                continue
            if isinstance(value, dict):
                value = self._default_table(name, value)
            if isinstance(value, bool):
                result[name] = "true" if value else "false"
            elif isinstance(value, str | int | float):
                result[name] = str(value)
            else:
                self._wrong_type(f"environment.defaults.{name}", "a string, number or boolean",
                                 value, self._env_line("defaults", name))
        return result

    def _default_table(self, name: str, spec: dict) -> object:
        """`NAME = { value = "...", secret = true }`: the value, remembering the secret."""
        line = self._env_line("defaults", name)
        where = f"environment.defaults.{name}"
        for key in spec:
            if key not in DEFAULT_KEYS:
                self.problem(line, _unknown_key_message(key, DEFAULT_KEYS, f" in {where}"))
        if self._bool(f"{where}.secret", spec.get("secret", False), line):
            self.secret_defaults.add(name)
        if "value" not in spec:
            self.problem(line, f'{where}: value is missing; write {{ value = "...", '
                               "secret = true }")
            return ""
        value = spec["value"]
        return None if isinstance(value, dict) else value

    def _extra_environment(self, value: object) -> tuple[str, ...] | None:
        """allow_extra_environment: true (any name) or a list of name globs."""
        if value is True:
            return ("*",)
        if value is False:
            return ()
        line = self._at("allow_extra_environment")
        return self._string_list("allow_extra_environment", value, line)

    def _required(self, required: object) -> tuple[RequiredVariable, ...]:
        if not isinstance(required, dict):
            self._wrong_type("environment.required", "a table of NAME = { description = ... }",
                             required)
            return ()
        result = []
        for name, spec in required.items():
            if self._check_env_name("required", name):
                variable = self._required_variable(name, spec)
                if variable is not None:
                    result.append(variable)
        return tuple(result)

    def _required_variable(self, name: str, spec: object) -> RequiredVariable | None:
        line = self._env_line("required", name)
        where = f"environment.required.{name}"
        if isinstance(spec, str):
            return RequiredVariable(name, spec)
        if not isinstance(spec, dict):
            self._wrong_type(where, 'a description or { description = "...", type = "string" }',
                             spec, line)
            return None
        ok = True
        for key in spec:
            if key not in REQUIRED_KEYS:
                self.problem(line, _unknown_key_message(key, REQUIRED_KEYS, f" in {where}"))
                ok = False
        description = spec.get("description", "")
        if not isinstance(description, str):
            self._wrong_type(f"{where}.description", "a string", description, line)
            ok = False
        secret = self._bool(f"{where}.secret", spec.get("secret", False), line)
        kind = spec.get("type", "string")
        if kind not in VARIABLE_TYPES:
            self.problem(line, f"{where}.type: {kind!r} is not a variable type; use one of "
                               f"{', '.join(VARIABLE_TYPES)}")
            ok = False
        return RequiredVariable(name, description, kind, bool(secret)) if ok else None

    def _files(self, sections: object) -> tuple[FileSection, ...]:
        if not isinstance(sections, list) or not all(isinstance(s, dict) for s in sections):
            line = self._at("files") or _header_line(self.text, "files")
            self._wrong_type("files", "[[files]] sections (a list of tables)", sections, line)
            return ()
        found = (self._file_section(i, s) for i, s in enumerate(sections))
        return tuple(s for s in found if s is not None)

    def _file_section(self, index: int, section: dict) -> FileSection | None:
        header = _header_line(self.text, "files", index)
        where = f"files[{index}]"

        def line(key: str) -> int | None:
            return (key_line(self.text, key, header) if header else None) or header

        before = len(self.problems)
        for key in section:
            if key not in FILES_KEYS:
                self.problem(line(key), _unknown_key_message(key, FILES_KEYS, f" in {where}"))
        src = section.get("src")
        if src is None:
            self.problem(header, f'{where}: src is missing; add src = "a-folder/" or a glob')
        elif not isinstance(src, str):
            self._wrong_type(f"{where}.src", "a string", src, line("src"))
        else:
            self._check_src(f"{where}.src", src, line("src"))
        dest = section.get("dest", ".")
        self._check_dest(f"{where}.dest", dest, line("dest"))
        include = self._patterns(f"{where}.include", section.get("include", []), line("include"))
        exclude = self._patterns(f"{where}.exclude", section.get("exclude", []), line("exclude"))
        render = self._bool(f"{where}.render", section.get("render", True), line("render"))
        if len(self.problems) > before:
            return None
        return FileSection(str(src), str(dest), include, exclude, bool(render))

    def _check_src(self, where: str, src: str, line: int | None) -> None:
        full = resolve_src(self.path.parent, src)
        if full.exists():
            return
        if glob.has_magic(src) and any(
            os.path.isfile(p) or os.path.isdir(p)
            for p in glob.iglob(str(full), recursive=True)
        ):
            return
        self.problem(line, f"{where}: {src!r} matches nothing (looked for {full}); "
                           "src is a folder, a file or a glob relative to this TOML file")

    def _check_dest(self, where: str, dest: object, line: int | None) -> None:
        if not isinstance(dest, str):
            self._wrong_type(where, "a string", dest, line)
        elif os.path.isabs(dest) or ".." in Path(dest).parts:
            self.problem(line, f"{where}: {dest!r} leaves the task's scratch directory; "
                               "write a relative path such as \".\" or \"assets\"")

    def _patterns(self, where: str, value: object, line: int | None) -> tuple[str, ...]:
        patterns = self._string_list(where, value, line)
        if patterns is None:
            return ()
        try:
            compile_patterns(patterns)
        except (ValueError, re.error) as exc:
            self.problem(line, f"{where}: {exc}; write gitignore-style patterns such as '*.bak'")
        return patterns


@functools.lru_cache(maxsize=1024)
def compile_patterns(patterns: tuple[str, ...]) -> pathspec.GitIgnoreSpec:
    """gitignore-style patterns, compiled once: many types share the same lists."""
    return pathspec.GitIgnoreSpec.from_lines(patterns)


def resolve_src(base: Path, src: str) -> Path:
    """The absolute path `src` names: relative to `base`, or `~/...` for the home folder."""
    if src.startswith("~/"):
        return Path(os.path.expanduser(src))
    return base / src
