"""The runner: one task in its scratch directory, from files and environment to process and logs."""

from __future__ import annotations

import json
import os
import stat
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from blanket.config.tasktype import FileSection, TaskType
from blanket.models import Task, TaskState
from blanket.worker.processes import find_program
from blanket.worker.progress import ProgressWatcher, parse_progress
from blanket.worker.runner import RunResult, TaskRun

pytestmark = pytest.mark.timeout(20)


def make_task(**fields: object) -> Task:
    values: dict = {"id": 7, "type": "demo", "state": TaskState.CLAIMED, "environment": {},
                    "tags": (), "score": 0.0, "added": 0.0, "version": "v1hash", "attempt": 2}
    values.update(fields)
    return Task(**values)


def make_type(command: str, **fields: object) -> TaskType:
    return TaskType(name="demo", command=command, **fields)


def write_bundle(root: Path, sections: dict[int, dict[str, str | bytes]]) -> Path:
    """A version bundle with files/<index>/<relpath> for each section."""
    for index, files in sections.items():
        for relpath, content in files.items():
            path = root / "files" / str(index) / relpath
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content)
    return root


def runner(tmp_path: Path, task_type: TaskType, task: Task | None = None, **options) -> TaskRun:
    bundle = tmp_path / "bundle"
    bundle.mkdir(exist_ok=True)
    return TaskRun(task or make_task(), task_type, bundle, tmp_path / "work", **options)


def run(tmp_path: Path, command: str, *, task: Task | None = None, **type_fields) -> RunResult:
    return runner(tmp_path, make_type(command, **type_fields), task).run()


def work(tmp_path: Path, name: str) -> str:
    return (tmp_path / "work" / name).read_text()


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def in_background(task_run: TaskRun) -> Future[RunResult]:
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(task_run.run)
    pool.shutdown(wait=False)
    return future


def running_processes() -> dict[int, tuple[str, int]]:
    """pid -> (state, process group) of every process that is not a zombie awaiting its reaper."""
    found = {}
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _ppid, pgrp = stat_file.read_text().rpartition(")")[2].split()[:3]
        except OSError:
            continue
        if state not in ("Z", "X"):
            found[int(stat_file.parent.name)] = (state, int(pgrp))
    return found


def process_gone(pid: int) -> bool:
    return pid not in running_processes()


def group_gone(pgid: int) -> bool:
    return all(pgrp != pgid for _state, pgrp in running_processes().values())


# Exit status


def test_exit_zero_is_success(tmp_path):
    assert run(tmp_path, "true") == RunResult(TaskState.SUCCESS, 0, None)


def test_nonzero_exit_is_failed_with_status(tmp_path):
    assert run(tmp_path, "exit 3") == RunResult(TaskState.FAILED, 3, "exited with status 3")


def test_death_by_signal_is_failed_with_signal_name(tmp_path):
    assert run(tmp_path, "kill -KILL $$") == RunResult(
        TaskState.FAILED, -9, "killed by signal SIGKILL")


def test_missing_executor_fails_the_task(tmp_path):
    result = run(tmp_path, "true", executor="/no/such/interpreter")
    assert result.state is TaskState.FAILED
    assert result.error.startswith("could not start executor '/no/such/interpreter'")


