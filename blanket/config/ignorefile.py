"""gitignore-style files (`.blanketignore`, `.templateignore`, `include`/`exclude` lists):
read line by line, so each line that is not a pattern is a problem with its line number."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import pathspec
from pathspec.patterns.gitignore.spec import GitIgnoreSpecPattern

from blanket.config.problems import ConfigInvalid, ConfigProblem, read_config_text


def parse_patterns(lines: Iterable[str], file: str) -> tuple[pathspec.GitIgnoreSpec,
                                                               list[ConfigProblem]]:
    """The spec of every valid line, and a problem for each line that is not a pattern."""
    patterns: list[GitIgnoreSpecPattern] = []
    problems: list[ConfigProblem] = []
    for number, line in enumerate(lines, start=1):
        try:
            patterns.append(GitIgnoreSpecPattern(line))
        except (ValueError, re.error) as exc:  # pathspec's own errors are ValueErrors
            reason = exc.msg if isinstance(exc, re.error) else str(exc)
            problems.append(ConfigProblem(file, f"{line!r} is not a gitignore pattern "
                                                f"({reason}); fix it, or escape a special "
                                                "character with \\", number))
    return pathspec.GitIgnoreSpec(patterns), problems


def read_ignore_file(path: Path) -> pathspec.GitIgnoreSpec | None:
    """The patterns in `path`, or None when there is no such file; raise ConfigInvalid with
    every line that is not a pattern, or when the file cannot be read."""
    try:
        text = read_config_text(path)
    except ConfigInvalid as invalid:
        if isinstance(invalid.__cause__, FileNotFoundError | NotADirectoryError):
            return None
        raise
    spec, problems = parse_patterns(text.splitlines(), str(path))
    if problems:
        raise ConfigInvalid(problems)
    return spec


def tolerant_spec(path: Path) -> pathspec.GitIgnoreSpec | None:
    """The valid patterns in `path` (None when it cannot be read): for the worker, whose
    bundle was checked when the server loaded it."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return parse_patterns(text.splitlines(), str(path))[0]
