"""The task type: what runs, where, and what it needs. Parsed from conf.d/types/NAME.toml."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields

from blanket.config.notify import NotifyTarget
from blanket.envnames import matches_any

TYPE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # a type's name, its file's stem
# Sent only when set (see TaskType.to_json).
LATER_FIELDS = ("bases", "abstract", "keep", "keep_failed", "keep_last")


@dataclass(frozen=True)
class RequiredVariable:
    """A variable a submission must supply."""

    name: str
    description: str = ""
    type: str = "string"  # string | integer | number | boolean
    secret: bool = False  # its value is never shown by the API, task.json or the logs


@dataclass(frozen=True)
class FileSection:
    """One `[[files]]` section: copy `src` (dir or glob, relative to the TOML file) to `dest`."""

    src: str
    dest: str = "."
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    render: bool = True


@dataclass(frozen=True)
class TaskType:
    """A validated task type. Durations are in seconds."""

    name: str
    command: str
    description: str = ""
    executor: str = "bash"
    tags: tuple[str, ...] = ()
    timeout: float | None = None
    retries: int = 0
    retry_delay: float = 0.0
    # How far a submission may raise its own task's timeout and retries (None: it may only
    # lower them).
    max_timeout: float | None = None
    max_retries: int | None = None
    max_concurrent: int | None = None
    estimate: float | None = None
    weight: int = 1
    defaults: dict[str, str] = field(default_factory=dict)
    required: tuple[RequiredVariable, ...] = ()
    files: tuple[FileSection, ...] = ()
    results: tuple[str, ...] = ()
    checks: tuple[str, ...] = ()
    combine_output: bool = False
    # Names a submission may set besides the declared ones (globs; ("*",) for any).
    extra_environment: tuple[str, ...] = ()
    secret_defaults: tuple[str, ...] = ()  # defaults marked secret = true
    bases: tuple[str, ...] = ()  # the types it extends, nearest first (their keys merged in)
    abstract: bool = False  # only a base for others: no task can be submitted of it
    # [[notify]] blocks: the server's alone (never sent to workers; see config/notify.py).
    notify: tuple[NotifyTarget, ...] = ()
    # How long its ended tasks are kept (config/retention.py); None: the settings say.
    keep: float | None = None
    keep_failed: float | None = None
    keep_last: int | None = None

    @property
    def declared(self) -> frozenset[str]:
        """The variable names the type declares (defaults and required)."""
        return frozenset(self.defaults) | {r.name for r in self.required}

    def takes(self, name: str) -> bool:
        """Whether a submission may set `name`: declared, or allowed by a glob."""
        return name in self.declared or matches_any(name, self.extra_environment)

    @property
    def secrets(self) -> frozenset[str]:
        """The names of its secret variables."""
        return frozenset(self.secret_defaults) | {r.name for r in self.required if r.secret}

    def shown_json(self) -> dict:
        """`to_json` with the values of secret defaults replaced by `***`."""
        data = self.to_json()
        for name in self.secret_defaults:
            if name in data["defaults"]:  # a workflow step's type names secrets it has no
                data["defaults"][name] = "***"  # default for (currenttypes.StepTypes)
        data["notify"] = [{"on": list(t.on), "target": t.label} for t in self.notify]
        return data

    def to_json(self) -> dict:
        # Built by hand rather than with asdict: it is sent with every claimed task.
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "notify"}
        data["defaults"] = dict(self.defaults)
        data["required"] = {r.name: {"description": r.description, "type": r.type,
                                     "secret": r.secret} for r in self.required}
        data["files"] = [{"src": f.src, "dest": f.dest, "include": list(f.include),
                          "exclude": list(f.exclude), "render": f.render} for f in self.files]
        for key in ("tags", "results", "checks", "extra_environment", "secret_defaults", "bases"):
            data[key] = list(data[key])
        # Left out at their defaults: a worker of an older version refuses fields it does not
        # know, and a type without a base is what every older worker runs.
        for key in LATER_FIELDS:
            if not data[key]:
                del data[key]
        return data

    @classmethod
    def from_json(cls, data: dict) -> TaskType:
        """Inverse of `to_json` (used by workers, which receive types over HTTP)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}  # a newer server's extras
        values["required"] = tuple(
            RequiredVariable(name, spec.get("description", ""), spec.get("type", "string"),
                             bool(spec.get("secret", False)))
            for name, spec in data.get("required", {}).items()
        )
        values["files"] = tuple(
            FileSection(f["src"], f.get("dest", "."), tuple(f.get("include", ())),
                        tuple(f.get("exclude", ())), f.get("render", True))
            for f in data.get("files", ())
        )
        for key in ("tags", "results", "checks", "extra_environment", "secret_defaults", "bases"):
            values[key] = tuple(data.get(key, ()))
        return cls(**values)