def _program(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\necho from " + str(folder) + "\n")
    path.chmod(0o755)
    return path


def test_find_program_searches_the_given_path_and_looks_again_once_it_is_gone(tmp_path):
    first = _program(tmp_path / "a", "tool-x")
    second = _program(tmp_path / "b", "tool-x")
    search = f"{tmp_path / 'a'}:{tmp_path / 'b'}"
    assert find_program("tool-x", search) == str(first)
    first.unlink()  # remembered, but checked: the next lookup finds the other one
    assert find_program("tool-x", search) == str(second)
    assert find_program("tool-x", str(tmp_path / "a")) == "tool-x"  # not found: left bare


def test_find_program_leaves_names_with_a_slash_or_a_relative_path_entry_alone(tmp_path):
    _program(tmp_path / "a", "tool-y")
    assert find_program("./tool-y", str(tmp_path / "a")) == "./tool-y"
    # "bin" means the task's directory/bin to the exec, not the worker's: no lookup here
    assert find_program("tool-y", f"bin:{tmp_path / 'a'}") == "tool-y"


def test_executor_is_found_on_the_tasks_own_path(tmp_path):
    tools = tmp_path / "tools"
    _program(tools, "myshell").write_text('#!/bin/sh\necho "ran by myshell: $1"\n')
    work = tmp_path / "work"
    task_type = make_type("true", executor="myshell")
    task = make_task(environment={"PATH": f"{tools}:/usr/bin:/bin"})
    result = TaskRun(task, task_type, tmp_path, work).run()
    assert result.state is TaskState.SUCCESS
    assert (work / "stdout.log").read_text().startswith("ran by myshell: ")


def test_unexpected_preparation_error_fails_the_task(tmp_path):
    (tmp_path / "blocker").write_text("a file where a directory should be")
    task_run = TaskRun(make_task(), make_type("true"), tmp_path, tmp_path / "blocker" / "work")
    result = task_run.run()
    assert result.state is TaskState.FAILED
    assert result.error.startswith("preparing the task failed: ")


def test_failing_callback_does_not_disturb_the_run(tmp_path):
    def broken(_pid: int) -> None:
        raise RuntimeError("server away")

    assert runner(tmp_path, make_type("true"), on_started=broken).run().state is TaskState.SUCCESS


# Output


def test_stdout_and_stderr_go_to_their_own_files(tmp_path):
    run(tmp_path, "echo out; echo err >&2")
    assert work(tmp_path, "stdout.log") == "out\n"
    assert work(tmp_path, "stderr.log") == "err\n"


def test_output_reaches_the_logs_while_the_process_runs(tmp_path):
    (tmp_path / "work").mkdir()
    os.mkfifo(tmp_path / "work" / "gate")
    future = in_background(runner(tmp_path, make_type("echo early; echo late >&2; read x < gate")))
    wait_for(lambda: (tmp_path / "work" / "stderr.log").exists()
             and work(tmp_path, "stderr.log") == "late\n")
    assert work(tmp_path, "stdout.log") == "early\n"
    assert not future.done()
    with open(tmp_path / "work" / "gate", "w") as gate:
        gate.write("go\n")
    assert future.result(timeout=5).state is TaskState.SUCCESS


def test_combine_output_writes_both_streams_to_output_log(tmp_path):
    run(tmp_path, "echo out; echo err >&2; echo again", combine_output=True)
    assert work(tmp_path, "output.log") == "out\nerr\nagain\n"
    assert not (tmp_path / "work" / "stdout.log").exists()


# Executors


def test_python_executor_runs_the_command_as_python(tmp_path):
    result = run(tmp_path, "import os\nprint(int(os.environ['N']) + 1)", executor="python",
                 task=make_task(environment={"N": "41"}))
    assert result.state is TaskState.SUCCESS
    assert work(tmp_path, "stdout.log") == "42\n"


def test_other_executor_gets_the_rendered_command_file(tmp_path):
    run(tmp_path, "hello {{ WHO }}", executor="cat", task=make_task(environment={"WHO": "you"}))
    assert work(tmp_path, "stdout.log") == "hello you\n"
    assert work(tmp_path, ".blanket-command") == "hello you\n"


# Command templates


def test_undefined_name_in_command_fails_before_start(tmp_path):
    started = []
    result = runner(tmp_path, make_type("ocr {{ INPUT }}"), on_started=started.append).run()
    message = "command: 'INPUT' is not defined; submit it in environment or give a default"
    assert result == RunResult(TaskState.FAILED, None, message)
    assert message in work(tmp_path, "stderr.log")
    assert started == []


@pytest.mark.parametrize("value", ["$(touch pwned)", "`touch pwned`", "x; touch pwned",
                                   "it's \"quoted\"", "two\nlines", "*"])
def test_submitted_value_reaches_the_command_as_literal_text(tmp_path, value):
    result = run(tmp_path, "printf '%s' {{ VALUE }} > value.txt",
                 task=make_task(environment={"VALUE": value}))
    assert result.state is TaskState.SUCCESS
    assert work(tmp_path, "value.txt") == value
    assert not (tmp_path / "work" / "pwned").exists()


def test_raw_filter_lets_the_type_author_pass_shell_syntax(tmp_path):
    run(tmp_path, "echo {{ EXPR | raw }}", defaults={"EXPR": "$((6 * 7))"})
    assert work(tmp_path, "stdout.log") == "42\n"


# Environment


def test_submitted_values_override_type_defaults(tmp_path):
    run(tmp_path, 'echo "$A $B"', defaults={"A": "1", "B": "2"},
        task=make_task(environment={"B": "3"}))
    assert work(tmp_path, "stdout.log") == "1 3\n"


def test_blanket_variables_describe_the_task(tmp_path):
    task_run = runner(tmp_path, make_type(
        'echo "$BLANKET_TASK_ID $BLANKET_TASK_TYPE $BLANKET_VERSION $BLANKET_ATTEMPT"\n'
        'echo "$BLANKET_SERVER"\necho "$BLANKET_WORKING_DIR"'), server_url="http://s:8773")
    task_run.run()
    assert work(tmp_path, "stdout.log") == f"7 demo v1hash 2\nhttp://s:8773\n{tmp_path / 'work'}\n"


def test_blanket_variables_override_submitted_values(tmp_path):
    run(tmp_path, "echo {{ BLANKET_TASK_ID }} $BLANKET_TASK_ID",
        task=make_task(environment={"BLANKET_TASK_ID": "999"}))
    assert work(tmp_path, "stdout.log") == "7 7\n"


def test_process_inherits_the_worker_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("FROM_WORKER", "inherited")
    run(tmp_path, 'echo "$FROM_WORKER"')
    assert work(tmp_path, "stdout.log") == "inherited\n"


def test_task_json_explains_the_run(tmp_path):
    run(tmp_path, "true", defaults={"A": "1"}, task=make_task(environment={"B": "2"}))
    data = json.loads(work(tmp_path, "task.json"))
    assert data["id"] == 7
    assert data["task_type"]["command"] == "true"
    assert data["run_environment"]["A"] == "1"
    assert data["run_environment"]["B"] == "2"
    assert data["run_environment"]["BLANKET_TASK_ID"] == "7"
    assert "token" not in data



def test_task_json_is_written_when_the_task_fails_before_it_starts(tmp_path):
    result = run(tmp_path, "echo {{ MISSING }}")
    assert result.state is TaskState.FAILED
    assert json.loads(work(tmp_path, "task.json"))["task_type"]["command"] == "echo {{ MISSING }}"


# Files


@pytest.fixture
def bundled(tmp_path: Path) -> Path:
    write_bundle(tmp_path / "bundle", {
        0: {"run.sh": "echo {{ GREETING }}\n", "sub/notes.txt": "for {{ BLANKET_TASK_ID }}\n",
            ".templateignore": "*.j2\n", "page.j2": "{{ left for later }}",
            "image.bin": b"\x89PNG\0{{ GREETING }}"},
        1: {"app.ini": "greeting = {{ GREETING }}\n"},
        2: {"raw.txt": "{{ GREETING }}\n"},
    })
    (tmp_path / "bundle" / "files" / "0" / "run.sh").chmod(0o750)
    return tmp_path / "bundle"


def run_bundled(tmp_path: Path, sections: tuple[FileSection, ...]) -> RunResult:
    task_type = make_type("true", files=sections, defaults={"GREETING": "hi there"})
    return runner(tmp_path, task_type).run()


SECTIONS = (FileSection("assets/"), FileSection("conf/", dest="etc/app"),
            FileSection("raw/", dest="raw", render=False))


def test_text_files_are_rendered_with_the_task_variables(tmp_path, bundled):
    assert run_bundled(tmp_path, SECTIONS).state is TaskState.SUCCESS
    assert work(tmp_path, "run.sh") == "echo hi there\n"
    assert work(tmp_path, "sub/notes.txt") == "for 7\n"


def test_section_lands_in_its_dest_subdirectory(tmp_path, bundled):
    run_bundled(tmp_path, SECTIONS)
    assert work(tmp_path, "etc/app/app.ini") == "greeting = hi there\n"


def test_templateignore_matches_are_copied_verbatim(tmp_path, bundled):
    run_bundled(tmp_path, SECTIONS)
    assert work(tmp_path, "page.j2") == "{{ left for later }}"


def test_templateignore_itself_is_not_copied(tmp_path, bundled):
    run_bundled(tmp_path, SECTIONS)
    assert not (tmp_path / "work" / ".templateignore").exists()


def test_binary_files_are_copied_verbatim(tmp_path, bundled):
    run_bundled(tmp_path, SECTIONS)
    assert (tmp_path / "work" / "image.bin").read_bytes() == b"\x89PNG\0{{ GREETING }}"


def test_section_without_render_is_copied_verbatim(tmp_path, bundled):
    run_bundled(tmp_path, SECTIONS)
    assert work(tmp_path, "raw/raw.txt") == "{{ GREETING }}\n"


def test_rendered_files_keep_their_mode(tmp_path, bundled):
    run_bundled(tmp_path, SECTIONS)
    assert stat.S_IMODE((tmp_path / "work" / "run.sh").stat().st_mode) == 0o750


def test_uploaded_inputs_in_the_work_dir_are_kept(tmp_path, bundled):
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "input.pdf").write_bytes(b"%PDF")
    run_bundled(tmp_path, SECTIONS)
    assert (tmp_path / "work" / "input.pdf").read_bytes() == b"%PDF"


