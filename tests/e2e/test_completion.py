"""Shell completion: the scripts `blanket completion SHELL` prints load in their shells, and
complete type names, task ids, schedule names and worker ids from a real server; a server
that cannot be reached completes nothing, without a traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import free_port, wait_until
from tests.e2e.test_cli import BLANKET, blanket

TYPES = {"echo": 'description = "say it"\ncommand = "echo hi"\n',
         "encode": 'command = "true"\n', "other": 'command = "true"\n'}
SCHEDULE = 'type = "echo"\nevery = "1h"\n'


def complete_in_bash(url: str, *words: str) -> list[str]:
    """What bash completes for `blanket --server URL WORDS...` with the script loaded."""
    line = " ".join(["blanket", "--server", url, *(f"'{w}'" for w in words)])
    script = (f'eval "$({BLANKET} completion bash)"\n'
              f"COMP_WORDS=({line})\nCOMP_CWORD={3 + len(words) - 1}\n"
              f"_blanket_completion {BLANKET}\n"
              'printf "%s\\n" "${COMPREPLY[@]}"\n')
    environ = {k: v for k, v in os.environ.items() if k not in ("BLANKET_SERVER",)}
    environ["PATH"] = f"{Path(BLANKET).parent}:{environ['PATH']}"
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60,
                          env=environ)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    return [line for line in done.stdout.splitlines() if line]


@pytest.fixture
def server(make_server):
    running = make_server(types=TYPES, start=False)
    running.write_schedule("hourly", SCHEDULE)
    return running.start()


def test_bash_completes_type_names_from_the_server(server):
    assert sorted(complete_in_bash(server.url, "submit", "e")) == ["echo", "encode"]
    assert sorted(complete_in_bash(server.url, "submit", "")) == ["echo", "encode", "other"]


def test_bash_completes_task_ids_schedules_and_workers(server, make_server):
    ids = [str(server.client.post("/task/", {"type": "other"})["id"]) for _ in range(3)]
    assert sorted(complete_in_bash(server.url, "logs", "")) == sorted(ids)
    assert sorted(complete_in_bash(server.url, "inspect", ids[0], "")) == sorted(ids)
    assert complete_in_bash(server.url, "schedule", "run", "h") == ["hourly"]
    make_server.worker(server, args=("--id", "w7"))
    wait_until(lambda: server.client.get("/worker/"))
    assert complete_in_bash(server.url, "pause", "w") == ["w7"]


def test_bash_completes_commands_and_options_too(server):
    assert "inspect" in complete_in_bash(server.url, "ins")
    assert "--json" in complete_in_bash(server.url, "ps", "--j")


def test_an_unreachable_server_completes_nothing_quietly():
    assert complete_in_bash(f"http://127.0.0.1:{free_port()}", "submit", "") == []


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_scripts_load_in_their_shells(shell: str, tmp_path: Path):
    text = blanket("completion", shell).stdout
    assert "_BLANKET_COMPLETE" in text
    program = shutil.which(shell)
    if program is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{shell} is missing: make test installs it (apt-get install {shell})")
        pytest.skip(f"needs {shell} (apt-get install {shell})")
    path = tmp_path / f"blanket.{shell}"
    path.write_text(text)
    command = ([program, "-c", f"autoload -Uz compinit && compinit -u; source {path}"]
               if shell == "zsh" else [program, "-c", f"source {path}"])
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_an_unknown_shell_is_a_usage_error():
    done = blanket("completion", "powershell", ok=False)
    assert done.returncode == 2 and "bash" in done.stderr
