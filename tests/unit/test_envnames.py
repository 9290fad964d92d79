"""The largest variable, and the most variables in all, a task can be given: refused where
they are written, not when the task fails to start."""

from __future__ import annotations

import os
import subprocess

import pytest

from blanket.config.problems import ConfigInvalid
from blanket.config.schedule import parse_schedule_text
from blanket.config.tasktype import TaskType
from blanket.config.typefile import parse_type_file
from blanket.envnames import MAX_ENVIRONMENT_BYTES, MAX_VARIABLE_BYTES, too_big, too_long
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


def _filling(total: int) -> dict[str, str]:
    """Variables V0, V1, ... of 100,000 bytes as NAME=value (with NULs) or less, `total` in
    all: each well under the one-variable limit."""
    values, index = {}, 0
    while total > 0:
        name = f"V{index}"
        size = min(100_000, total)
        values[name] = "x" * (size - len(name) - 2)
        total -= size
        index += 1
    return values


def test_the_total_bound_leaves_a_process_room_to_start():
    largest = _filling(MAX_ENVIRONMENT_BYTES)
    assert too_big(largest) is None
    # with this process's own environment beside it, as a worker gives a task
    assert subprocess.run(["/bin/true"], env={**os.environ, **largest}).returncode == 0
    over = _filling(MAX_ENVIRONMENT_BYTES + 1)
    assert too_big(over) == (
        f"its variables come to {MAX_ENVIRONMENT_BYTES + 1} bytes as NAME=value; the most "
        f"is {MAX_ENVIRONMENT_BYTES}: pass large values as files")


def test_a_submission_whose_variables_are_too_many_in_all_is_refused():
    task_type = TaskType(name="t", command="true", extra_environment=("*",),
                         defaults={"D": "x" * 50_000})
    submitted = _filling(MAX_ENVIRONMENT_BYTES - 50_003)  # D=value and its NUL: 50,003
    assert len(clean_environment(task_type, submitted)) == len(submitted) + 1
    with pytest.raises(InvalidInput, match=r"environment: its variables come to 1048577 bytes "
                       r"as NAME=value \(its type's \[environment.defaults\] give 50003 of "
                       r"them\)"):
        clean_environment(task_type, {**submitted, "V0": submitted["V0"] + "x"})
    # a default the submission replaces is the submission's share, not the type's
    with pytest.raises(InvalidInput) as refused:
        clean_environment(task_type, {**submitted, "D": "y" * 50_001})
    assert "defaults" not in str(refused.value)


def test_a_type_s_or_schedule_s_variables_too_many_in_all_are_a_problem(tmp_path):
    lines = "".join(f'{name} = "{value}"\n' for name, value in
                    _filling(MAX_ENVIRONMENT_BYTES + 1).items())
    path = tmp_path / "big.toml"
    path.write_text(f'command = "true"\n[environment.defaults]\n{lines}')
    with pytest.raises(ConfigInvalid) as refused:
        parse_type_file(path)
    assert (f"big.toml:2: environment.defaults: its variables come to "
            f"{MAX_ENVIRONMENT_BYTES + 1} bytes") in str(refused.value)
    with pytest.raises(ConfigInvalid) as refused:
        parse_schedule_text(f'command = "true"\nevery = "1h"\n[environment]\n{lines}',
                            "big", "big.toml")
    fire_time = len("BLANKET_FIRE_TIME=2027-01-15T08:00:00.000Z") + 1  # each fire adds it
    assert (f"big.toml:3: environment: with the BLANKET_FIRE_TIME each fire adds, its "
            f"variables come to {MAX_ENVIRONMENT_BYTES + 1 + fire_time} bytes"
            ) in str(refused.value)


def test_a_schedule_within_the_bound_but_for_its_fire_time_is_a_problem():
    # Every fire adds BLANKET_FIRE_TIME (43 bytes as NAME=value): a schedule whose own
    # variables leave less room than that would have every fire refused, and only logged.
    def schedule(size: int) -> str:
        lines = "".join(f'{name} = "{value}"\n' for name, value in _filling(size).items())
        return f'command = "true"\nevery = "1h"\n[environment]\n{lines}'

    parse_schedule_text(schedule(MAX_ENVIRONMENT_BYTES - 43), "fits", "fits.toml")
    with pytest.raises(ConfigInvalid) as refused:
        parse_schedule_text(schedule(MAX_ENVIRONMENT_BYTES - 20), "tight", "tight.toml")
    assert ("tight.toml:3: environment: with the BLANKET_FIRE_TIME each fire adds, its "
            f"variables come to {MAX_ENVIRONMENT_BYTES + 23} bytes") in str(refused.value)


def test_a_schedule_over_the_bound_with_its_type_s_defaults_is_a_problem(tmp_path):
    # Each file alone is within the bound; every fire would be refused at intake, so the
    # schedule says so in the config (the catalog, and `blanket validate`).
    from blanket.config.schedule import parse_schedule_file
    from blanket.server.catalog import Catalog, validate_config_dir

    conf = tmp_path / "conf.d"
    (conf / "types").mkdir(parents=True)
    (conf / "schedules").mkdir()
    pads = "".join(f'PAD{n} = "{"d" * 100_000}"\n' for n in range(5))  # 500,030 bytes
    (conf / "types" / "env.toml").write_text(
        f'command = "true"\n[environment.defaults]\n{pads}')
    bigs = "".join(f'BIG{n} = "{"v" * 100_000}"\n' for n in range(5))
    schedule = conf / "schedules" / "nightly.toml"
    schedule.write_text(f'type = "env"\nevery = "1h"\n\n[environment]\n{bigs}')
    catalog = Catalog(conf, tmp_path / "versions", schedule_parser=parse_schedule_file)
    catalog.scan()
    assert catalog.schedules()[0].problems == ()  # 1,000,060 bytes: within the bound
    schedule.write_text(f'type = "env"\nevery = "1h"\n\n[environment]\n{bigs}'
                        f'BIG5 = "{"v" * 100_000}"\n')
    catalog.scan()
    [problem] = catalog.schedules()[0].problems
    assert (problem.file, problem.line) == (str(schedule), 4)
    assert problem.message == (
        "environment: with the defaults of type 'env', its variables come to 1100109 bytes "
        "as NAME=value (its type's [environment.defaults] give 500030 of them); the most is "
        f"{MAX_ENVIRONMENT_BYTES}: pass large values as files")
    assert [p.message for p in validate_config_dir(conf, parse_schedule_file)] == \
        [problem.message]