def test_home_dest_lands_in_the_home_directory(tmp_path, bundled, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    run_bundled(tmp_path, (FileSection("a/"), FileSection("conf/", dest="~/.config/app")))
    assert (tmp_path / "home" / ".config" / "app" / "app.ini").exists()


@pytest.mark.parametrize("dest", ["../elsewhere", "a/../../elsewhere", "/etc", "~/../x"])
def test_dest_outside_the_task_directory_fails_the_task(tmp_path, bundled, dest):
    result = run_bundled(tmp_path, (FileSection("a/", dest=dest),))
    assert result.state is TaskState.FAILED
    assert f"files dest {dest!r} points outside" in result.error


def test_undefined_name_in_a_file_fails_the_task_naming_the_file(tmp_path):
    write_bundle(tmp_path / "bundle", {0: {"conf/app.ini": "port = {{ PORT }}\n"}})
    result = runner(tmp_path, make_type("true", files=(FileSection("x/"),))).run()
    assert result.state is TaskState.FAILED
    assert result.error.startswith("conf/app.ini: 'PORT' is not defined")


# Progress


def test_parse_progress_reads_value_and_message_on_one_line():
    assert parse_progress("42 reading page 3\n") == (42, "reading page 3")


def test_parse_progress_reads_message_on_the_next_line():
    assert parse_progress("42\nreading page 3\n") == (42, "reading page 3")


def test_parse_progress_clamps_to_0_100():
    assert parse_progress("150") == (100, None)
    assert parse_progress("-5") == (0, None)


def test_parse_progress_ignores_text_without_a_number():
    assert parse_progress("almost done") is None
    assert parse_progress("") is None


def test_progress_watcher_reports_only_changes(tmp_path):
    path = tmp_path / ".progress"
    watcher = ProgressWatcher(path)
    assert watcher.poll() is None
    path.write_text("10 start")
    assert watcher.poll() == (10, "start")
    assert watcher.poll() is None
    path.write_text("20 later")
    assert watcher.poll() == (20, "later")


def test_progress_file_is_reported_while_running_and_at_the_end(tmp_path):
    (tmp_path / "work").mkdir()
    os.mkfifo(tmp_path / "work" / "gate")
    reports: list[tuple[int, str | None]] = []
    first = threading.Event()

    def on_progress(value: int, message: str | None) -> None:
        reports.append((value, message))
        first.set()

    task_run = runner(tmp_path, make_type(
        "echo '10 starting' > .progress; read x < gate; printf '150\\nall done\\n' > .progress"),
        on_progress=on_progress)
    future = in_background(task_run)
    assert first.wait(5)
    with open(tmp_path / "work" / "gate", "w") as gate:
        gate.write("go\n")
    assert future.result(timeout=5).state is TaskState.SUCCESS
    assert reports == [(10, "starting"), (100, "all done")]



def test_an_earlier_attempts_progress_is_not_reported_again(tmp_path):
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / ".progress").write_text("80 from the last attempt\n")
    reports: list[tuple[int, str | None]] = []
    task_run = runner(tmp_path, make_type("true"),
                      on_progress=lambda value, message: reports.append((value, message)))
    assert task_run.run().state is TaskState.SUCCESS
    assert reports == [] and not (tmp_path / "work" / ".progress").exists()


