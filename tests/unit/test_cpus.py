"""server_cpus: what the server starts gets every CPU back, including what that starts at
once, before the server's thread that started it runs again."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

# In a process of its own: confining this one would confine the test run.
PROBE = textwrap.dedent("""
    import os, threading
    from blanket.models import Delivery
    from blanket.server import cpus
    from blanket.server.notifysend import run_command

    first = min(os.sched_getaffinity(0))
    cpus.confine((first,))
    for _ in range(3):  # the server busy: its thread waits for the interpreter after a start
        threading.Thread(target=lambda: [sum(range(1000)) for _ in iter(int, 1)],
                         daemon=True).start()
    delivery = Delivery(id=1, task_id=7, task_type="t", event="failed", target_key="k",
                        target={}, state="pending", attempts=1, created=0.0, next_at=0.0)
    confined = 0
    for _ in range(20):
        sent = run_command("grep Cpus_allowed_list /proc/self/status; true", b"", delivery,
                           None, 10)
        confined += sent.result.rsplit(":", 1)[1].strip() == str(first)
    print(confined, os.sched_getaffinity(0) == {first})
""")


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2 and os.environ.get("CI") != "true",
                    reason="needs 2 CPUs (in CI it runs, and fails without them)")
def test_what_a_notification_command_starts_at_once_is_not_confined():
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.split() == ["0", "True"]  # and the server's thread confined again


def test_a_system_without_cpu_affinity_is_told_to_leave_server_cpus_unset(monkeypatch):
    from blanket.errors import InvalidInput
    from blanket.server import cpus

    monkeypatch.delattr(os, "sched_setaffinity")
    with pytest.raises(InvalidInput, match=r"needs Linux.*leave server_cpus unset"):
        cpus.confine((0,))
    cpus.confine(())  # unset: nothing to do, on any system
