"""The systemd units in examples/systemd: systemd-analyze verify finds no problem (not even a
warning), and their command lines are ones `blanket` accepts."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

UNITS = Path(__file__).resolve().parents[2] / "examples" / "systemd"
BLANKET = str(Path(sys.executable).parent / "blanket")
INSTALLED = "/opt/blanket/bin/blanket"  # where the units expect blanket
SAMPLE_ENV = {"WORKER_TAGS": "unix,bash", "WORKER_SLOTS": "2"}


def analyze() -> str:
    program = shutil.which("systemd-analyze")
    if program is None:
        if os.environ.get("CI") == "true":
            pytest.fail("systemd-analyze is missing (Debian's systemd package)")
        pytest.skip("needs systemd-analyze")
    return program


@pytest.mark.parametrize("name", ["blanket.service", "blanket-worker@.service"])
def test_the_unit_verifies_without_a_warning(name: str, tmp_path: Path):
    text = (UNITS / name).read_text().replace(INSTALLED, BLANKET)
    unit = tmp_path / name.replace("@.", "@ci.")  # an instance of a template
    unit.write_text(text)
    done = subprocess.run([analyze(), "verify", str(unit)], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr


@pytest.mark.parametrize("name", ["blanket.service", "blanket-worker@.service"])
def test_the_units_command_line_is_one_blanket_accepts(name: str):
    line = next(line for line in (UNITS / name).read_text().splitlines()
                if line.startswith("ExecStart="))
    words = shlex.split(line.removeprefix("ExecStart=").replace("%i", "ci"))
    assert words[0] == INSTALLED
    args = [SAMPLE_ENV.get(w[2:-1], w) if w.startswith("${") else w for w in words[1:]]
    done = subprocess.run([BLANKET, *args, "--help"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr  # an unknown option would exit 2
