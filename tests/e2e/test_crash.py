"""Durability: a task answered 201 survives the server being killed with SIGKILL."""

from __future__ import annotations

import http.client
import json
import threading
from collections import Counter

from tests.conftest import wait_until

ECHO = 'command = "echo {{ SEQ }}"\nallow_extra_environment = ["SEQ"]\n'
ROUNDS = 3


class Submitter(threading.Thread):
    """Submits tasks back to back on one keep-alive connection until the server goes away,
    recording (sequence number, id) for every 201."""

    def __init__(self, port: int, first_seq: int):
        super().__init__(daemon=True)
        self.port = port
        self.seq = first_seq
        self.answered: list[tuple[int, int]] = []

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            while True:
                body = json.dumps({"type": "echo", "environment": {"SEQ": self.seq}})
                connection.request("POST", "/task/", body=body,
                                   headers={"Content-Type": "application/json"})
                response = connection.getresponse()
                answer = json.loads(response.read())
                if response.status == 201:
                    self.answered.append((self.seq, answer["id"]))
                self.seq += 1
        except (OSError, http.client.HTTPException, ValueError):
            return  # the server was killed
        finally:
            connection.close()


def all_tasks(server) -> list[dict]:
    total = server.client.get("/task/?count")["count"]
    return server.client.get(f"/task/?order=oldest&limit={total + 1}")


def test_every_task_answered_201_survives_sigkill_exactly_once(make_server):
    server = make_server(types={"echo": ECHO})
    answered: list[tuple[int, int]] = []
    for round_ in range(ROUNDS):
        submitter = Submitter(server.port, first_seq=round_ * 1_000_000)
        submitter.start()
        wait_until(lambda s=submitter: len(s.answered) >= 150, timeout=30)
        server.kill()
        submitter.join(15)
        assert not submitter.is_alive()
        answered += submitter.answered
        server.start()

    ids = [task_id for _, task_id in answered]
    assert len(ids) == len(set(ids)), "an id was answered twice"
    stored = {t["id"]: int(t["environment"]["SEQ"]) for t in all_tasks(server)}
    for seq, task_id in answered:
        assert stored.get(task_id) == seq, f"task {task_id} (SEQ {seq}) was lost or changed"
    per_seq = Counter(stored.values())
    assert all(per_seq[seq] == 1 for seq, _ in answered), "an answered task is stored twice"
