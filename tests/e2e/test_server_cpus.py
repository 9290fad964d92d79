"""server_cpus: every thread of the server runs on the CPUs named, while the processes it
starts (its local workers, and the tasks they run) get every CPU back; a CPU the server may
not use is refused at start, naming those it may."""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import wait_until

PROBE = 'command = "grep Cpus_allowed_list /proc/self/status > cpus.txt"\n'


def allowed(pid: int | str) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no Cpus_allowed_list for {pid}")


def test_the_servers_threads_run_on_its_cpus_and_its_tasks_on_every_one(make_server):
    everything = allowed("self")
    first = min(os.sched_getaffinity(0))
    server = make_server(types={"probe": PROBE}, env={"BLANKET_SERVER_CPUS": str(first),
                                                      "BLANKET_WORKERS": "1"})
    wait_until(lambda: server.client.get("/worker/"), timeout=30)
    task = server.client.post("/task/?wait=30", {"type": "probe"})
    assert task["state"] == "SUCCESS"
    assert server.proc is not None
    threads = list(Path(f"/proc/{server.proc.pid}/task").iterdir())
    assert len(threads) > 5  # granian's and the server's own, started after it was confined
    assert {allowed(f"{server.proc.pid}/task/{t.name}") for t in threads} == {str(first)}
    ran = (server.data_dir / "tasks" / "probe" / str(task["id"]) / "cpus.txt").read_text()
    assert ran.split(":", 1)[1].strip() == everything
    worker = server.client.get("/worker/")[0]
    assert allowed(worker["pid"]) == everything


def test_a_cpu_the_server_may_not_use_is_refused_naming_those_it_may(make_server):
    server = make_server(start=False, env={"BLANKET_SERVER_CPUS": "4095"})
    server.start(wait=False)
    assert server.proc is not None and server.proc.wait(30) != 0
    said = server.log.read_text()
    assert "server_cpus: CPU 4095 is not one this server may run on; use some of" in said
