"""A blanket process keeps its environment from the tasks it runs (not dumpable), and the
programs it starts are dumpable again (a task is unchanged)."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import subprocess, sys
from blanket.undumpable import is_private, keep_private
before = is_private()
assert keep_private()
child = subprocess.run([sys.executable, "-c",
                        "from blanket.undumpable import is_private; print(is_private())"],
                       capture_output=True, text=True, check=True).stdout.strip()
print(before, is_private(), child)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")
def test_a_process_made_private_starts_programs_that_are_not():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True", "False"]


def test_the_server_and_worker_commands_make_themselves_private():
    from blanket import cli
    for command in ("server", "worker"):
        source = cli.cli.commands[command].callback.__wrapped__.__code__.co_names  # type: ignore
        assert "keep_private" in source, command