def test_a_missing_parent_folder_is_made(tmp_path):
    task_run = TaskRun(make_task(), make_type("pwd"), tmp_path, tmp_path / "a" / "b" / "work")
    assert task_run.run().state is TaskState.SUCCESS
    assert (tmp_path / "a" / "b" / "work" / "stdout.log").read_text().strip().endswith("work")


# Timeout and stop


def test_timeout_ends_the_task_and_its_whole_process_group(tmp_path):
    started: list[int] = []
    task_run = runner(tmp_path, make_type("sleep 30 & echo $! > child.pid; wait", timeout=0.3),
                      on_started=started.append, grace=1.0)
    result = task_run.run()
    assert result.state is TaskState.TIMEDOUT
    assert result.error == "timed out after 0.3s"
    assert process_gone(int(work(tmp_path, "child.pid")))
    assert group_gone(started[0])


def test_task_timeout_overrides_the_type_timeout(tmp_path):
    result = run(tmp_path, "sleep 30", timeout=60.0, task=make_task(timeout=0.2))
    assert result.state is TaskState.TIMEDOUT


def test_process_ignoring_term_is_killed_after_grace(tmp_path):
    task_run = runner(tmp_path, make_type("trap '' TERM; sleep 30", timeout=0.2), grace=0.3)
    begun = time.monotonic()
    assert task_run.run().state is TaskState.TIMEDOUT
    assert time.monotonic() - begun < 3


