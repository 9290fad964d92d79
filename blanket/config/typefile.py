"""Read a task type file (conf.d/types/NAME.toml) into a TaskType, reporting every problem."""

from __future__ import annotations

import functools
import glob
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import jinja2
import pathspec

from blanket.config import inheritance
from blanket.config.checker import (
    Checker,
    Line,
    header_line,
    key_line,
    parse_toml,
)
from blanket.config.notify import parse_notify_blocks
from blanket.config.problems import ConfigInvalid, ConfigProblem, ConfigReads, read_config_text
from blanket.config.retention import KEYS as RETENTION_KEYS
from blanket.config.retention import read_retention
from blanket.config.tasktype import TYPE_NAME, FileSection, RequiredVariable, TaskType
from blanket.envnames import too_big

BUILTIN_EXECUTORS = ("bash", "sh", "python")
VARIABLE_TYPES = ("string", "integer", "number", "boolean")

TOP_KEYS = (
    "description", "command", "executor", "tags", "timeout", "retries", "retry_delay",
    "max_timeout", "max_retries", "max_concurrent", "estimate", "weight", "combine_output",
    "environment", "files",
    "results", "checks", "allow_extra_environment", "extends", "abstract", "notify",
    *RETENTION_KEYS,
)
ENVIRONMENT_KEYS = ("defaults", "required")
REQUIRED_KEYS = ("description", "type", "secret")
DEFAULT_KEYS = ("value", "secret")
FILES_KEYS = ("src", "dest", "include", "exclude", "render")

_JINJA = jinja2.Environment()


def parse_type_file(path: Path, name: str | None = None,
                    reads: ConfigReads | None = None) -> TaskType:
    """Parse and validate `path`; raise ConfigInvalid listing every problem found.

    `reads` keeps the bytes read of the file and its bases, so that the version hash and
    the bundle are made of the same bytes as the definition."""
    path = Path(path)
    name = path.stem if name is None else name
    reads = ConfigReads() if reads is None else reads
    text = read_config_text(path, reads)
    data = parse_toml(text, str(path))
    checker = _TypeChecker(path, text, reads)
    if not TYPE_NAME.fullmatch(name):
        checker.problem(None, f"type name {name!r} is not allowed; name the file with letters, "
                              "digits, '_', '.' or '-', starting with a letter or digit")
    task_type = checker.task_type(name, data)
    if checker.base_failed:  # what the base would have given is not missing: say the base
        checker.problems = [p for p in checker.problems if p.line is not None]
    return checker.finish(task_type)


def _base_problems(path: Path, reads: ConfigReads) -> list[ConfigProblem]:
    """The problems of a base file as a type of its own (none when it is a good one)."""
    try:
        parse_type_file(path, reads=reads)
    except ConfigInvalid as invalid:
        return list(invalid.problems)
    return []


def _seed_spellings(data: dict) -> dict:
    """`max_concurrent_tasks` (the seed's spelling) read as `max_concurrent`."""
    return {("max_concurrent" if k == "max_concurrent_tasks" else k): v for k, v in data.items()}


