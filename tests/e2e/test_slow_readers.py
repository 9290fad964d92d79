"""A client that reads an answer slowly, or stops reading, holds nothing others need: a
download's chunks are sent from a thread of its own, not from one of the few threads that
answer short requests (granian waits on the thread that hands it a body while the client
reads)."""

from __future__ import annotations

import socket

from blanket.client import Client

# 20 MB of output: far more than the kernel's socket buffers hold for a client not reading
BIG = "command = \"head -c 20000000 /dev/zero | tr '\\\\0' x\"\n"
ECHO = 'command = "echo hi"\n'


def test_clients_that_stop_reading_downloads_leave_the_server_answering(make_server):
    threads = 2  # threads answering short requests: fewer than the readers below
    server = make_server(types={"big": BIG, "echo": ECHO},
                         env={"BLANKET_THREADS": str(threads)})
    worker = make_server.worker(server)
    task = server.client.post("/task/?wait=60", {"type": "big"})
    assert task["state"] == "SUCCESS", task
    worker.stop()
    readers = []
    try:
        for _ in range(threads + 4):
            reader = socket.socket()
            reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            reader.settimeout(10)
            reader.connect(("127.0.0.1", server.port))
            reader.sendall(f"GET /task/{task['id']}/log/stdout HTTP/1.1\r\n"
                           f"Host: 127.0.0.1:{server.port}\r\n\r\n".encode())
            # each download starts (no thread is held by the ones before it) ...
            assert reader.recv(64).startswith(b"HTTP/1.1 200 ")
            readers.append(reader)  # ... and is then left unread
        quick = Client(server.url, timeout=10, token=server.admin_token)
        assert quick.request("GET", "/health", ok=(503,))[0] == 200
        assert quick.post("/task/", {"type": "echo"})["state"] == "QUEUED"
        assert quick.get(f"/task/{task['id']}")["state"] == "SUCCESS"
    finally:
        for reader in readers:
            reader.close()


def test_a_followed_log_arrives_whole_however_follow_is_spelled(make_server):
    """`?%66ollow` is `?follow` to the route and to the dispatcher alike: the events come
    after a first comment, each whole (Bottle would encode text chunks by the route
    thread's response, and the stream may be sent from another thread)."""
    server = make_server(types={"lines": 'command = "printf \'one\\\\ntwo\\\\nthree\\\\n\'"\n'})
    make_server.worker(server)
    task = server.client.post("/task/?wait=60", {"type": "lines"})
    assert task["state"] == "SUCCESS", task
    for query in ("follow", "%66ollow"):
        status, body = server.client.request("GET", f"/task/{task['id']}/log/stdout?{query}")
        assert status == 200
        assert body.split("\n\n")[:5] == [
            ": following", "data: one", "data: two", "data: three",
            "event: end\ndata: SUCCESS"], query


def test_followers_of_a_silent_task_hold_no_thread_of_short_requests(make_server):
    """A followed log waits for lines: it must wait on a thread of the waiting pool, however
    `follow` is spelled, and its first chunk must not wait for the log (Bottle reads it on
    the thread that ran the route). Before, `?%66ollow` of a queued task held one of the
    threads answering short requests until the task printed something."""
    threads = 2
    server = make_server(types={"echo": ECHO}, env={"BLANKET_THREADS": str(threads)})
    task = server.client.post("/task/", {"type": "echo"})  # no worker: it stays queued
    followers = []
    try:
        for query in ("%66ollow", "follow") * (threads + 1):
            follower = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            follower.sendall(f"GET /task/{task['id']}/log/stdout?{query} HTTP/1.1\r\n"
                             f"Host: 127.0.0.1:{server.port}\r\n\r\n".encode())
            head = b""
            while b": following" not in head:
                head += follower.recv(4096)
            assert head.startswith(b"HTTP/1.1 200 "), head
            followers.append(follower)
        quick = Client(server.url, timeout=10, token=server.admin_token)
        assert quick.request("GET", "/health", ok=(503,))[0] == 200
        assert quick.get(f"/task/{task['id']}")["state"] == "QUEUED"
    finally:
        for follower in followers:
            follower.close()
