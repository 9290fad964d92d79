"""Two servers on one PostgreSQL database, as a team grows past one machine: a task
submitted through one reaches an idle worker of the other at once, and the submitter hears
of its end through the server it asked."""

from __future__ import annotations

import time

import pytest

from tests.conftest import wait_until
from tests.store.conftest import fresh_postgres_database

ECHO = 'command = "echo hello from $BLANKET_TASK_ID"\n'
pytestmark = pytest.mark.timeout(60)


def test_a_task_submitted_through_one_server_runs_on_a_worker_of_the_other(make_server,
                                                                            tmp_path):
    with fresh_postgres_database() as url:
        env = {"BLANKET_DATABASE": url}
        front = make_server(types={"echo": ECHO}, base=tmp_path / "front", env=env)
        back = make_server(types={"echo": ECHO}, base=tmp_path / "back", env=env)
        make_server.worker(back, args=("--id", "behind"))
        wait_until(lambda: front.client.get("/worker/"))  # one store: both list it
        for _ in range(3):
            began = time.monotonic()
            # the worker waits in a long poll on the other server: only the store's
            # notification can wake it, and only it can tell this server the task ended
            done = front.client.post("/task/?wait=20", {"type": "echo"})
            assert (done["state"], done["worker"]) == ("SUCCESS", "behind")
            assert time.monotonic() - began < 5  # not a long poll's 30 s, nor ?wait's 20
        for server in (front, back):
            server.stop()
