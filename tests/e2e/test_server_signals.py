"""The server stops gracefully on SIGTERM and SIGINT, releasing requests that wait."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

from tests.conftest import wait_until

ECHO = 'command = "echo hi"\n'


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_server_cleanly_and_releases_long_polls(make_server, sig):
    server = make_server(types={"echo": ECHO})
    worker = server.client.post("/worker/", {"id": "w", "tags": [], "host": "h",
                                             "pid": os.getpid()})["id"]
    answers: list[int] = []

    def long_poll() -> None:
        try:
            answers.append(server.client.request("POST", f"/worker/{worker}/claim?wait=60",
                                                 body={}, ok=(204,))[0])
        except Exception:
            answers.append(-1)

    poller = threading.Thread(target=long_poll)
    poller.start()
    time.sleep(0.3)  # the claim is waiting in the server
    began = time.monotonic()
    assert server.stop(sig) == 0
    assert time.monotonic() - began < 10
    poller.join(10)
    assert answers == [204]
    assert "blanket stopped" in server.log_text()


def test_the_server_logs_to_a_file_in_its_data_dir_by_default(make_server):
    server = make_server()
    log = server.data_dir / "log" / "blanket.log"
    wait_until(lambda: log.exists() and "blanket serving" in log.read_text(), timeout=20)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    serving = next(line for line in lines if line["event"] == "blanket serving")
    assert serving["level"] == "info" and "timestamp" in serving
    # made owner-only, like the data dir (which the log's folder must not make first)
    assert log.parent.stat().st_mode & 0o777 == 0o700
    assert server.data_dir.stat().st_mode & 0o777 == 0o700
    assert "can be read by other users" not in server.log_text()
