"""Rules for environment variable names: which are valid, and which a submission may never
set because a shell, the dynamic loader or an interpreter reads them as code or as where to
find code (a type's own file may still set them)."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_VARIABLE_BYTES = 128 * 1024  # Linux's MAX_ARG_STRLEN: one NAME=value, with its NUL
# A task's variables in all. Linux takes arguments and environment together up to a quarter
# of the stack limit (2 MiB with the usual 8 MiB); half of that leaves the worker's own.
MAX_ENVIRONMENT_BYTES = 1024 * 1024


def _size(name: str, value: str) -> int:
    return len(name.encode()) + 1 + len(value.encode("utf-8", "surrogatepass")) + 1


def too_long(name: str, value: str) -> str | None:
    """Why a process could not be given `name`=`value` (Linux refuses a variable longer
    than MAX_VARIABLE_BYTES: the task would fail to start), else None."""
    size = _size(name, value)
    if size <= MAX_VARIABLE_BYTES:
        return None
    return (f"{name} is {size - 1} bytes as NAME=value; a process takes at most "
            f"{MAX_VARIABLE_BYTES - 1} a variable: pass large values as files")


def too_big(values: dict[str, str], defaults: Mapping[str, str] | None = None) -> str | None:
    """Why a task could not be given all of `values` (over MAX_ENVIRONMENT_BYTES as
    NAME=value strings with their NULs), else None. With the type's `defaults`, the reason
    says how much of the total they give."""
    # Characters first (a UTF-8 character is 1 to 4 bytes): most tasks are far below.
    if 4 * (sum(map(len, values)) + sum(map(len, values.values())) + 2 * len(values)) \
            <= MAX_ENVIRONMENT_BYTES:
        return None
    total = sum(_size(name, value) for name, value in values.items())
    if total <= MAX_ENVIRONMENT_BYTES:
        return None
    given = sum(_size(name, value) for name, value in (defaults or {}).items()
                if values.get(name) == value)
    share = f" (its type's [environment.defaults] give {given} of them)" if given else ""
    return (f"its variables come to {total} bytes as NAME=value{share}; the most is "
            f"{MAX_ENVIRONMENT_BYTES}: pass large values as files")

# Exact names and globs, matched case-sensitively as the programs that read them do.
LOADER_NAMES = (
    # shells
    "BASH_ENV", "ENV", "PATH", "IFS", "PS4", "SHELLOPTS", "BASHOPTS", "CDPATH", "GLOBIGNORE",
    "PROMPT_COMMAND", "BASH_FUNC_*", "BASH_XTRACEFD", "HOME", "SHELL", "TMPDIR",
    # the dynamic loader and libc
    "LD_*", "GCONV_PATH", "GLIBC_TUNABLES", "LOCPATH", "NLSPATH", "MALLOC_*", "HOSTALIASES",
    "RESOLV_*",
    # interpreters and tools that load code or configuration from the environment
    "PYTHON*", "PERL5*", "PERLLIB", "PERL_*", "RUBY*", "GEM_*", "BUNDLE_*", "NODE_OPTIONS",
    "NODE_PATH", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS", "CLASSPATH",
    "GIT_*", "SSH_*", "LUA_*", "TCLLIBPATH", "R_PROFILE*", "R_ENVIRON*", "PHPRC", "EDITOR",
    "VISUAL", "PAGER", "BROWSER", "ZDOTDIR", "OPENSSL_*", "LESSOPEN", "LESSCLOSE",
    "BASH_LOADABLES_PATH", "PIP_*", "CORECLR_*", "DOTNET_*", "COMPlus_*", "npm_config_*",
    "NPM_CONFIG_*", "YARN_*", "CURL_HOME", "WGETRC", "GNUPGHOME", "XDG_CONFIG_HOME",
    "XDG_DATA_DIRS", "TERMINFO*", "MANPAGER", "GIT_*", "KRB5*", "SSL_CERT_*", "REQUESTS_CA_BUNDLE",
    "PKG_CONFIG_*", "CC", "CXX", "LDFLAGS", "CFLAGS", "CPPFLAGS", "MAKEFLAGS", "GOFLAGS", "GOPATH",
    "CARGO_*", "RUSTFLAGS", "RUSTC_WRAPPER", "JULIA_*", "R_LIBS*", "PHP_INI_SCAN_DIR",
    # blanket's own
    "BLANKET_*",
)


FIRE_TIME_VARIABLE = "BLANKET_FIRE_TIME"  # a scheduled run's fire time, set by blanket


def with_fire_time(environment: Mapping[str, str]) -> dict[str, str]:
    """A schedule's `environment` as each fire gives it: with its time (as long as any)."""
    return {**environment, FIRE_TIME_VARIABLE: "2027-01-15T08:00:00.000Z"}

# One expression for the whole list: checked for every submitted name, on the hot path.
_LOADER = re.compile("|".join(fnmatch.translate(pattern) for pattern in LOADER_NAMES))


def loader_name(name: str) -> bool:
    """Whether `name` is read by a shell, the loader or an interpreter (never submitted)."""
    return _LOADER.match(name) is not None


def matches_any(name: str, globs: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in globs)
