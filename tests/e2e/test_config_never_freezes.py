"""A running server with a broken file in its config directory: the broken file is a
problem in /health, GET /task_type/ and `blanket validate`; the type it breaks keeps its
last good version; every other change still loads; fixing the file clears the problem."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import wait_until

WITH_ASSETS = 'command = "cat run.sh"\n[[files]]\nsrc = "assets/"\n'


@pytest.mark.parametrize("content", [b"*.bak\n\\\n", b"*.bak\n!\n", b"*.bak\n[z-a]\n",
                                     b"*.bak\n\xff\xfe\n"])
def test_a_bad_blanketignore_is_reported_and_the_rest_keeps_loading(make_server, content):
    server = make_server(types={"assets_user": WITH_ASSETS})
    assets = server.config_dir / "types" / "assets"
    assets.mkdir()
    (assets / "run.sh").write_text("echo one\n")
    server.write_type("assets_user", WITH_ASSETS + "# touched\n")
    good = wait_until(lambda: server.client.get("/task_type/assets_user")["version"])

    ignore = assets / ".blanketignore"
    ignore.write_bytes(content)
    (assets / "run.sh").write_text("echo two\n")
    where = {"file": str(ignore), "line": 2}

    def reported() -> bool:
        problems = server.client.get("/health")["config_problems"]
        return [{k: p[k] for k in ("file", "line")} for p in problems] == [where]

    wait_until(reported)
    shown = server.client.get("/task_type/assets_user")
    assert shown["version"] == good and shown["problems"][0]["line"] == 2
    assert server.client.post("/task/", {"type": "assets_user"})["state"] == "QUEUED"

    server.write_type("later", 'command = "echo later"\n')  # the config is not frozen
    wait_until(lambda: any(t["name"] == "later" and t["version"]
                           for t in server.client.get("/task_type/")))

    checked = subprocess.run([sys.executable, "-m", "blanket", "validate",
                              str(server.config_dir)], capture_output=True, text=True)
    assert checked.returncode == 1
    assert f"{ignore}:2:" in checked.stderr and "Traceback" not in checked.stderr

    ignore.write_text("*.bak\n")
    wait_until(lambda: not server.client.get("/health")["config_problems"])
    fixed = server.client.get("/task_type/assets_user")
    assert fixed["version"] != good and not fixed["problems"]
