"""Jinja2 rendering for task commands (every value shell-quoted) and task files (verbatim)."""

from __future__ import annotations

import codecs
import functools
import re
import shlex
from collections.abc import Mapping
from pathlib import Path

import jinja2
import pathspec

from blanket.config.ignorefile import tolerant_spec

TEMPLATEIGNORE = ".templateignore"
_SNIFF_SIZE = 8192
_UNDEFINED_NAME = re.compile(r"^'([^']+)' is undefined$")


class TemplateProblem(Exception):
    """A template that cannot be rendered; the message says where and what to change."""


class _Raw(str):
    """A value the template author marked with `| raw`: it reaches the shell unquoted."""


def _raw(value: object) -> _Raw:
    return _Raw(str(value))


def _shell_quote(value: object) -> str:
    if isinstance(value, _Raw):
        return str(value)
    return shlex.quote(str(value))


def _environment(**options: object) -> jinja2.Environment:
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False, **options
    )
    env.filters["raw"] = _raw
    return env


_COMMAND_ENV = _environment(finalize=_shell_quote)
_TEXT_ENV = _environment()


@functools.lru_cache(maxsize=512)
def _compiled(env: jinja2.Environment, text: str) -> jinja2.Template:
    """Templates compiled once: a type's command is rendered for every one of its tasks."""
    return env.from_string(text)


def _render(env: jinja2.Environment, text: str, variables: Mapping[str, str], where: str) -> str:
    if "{" not in text and "\r" not in text:
        return text  # no tag to fill, no line ending to normalise: Jinja2 would return it as is
    try:
        return _compiled(env, text).render(variables)
    except jinja2.UndefinedError as exc:
        match = _UNDEFINED_NAME.match(exc.message or "")
        if match:
            raise TemplateProblem(
                f"{where}: '{match[1]}' is not defined; submit it in environment or give a default"
            ) from None
        raise TemplateProblem(f"{where}: {exc.message}") from None
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateProblem(f"{where}: line {exc.lineno}: {exc.message}") from None
    except jinja2.TemplateError as exc:
        raise TemplateProblem(f"{where}: {exc.message}") from None


def render_command(template: str, variables: Mapping[str, str]) -> str:
    """Render a command; every substituted value is shell-quoted unless piped through `raw`."""
    return _render(_COMMAND_ENV, template, variables, "command")


def render_text(text: str, variables: Mapping[str, str], *, where: str = "file") -> str:
    """Render a file's text as is (no quoting); `where` names it in error messages."""
    return _render(_TEXT_ENV, text, variables, where)


def load_templateignore(root: Path) -> pathspec.PathSpec | None:
    """The gitignore-style patterns in `root/.templateignore`, or None when there is none."""
    path = root / TEMPLATEIGNORE
    if not path.is_file():
        return None
    return tolerant_spec(path)


def is_binary(path: Path) -> bool:
    """True when the file has a NUL byte in its first 8 KiB or is not valid UTF-8."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    with path.open("rb") as handle:
        chunk = handle.read(_SNIFF_SIZE)
        if b"\0" in chunk:
            return True
        try:
            while chunk:
                decoder.decode(chunk)
                chunk = handle.read(1 << 16)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return True
    return False
