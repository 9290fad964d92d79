"""Fixtures that start real blanket processes: a server on a free port with its own
config, data and inbox directories, and workers pointed at it."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from blanket.client import Client

ROOT = Path(__file__).resolve().parent.parent

# No per-example deadline: the suite runs on every core at once (pytest -n auto), where a
# property's example can take longer than hypothesis' default 200 ms without anything being
# wrong. Speed is measured by bench/, not asserted in tests.
settings.register_profile("blanket", deadline=None)
settings.load_profile("blanket")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, timeout: float = 10.0, interval: float = 0.02):
    """Poll `check` until it returns a truthy value (for state observed across processes)."""
    end = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {check}")
        time.sleep(interval)


class PortTaken(Exception):
    """The server could not bind its port: another process took it first."""


class ServerProcess:
    """A `blanket server` subprocess in its own directory."""

    def __init__(self, base: Path, port: int | None = None, extra_args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None, listen: tuple[str, ...] = ()):
        self.base = base
        self.port = port or free_port()
        self.auto_port = port is None  # another may be picked if this one is taken meanwhile
        self.config_dir = base / "conf.d"
        self.data_dir = base / "var"
        self.inbox_dir = base / "inbox"
        (self.config_dir / "types").mkdir(parents=True, exist_ok=True)
        (self.config_dir / "schedules").mkdir(parents=True, exist_ok=True)
        self.extra_args = extra_args
        self.listen = listen  # --listen addresses instead of --port
        self.env = {**os.environ, "BLANKET_SETTINGS": str(base / "blanket.toml"),
                    "BLANKET_HEARTBEAT_INTERVAL": "0.5", "BLANKET_LOST_AFTER": "3",
                    **(env or {})}
        self.env.pop("BLANKET_SERVER", None)
        self.proc: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = Client(self.url, timeout=60)
        self.log = base / "server.log"

    def write_type(self, name: str, text: str) -> Path:
        return self._write_config("types", name, text)

    def write_schedule(self, name: str, text: str) -> Path:
        return self._write_config("schedules", name, text)

    def write_workflow(self, name: str, text: str) -> Path:
        return self._write_config("workflows", name, text)

    def _write_config(self, folder: str, name: str, text: str) -> Path:
        """conf.d/FOLDER/NAME.toml, written whole (the watcher never sees it half-made)."""
        path = self.config_dir / folder / f"{name}.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".toml.partial")
        tmp.write_text(text)
        tmp.replace(path)
        return path

    def start(self, wait: bool = True) -> ServerProcess:
        for _ in range(5):
            try:
                return self._start(wait)
            except PortTaken:
                # free_port() is free only when asked: a test on another xdist worker may
                # take it first. A port this test picked for itself is picked again.
                self.port = free_port()
                self.url = f"http://127.0.0.1:{self.port}"
                self.client = Client(self.url, timeout=60)
        raise AssertionError(f"no free port after 5 tries:\n{self.log_text()}")

    def _start(self, wait: bool) -> ServerProcess:
        address = [f"--listen={a}" for a in self.listen] or ["--port", str(self.port)]
        command = [sys.executable, "-m", "blanket", "server", *address,
                   "--config-dir", str(self.config_dir), "--data-dir", str(self.data_dir),
                   "--inbox-dir", str(self.inbox_dir), *self.extra_args]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(command, cwd=self.base, env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT)
        if wait:
            wait_until(self.healthy, timeout=20)
            # From here on the fixture's client acts as the local admin, as the CLI on the
            # server's machine does; tests of other roles make clients of their own.
            self.client = Client(self.url, timeout=60, token=self.admin_token)
        return self

    @property
    def admin_token(self) -> str:
        """The admin token the server keeps in its data dir (written at its first start)."""
        return (self.data_dir / "admin.token").read_text().strip()

    def token(self, name: str, role: str, **scopes) -> str:
        """A new API token with `role` (and optional types/tags/expires scopes)."""
        return self.client.post("/token/", {"name": name, "role": role, **scopes})["token"]

    def healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            log = self.log_text()
            if self.auto_port and not self.listen and "already in use" in log:
                raise PortTaken(self.port)
            raise AssertionError(f"server exited {self.proc.returncode}:\n{log}")
        try:
            # With this server's own admin token (written before it listens): another
            # test's server on the same port (ours failing to bind it) refuses it, 401.
            token = self.admin_token
        except OSError:
            return False
        try:
            return self.client.with_token(token).request("GET", "/health",
                                                         ok=(503,))[0] == 200
        except Exception:
            return False

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def wait_for_task(self, task_id: int, states=("SUCCESS", "FAILED", "TIMEDOUT", "STOPPED",
                                                  "LOST"), timeout: float = 20) -> dict:
        return wait_until(lambda: _task_in(self.client, task_id, states), timeout=timeout)


def _task_in(client: Client, task_id: int, states) -> dict | None:
    task = client.get(f"/task/{task_id}")
    return task if task["state"] in states else None


class WorkerProcess:
    """A `blanket worker` subprocess talking to a server over HTTP only."""

    def __init__(self, server: ServerProcess, tags: str = "", processes: int = 1,
                 args: tuple[str, ...] = (), data_dir: Path | None = None,
                 token: str | None = None, slots: int = 1):
        self.server = server
        self.log = server.base / f"worker-{time.monotonic_ns()}.log"
        command = [sys.executable, "-m", "blanket", "worker", "--server", server.url,
                   "--processes", str(processes), "-n", str(slots),
                   "--data-dir", str(data_dir or server.data_dir), *args]
        if tags:
            command += ["-t", tags]
        env = {**server.env, "BLANKET_TOKEN": token or server.admin_token}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(command, cwd=server.base, env=env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator:
    """Factory: make_server(types={"name": "toml text"}) -> a started ServerProcess."""
    servers: list[ServerProcess] = []
    workers: list[WorkerProcess] = []

    def factory(types: dict[str, str] | None = None, start: bool = True,
                base: Path | None = None, **kwargs) -> ServerProcess:
        server = ServerProcess(base or tmp_path / f"s{len(servers)}", **kwargs)
        for name, text in (types or {}).items():
            server.write_type(name, text)
        servers.append(server)
        return server.start() if start else server

    def worker(server: ServerProcess, **kwargs) -> WorkerProcess:
        w = WorkerProcess(server, **kwargs)
        workers.append(w)
        return w

    factory.worker = worker
    yield factory
    for w in workers:
        w.stop(signal.SIGKILL)
    for s in servers:
        s.stop()
    kill_tasks_left_in(tmp_path)


def kill_tasks_left_in(folder: Path) -> None:
    """SIGKILL task processes still running from `folder` (a test that fails before it lets
    its task end, or one that kills the task's worker on purpose, leaves them behind: a task
    runs in its own session, so killing its worker does not end it)."""
    mine = str(folder)
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            running_in = os.readlink(entry / "cwd")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if running_in == mine or running_in.startswith(mine + os.sep):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


@contextlib.contextmanager
def small_disk_at(mount_point: Path, size: str = "8m") -> Iterator[Path]:
    """A tmpfs of `size` mounted at `mount_point`, to fill up; unmounted afterwards. Mounting
    needs root (as CI runs): skipped where it is refused, but under CI=true that fails."""
    mount_point.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                              str(mount_point)], capture_output=True, text=True)
    if mounted.returncode != 0:
        reason = f"cannot mount a tmpfs to fill (it needs root): {mounted.stderr.strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)]).returncode != 0:
            subprocess.run(["umount", "-l", str(mount_point)], check=True)  # still busy


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    """A copy of the repository's example conf.d and blanket.toml in a temp dir."""
    shutil.copytree(ROOT / "conf.d", tmp_path / "conf.d")
    return tmp_path
