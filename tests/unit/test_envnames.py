"""The largest variable a process can be given: refused where it is written, not when the
task fails to start."""

from __future__ import annotations

import subprocess

import pytest

from blanket.config.problems import ConfigInvalid
from blanket.config.tasktype import TaskType
from blanket.config.typefile import parse_type_file
from blanket.envnames import MAX_VARIABLE_BYTES, too_long
from blanket.errors import InvalidInput
from blanket.server.intake import clean_environment

# NAME=value with its NUL at exactly the most Linux takes, and one byte more.
LARGEST = "X" * (MAX_VARIABLE_BYTES - len("BIG=") - 1)


def test_the_bound_is_the_kernel_s():
    assert too_long("BIG", LARGEST) is None
    assert subprocess.run(["/bin/true"], env={"BIG": LARGEST}).returncode == 0
    assert too_long("BIG", LARGEST + "X") == (
        f"BIG is {MAX_VARIABLE_BYTES} bytes as NAME=value; a process takes at most "
        f"{MAX_VARIABLE_BYTES - 1} a variable: pass large values as files")
    with pytest.raises(OSError, match="Argument list too long"):
        subprocess.run(["/bin/true"], env={"BIG": LARGEST + "X"})


def test_a_submission_with_a_variable_too_long_to_pass_is_refused():
    task_type = TaskType(name="t", command="true", extra_environment=("BIG",))
    assert clean_environment(task_type, {"BIG": LARGEST})["BIG"] == LARGEST
    with pytest.raises(InvalidInput, match="environment BIG is 131073 bytes as NAME=value"):
        clean_environment(task_type, {"BIG": LARGEST + "é"})  # bytes count: é is two


def test_a_type_default_too_long_to_pass_is_a_problem_with_its_line(tmp_path):
    path = tmp_path / "big.toml"
    path.write_text(f'command = "true"\n[environment.defaults]\nBIG = "{LARGEST}X"\n')
    with pytest.raises(ConfigInvalid) as refused:
        parse_type_file(path)
    assert "big.toml:3: environment.defaults.BIG: BIG is 131072 bytes as NAME=value" in str(
        refused.value)