def test_stop_ends_the_task_within_a_second(tmp_path):
    started = threading.Event()
    task_run = runner(tmp_path, make_type("sleep 30"), on_started=lambda _pid: started.set())
    future = in_background(task_run)
    assert started.wait(5)
    asked = time.monotonic()
    task_run.stop()
    result = future.result(timeout=5)
    assert time.monotonic() - asked < 1
    assert result.state is TaskState.STOPPED


def test_stop_before_the_start_runs_nothing(tmp_path):
    task_run = runner(tmp_path, make_type("touch ran"))
    task_run.stop()
    assert task_run.run().state is TaskState.STOPPED
    assert not (tmp_path / "work" / "ran").exists()


def test_background_child_is_killed_when_the_task_ends(tmp_path):
    result = run(tmp_path, "sleep 30 & echo $! > child.pid")
    assert result.state is TaskState.SUCCESS
    assert process_gone(int(work(tmp_path, "child.pid")))


# Checks


def test_failing_check_fails_the_task_before_it_starts(tmp_path):
    check = "echo first >&2; echo no gpu >&2; exit 3"
    result = run(tmp_path, "touch ran", checks=("true", check))
    assert result == RunResult(TaskState.FAILED, None, f"check failed: {check} (exit 3): no gpu")
    assert not (tmp_path / "work" / "ran").exists()


def test_checks_run_in_the_work_dir_with_the_task_environment(tmp_path):
    result = run(tmp_path, "true", checks=('test "$BLANKET_TASK_ID" = 7 && test "$(pwd -P)" = '
                                        '"$(cd "$BLANKET_WORKING_DIR" && pwd -P)"',))
    assert result.state is TaskState.SUCCESS


# The command: an argument where that keeps no secret, else a private file


def test_a_shell_command_is_passed_as_an_argument_without_a_file(tmp_path):
    result = run(tmp_path, "tr '\\0' ' ' < /proc/$$/cmdline > cmdline.txt; echo {{ WHO }}",
                 task=make_task(environment={"WHO": "you"}))
    assert result.state is TaskState.SUCCESS and work(tmp_path, "stdout.log") == "you\n"
    assert " -c " in work(tmp_path, "cmdline.txt")
    assert not (tmp_path / "work" / ".blanket-command").exists()


