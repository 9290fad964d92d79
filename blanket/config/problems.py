"""Problems found in configuration files, reported with file, line and what to change."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in one file. `line` is None when the parser cannot tell."""

    file: str
    message: str
    line: int | None = None

    def __post_init__(self) -> None:
        # A file name that is not UTF-8 reaches Python as lone surrogates, which no terminal
        # or JSON reader takes: show its bytes as \xNN escapes instead.
        object.__setattr__(self, "file", printable(self.file))
        object.__setattr__(self, "message", printable(self.message))

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.message}"

    def to_json(self) -> dict:
        return {"file": self.file, "line": self.line, "message": self.message}


class ConfigInvalid(Exception):
    """Raised by a config parser with every problem it found."""

    def __init__(self, problems: list[ConfigProblem]):
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def printable(text: str) -> str:
    """`text` with the undecodable bytes of a file name (lone surrogates) as \\xNN."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogateescape")
        return raw.decode("utf-8", "backslashreplace").encode("utf-8", "replace").decode()
    return text


def read_config_text(path: Path) -> str:
    """The UTF-8 text of a config file; ConfigInvalid (caused by the OSError or the decode
    error) says why it cannot be read, with the line of a byte that is not UTF-8."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise ConfigInvalid([ConfigProblem(str(path), f"cannot read the file: {reason}; "
                                                      "check that it is a readable file")]) \
            from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigInvalid([ConfigProblem(
            str(path), f"byte {data[exc.start:exc.start + 1]!r} is not UTF-8 text; save the "
                       "file as UTF-8", line)]) from exc
