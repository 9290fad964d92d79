"""Where things live on disk: the data directory's layout and the names inside a task's
directory. The server, the worker, the runner and the CLI all take their paths from here, so
that `docs/architecture.md` ("Files on disk") has one place to stay true to.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# In a task's directory, besides its inputs and the files of its type:
# The rendered command, when it cannot be an argument (`bash -c`): another executor, too long,
# or it holds a secret value (a process's arguments are visible to other users).
COMMAND_FILE = ".blanket-command"
PROGRESS_FILE = ".progress"  # what the task writes to report its progress
TASK_FILE = "task.json"  # the task's record, written when it ends
# Each log by the name the API and the CLI give it (`output` when the type combines them).
LOG_STREAMS = {"stdout": "stdout.log", "stderr": "stderr.log", "output": "output.log"}
LOG_FILES = tuple(LOG_STREAMS.values())
# Names the runner writes in a task's directory: an upload may not take them.
RESERVED_NAMES = frozenset({COMMAND_FILE, PROGRESS_FILE, TASK_FILE, *LOG_FILES})
PRIVATE_NAMES = frozenset({COMMAND_FILE})  # kept on the worker: never served, never sent

# In the data directory:
STORE_FILE = "blanket.db"  # the SQLite store (when no database URL is set)
SERVER_ID_FILE = "server-id"
ADMIN_TOKEN_FILE = "admin.token"
ADMIN_SERVERS_FILE = "admin.servers"


@dataclass(frozen=True)
class DataDir:
    """One data directory (a server's or a worker's; they may be the same directory)."""

    root: Path

    @property
    def store(self) -> Path:
        return self.root / STORE_FILE

    @property
    def server_id(self) -> Path:
        """Tells a worker whether it shares the server's data directory."""
        return self.root / SERVER_ID_FILE

    @property
    def admin_token(self) -> Path:
        return self.root / ADMIN_TOKEN_FILE

    @property
    def admin_servers(self) -> Path:
        """The server addresses the admin token may be sent to."""
        return self.root / ADMIN_SERVERS_FILE

    @property
    def versions(self) -> Path:
        """Every version of every type, as HASH.tar.gz (the server's)."""
        return self.root / "versions"

    @property
    def tasks(self) -> Path:
        return self.root / "tasks"

    def task(self, type_name: str, task_id: int) -> Path:
        """One task's directory: its inputs, files, logs and what it made."""
        return self.tasks / type_name / str(task_id)

    @property
    def staging(self) -> Path:
        """Where uploads and received outputs wait before they move into a task's directory
        (the server's; cleared at start)."""
        return self.root / "tmp"

    @property
    def bundles(self) -> Path:
        """Version bundles a worker fetched, unpacked (a worker's)."""
        return self.root / "bundles"

    @property
    def outputs(self) -> Path:
        """Outputs archives a worker packs before it sends them (a worker's)."""
        return self.root / "outputs"

    @property
    def running(self) -> Path:
        """The sessions worker processes run, one folder per host (a worker's)."""
        return self.root / "running"

    @property
    def tls(self) -> Path:
        """The self-signed certificate and key (a server's, with `tls = "self-signed"`)."""
        return self.root / "tls"


def log_file(stream: str) -> str | None:
    """The file name of a log stream (stdout, stderr, output); None for another name."""
    return LOG_STREAMS.get(stream)


def error_log(combine_output: bool) -> str:
    """The file a task's errors are written to."""
    return LOG_STREAMS["output" if combine_output else "stderr"]