def test_a_command_holding_a_secret_value_goes_in_a_private_file(tmp_path):
    task = make_task(environment={"PW": "hunter2-secret"}, secrets=("PW",))
    result = run(tmp_path, "tr '\\0' ' ' < /proc/$$/cmdline > cmdline.txt; echo {{ PW }}",
                 task=task)
    assert result.state is TaskState.SUCCESS and work(tmp_path, "stdout.log") == "hunter2-secret\n"
    assert "hunter2-secret" not in work(tmp_path, "cmdline.txt")
    script = tmp_path / "work" / ".blanket-command"
    assert "hunter2-secret" in script.read_text()
    assert stat.S_IMODE(script.stat().st_mode) == 0o600


def test_a_command_holding_the_attempt_token_goes_in_a_private_file(tmp_path):
    run(tmp_path, "echo {{ BLANKET_TASK_TOKEN }}", task=make_task(token="tok-123"))
    assert work(tmp_path, "stdout.log") == "tok-123\n"
    assert "tok-123" in work(tmp_path, ".blanket-command")


def test_a_command_too_long_for_an_argument_goes_in_a_file(tmp_path):
    long_line = "#" + "x" * (70 * 1024) + "\necho done"
    result = run(tmp_path, long_line)
    assert result.state is TaskState.SUCCESS and work(tmp_path, "stdout.log") == "done\n"
    assert (tmp_path / "work" / ".blanket-command").exists()


# task.json: written once, when the run ends


def test_task_json_is_written_once_at_the_end_with_how_the_run_ended(tmp_path):
    seen_at_start = []
    task_run = runner(tmp_path, make_type("echo out; exit 3"), on_started=lambda pid:
                      seen_at_start.append((tmp_path / "work" / "task.json").exists()))
    result = task_run.run()
    assert result == RunResult(TaskState.FAILED, 3, "exited with status 3")
    assert seen_at_start == [False]
    record = json.loads(work(tmp_path, "task.json"))
    assert (record["state"], record["exit_code"], record["error"]) == (
        "FAILED", 3, "exited with status 3")
    assert record["started"] <= record["finished"]


def test_a_task_whose_record_cannot_be_written_ends_failed_saying_so(tmp_path):
    (tmp_path / "work" / "task.json").mkdir(parents=True)  # in the way of the record
    result = run(tmp_path, "echo ran")
    assert result.state is TaskState.FAILED and "could not write task.json" in result.error
    assert work(tmp_path, "stdout.log") == "ran\n"


def test_start_then_wait_is_run_in_two_steps(tmp_path):
    started = []
    task_run = runner(tmp_path, make_type("echo two steps"), on_started=started.append)
    assert task_run.start() is None and len(started) == 1
    assert task_run.wait() == RunResult(TaskState.SUCCESS, 0, None)
    assert work(tmp_path, "stdout.log") == "two steps\n"


def test_a_command_naming_a_secret_or_holding_it_quoted_goes_in_a_file(tmp_path):
    # named in the template, even when the value is not visible in the text
    task = make_task(environment={"PW": "x"}, secrets=("PW",))
    run(tmp_path, "echo {{ PW }} > /dev/null; echo done", task=task)
    assert (tmp_path / "work" / ".blanket-command").exists()


def test_a_secret_value_changed_by_shell_quoting_is_still_kept_out_of_the_arguments(tmp_path):
    tricky = "zq'xv"
    task = make_task(environment={"OTHER": tricky}, secrets=("PW",))
    task_type = make_type("tr '\\0' ' ' < /proc/$$/cmdline > cmdline.txt; echo {{ OTHER }}",
                          defaults={"PW": tricky})
    result = runner(tmp_path, task_type, task).run()
    assert result.state is TaskState.SUCCESS
    assert "zq" not in work(tmp_path, "cmdline.txt")
    assert (tmp_path / "work" / ".blanket-command").exists()
