"""Type inheritance on a real server: children of an abstract base run the base's command
with their own values; the base is listed nowhere and cannot be submitted; editing the base
gives every child a new version at once (hot reload); a cycle is a problem with its line."""

from __future__ import annotations

import pytest

from blanket.client import ClientError
from tests.conftest import wait_until

BASE = """\
abstract = true
description = "greets"
command = "echo {{ GREETING }} {{ NAME }} from $BLANKET_TASK_TYPE"
timeout = "1m"

[environment.defaults]
GREETING = "hello"
NAME = "world"
"""
CHILD_FR = 'extends = "greeter"\ndescription = "in French"\n[environment.defaults]\n' \
           'GREETING = "bonjour"\n'
CHILD_PLAIN = 'extends = "greeter"\n'


def run(server, type_name: str, **environment: str) -> str:
    task = server.client.post("/task/", {"type": type_name, "environment": environment})
    done = server.wait_for_task(task["id"])
    assert done["state"] == "SUCCESS", done
    return (server.data_dir / "tasks" / type_name / str(task["id"]) / "stdout.log").read_text(
    ).strip()


def version(server, name: str) -> str:
    return server.client.get(f"/task_type/{name}")["version"]


def test_children_run_their_bases_command_with_their_own_values(make_server):
    server = make_server(types={"greeter": BASE, "french": CHILD_FR, "plain": CHILD_PLAIN})
    make_server.worker(server)
    names = [t["name"] for t in server.client.get("/task_type/")]
    assert "greeter" not in names and {"french", "plain"} <= set(names)
    assert run(server, "french", NAME="Ada") == "bonjour Ada from french"
    assert run(server, "plain") == "hello world from plain"
    french = server.client.get("/task_type/french")
    assert french["definition"]["bases"] == ["greeter"]
    assert french["definition"]["timeout"] == 60

    with pytest.raises(ClientError) as refused:
        server.client.post("/task/", {"type": "greeter"})
    assert refused.value.status == 400 and "abstract" in str(refused.value)

    before = {name: version(server, name) for name in ("french", "plain")}
    server.write_type("greeter", BASE.replace("echo", "echo edited:"))
    wait_until(lambda: all(version(server, n) != v for n, v in before.items()), timeout=10)
    assert run(server, "plain") == "edited: hello world from plain"
    assert server.client.get("/health")["config_problems"] == []


def test_a_cycle_is_a_problem_and_the_last_good_version_is_kept(make_server):
    server = make_server(types={"greeter": BASE, "plain": CHILD_PLAIN})
    good = version(server, "plain")
    server.write_type("greeter", "extends = \"plain\"\n" + BASE)
    broken = wait_until(lambda: (t := server.client.get("/task_type/plain"))["problems"] and t,
                        timeout=10)
    assert broken["version"] == good  # the last good definition still serves
    [problem] = [p for p in broken["problems"] if "cycle" in p["message"]]
    assert problem["line"] == 1 and "plain -> greeter -> plain" in problem["message"]