class _TypeChecker(Checker):
    """Converts a type file's TOML data into a TaskType, collecting problems."""

    def __init__(self, path: Path, text: str, reads: ConfigReads):
        super().__init__(str(path), text)
        self.path = path
        self.reads = reads
        self.secret_defaults: set[str] = set()
        self.base_failed = False  # its extends chain has a problem: the child's data alone

    def task_type(self, name: str, data: dict) -> TaskType:
        if "max_concurrent_tasks" in data and "max_concurrent" in data:  # the seed's spelling
            self.problem(self.top_line("max_concurrent_tasks"),
                         "max_concurrent_tasks and max_concurrent say the same: keep one")
        data = _seed_spellings(data)
        abstract = bool(self.boolean("abstract", data.get("abstract", False),
                                     self.top_line("abstract")))
        bases: tuple[Path, ...] = ()
        if "extends" in data:
            inherited = inheritance.resolve(self.path, data, self._base_problem,
                                            self.top_line("extends"), _seed_spellings,
                                            lambda base: _base_problems(base, self.reads),
                                            self.reads)
            data, bases = inherited.data, inherited.bases
        self.unknown_keys(data, TOP_KEYS)
        fields: dict = {"name": name, "abstract": abstract,
                        "bases": tuple(base.stem for base in bases)}
        fields["command"] = self._command(data, abstract)
        fields.update(self._scalars(data))
        defaults, required = self._environment(data.get("environment", {}))
        fields["defaults"], fields["required"] = defaults, required
        fields["secret_defaults"] = tuple(sorted(self.secret_defaults))
        if "allow_extra_environment" in data:
            fields["extra_environment"] = self._extra_environment(
                data["allow_extra_environment"])
        fields["files"] = self._files(data.get("files", []))
        fields.update(read_retention(self, data))
        fields["notify"] = parse_notify_blocks(self, data, allow_secret=False)
        return TaskType(**fields)

    def _base_problem(self, line: Line, message: str) -> None:
        self.base_failed = True
        self.problem(line, message)

    def _scalars(self, data: dict) -> dict:
        fields: dict = {}
        checks: dict[str, Callable[[str, object, Line], object]] = {
            "description": self.string, "executor": self._executor,
            "tags": self.string_list, "results": self.string_list, "checks": self.string_list,
            "timeout": self.duration, "retry_delay": self.duration,
            "estimate": self.duration,
            "retries": self._at_least(0), "max_concurrent": self._at_least(1),
            "max_timeout": self.duration, "max_retries": self._at_least(0),
            "weight": self._at_least(1), "combine_output": self.boolean,
        }
        for key, check in checks.items():
            if key in data:
                fields[key] = check(key, data[key], self.top_line(key))
        return {k: v for k, v in fields.items() if v is not None}

    def _at_least(self, low: int) -> Callable[[str, object, Line], int | None]:
        return lambda key, value, line: self.integer(key, value, line, low=low)

    def _executor(self, key: str, value: object, line: Line) -> str | None:
        if self.string(key, value, line, nonempty=True) is None:
            return None
        assert isinstance(value, str)
        if value in BUILTIN_EXECUTORS or shutil.which(value):
            return value
        candidate = os.path.expanduser(value)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return value
        self.problem(line, f"executor: {value!r} is not an installed program or an "
                           f"executable file; use {', '.join(BUILTIN_EXECUTORS)} "
                           "or the path of an interpreter")
        return None

    def _command(self, data: dict, abstract: bool = False) -> str:
        if "command" not in data:
            if not abstract:
                self.problem(None, 'command is missing; add a line such as command = '
                                   '"echo hello" (or abstract = true for a file that is only '
                                   'a base others extend)')
            return ""
        command = self.string("command", data["command"], self.top_line("command"))
        if command is None:
            return ""
        if not command.strip():
            self.problem(self.top_line("command"),
                         "command: is empty; write the shell command to run")
        try:
            _JINJA.parse(command)
        except jinja2.TemplateSyntaxError as exc:
            self.problem(self._command_line(exc.lineno),
                         f"command: template error on line {exc.lineno} of the command: "
                         f"{exc.message}")
        return command

    def _command_line(self, template_line: int) -> Line:
        start = self.top_line("command")
        if start is None:
            return None
        # TOML drops a newline right after an opening triple quote, so the template starts below.
        opener = self.text.splitlines()[start - 1].rstrip()
        skip = 1 if opener.endswith(('"""', "'''")) else 0
        return start + skip + template_line - 1

    def _environment(self, env: object) -> tuple[dict[str, str], tuple[RequiredVariable, ...]]:
        if not isinstance(env, dict):
            self.wrong_type("environment", "a table with defaults and required", env,
                            self.top_line("environment"))
            return {}, ()
        self.unknown_keys(env, ENVIRONMENT_KEYS, " in [environment]", self._env_line)
        return self._defaults(env.get("defaults", {})), self._required(env.get("required", {}))

    def _env_line(self, section: str, name: str | None = None) -> Line:
        header = header_line(self.text, f"environment.{section}")
        if header is None:
            return key_line(self.text, section)
        return key_line(self.text, name, header) if name else header

    def _defaults(self, defaults: object) -> dict[str, str]:
        if not isinstance(defaults, dict):
            self.wrong_type("environment.defaults", "a table of NAME = value", defaults,
                            self._env_line("defaults"))
            return {}
        result = {}
        for name, value in defaults.items():
            line = self._env_line("defaults", name)
            if not self.environment_name("environment.defaults", name, line):
                continue
            if isinstance(value, dict):
                value = self._default_table(name, value)
            text = self.environment_value(f"environment.defaults.{name}", value, line)
            if text is not None:
                result[name] = text
        if (problem := too_big(result)) is not None:
            self.problem(self._env_line("defaults"), f"environment.defaults: {problem}")
        return result

    def _default_table(self, name: str, spec: dict) -> object:
        """`NAME = { value = "...", secret = true }`: the value, remembering the secret."""
        line = self._env_line("defaults", name)
        where = f"environment.defaults.{name}"
        self.unknown_keys(spec, DEFAULT_KEYS, f" in {where}", lambda _: line)
        if self.boolean(f"{where}.secret", spec.get("secret", False), line):
            self.secret_defaults.add(name)
        if "value" not in spec:
            self.problem(line, f'{where}: value is missing; write {{ value = "...", '
                               "secret = true }")
            return ""
        return spec["value"]

    def _extra_environment(self, value: object) -> tuple[str, ...] | None:
        """allow_extra_environment: true (any name) or a list of name globs."""
        if value is True:
            return ("*",)
        if value is False:
            return ()
        line = self.top_line("allow_extra_environment")
        return self.string_list("allow_extra_environment", value, line)

    def _required(self, required: object) -> tuple[RequiredVariable, ...]:
        if not isinstance(required, dict):
            self.wrong_type("environment.required", "a table of NAME = { description = ... }",
                            required, self._env_line("required"))
            return ()
        result = []
        for name, spec in required.items():
            if self.environment_name("environment.required", name,
                                     self._env_line("required", name)):
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
            self.wrong_type(where, 'a description or { description = "...", type = "string" }',
                            spec, line)
            return None
        before = len(self.problems)
        self.unknown_keys(spec, REQUIRED_KEYS, f" in {where}", lambda _: line)
        description = self.string(f"{where}.description", spec.get("description", ""), line)
        secret = self.boolean(f"{where}.secret", spec.get("secret", False), line)
        kind = self.choice(f"{where}.type", spec.get("type", "string"), line, VARIABLE_TYPES)
        if len(self.problems) > before or description is None or kind is None:
            return None
        return RequiredVariable(name, description, kind, bool(secret))

    def _files(self, sections: object) -> tuple[FileSection, ...]:
        if not isinstance(sections, list) or not all(isinstance(s, dict) for s in sections):
            self.wrong_type("files", "[[files]] sections (a list of tables)", sections,
                            self.top_line("files"))
            return ()
        found = (self._file_section(i, s) for i, s in enumerate(sections))
        return tuple(s for s in found if s is not None)

    def _file_section(self, index: int, section: dict) -> FileSection | None:
        header, line = self.section_lines("files", index)
        where = f"files[{index}]"

        before = len(self.problems)
        self.unknown_keys(section, FILES_KEYS, f" in {where}", line)
        src = section.get("src")
        if src is None:
            self.problem(header, f'{where}: src is missing; add src = "a-folder/" or a glob')
        elif self.string(f"{where}.src", src, line("src")) is not None:
            self._check_src(f"{where}.src", src, line("src"))
        dest = section.get("dest", ".")
        self._check_dest(f"{where}.dest", dest, line("dest"))
        include = self._patterns(f"{where}.include", section.get("include", []), line("include"))
        exclude = self._patterns(f"{where}.exclude", section.get("exclude", []), line("exclude"))
        render = self.boolean(f"{where}.render", section.get("render", True), line("render"))
        if len(self.problems) > before:
            return None
        return FileSection(str(src), str(dest), include, exclude, bool(render))

    def _check_src(self, where: str, src: str, line: Line) -> None:
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

    def _check_dest(self, where: str, dest: object, line: Line) -> None:
        if self.string(where, dest, line) is None:
            return
        assert isinstance(dest, str)
        if os.path.isabs(dest) or ".." in Path(dest).parts:
            self.problem(line, f"{where}: {dest!r} leaves the task's scratch directory; "
                               "write a relative path such as \".\" or \"assets\"")

    def _patterns(self, where: str, value: object, line: Line) -> tuple[str, ...]:
        patterns = self.string_list(where, value, line)
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
