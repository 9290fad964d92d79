"""Which thread answers a request: short ones on granian's, waiting ones (long polls,
followed logs) on a pool of our own that starts a thread whenever none is free, so that a
job never queues behind held ones, and stops threads that stayed idle."""

from __future__ import annotations

import io
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog.testing

from bench.longpoll import UNCLAIMED, HoldResult, hold_requests
from blanket.auth import Identity
from blanket.config.settings import Settings
from blanket.server.httppool import UNDELIVERED, Dispatcher, WaitPool, waits
from blanket.server.serve import Server
from tests.conftest import free_port, wait_until

HELD = 40


def test_jobs_submitted_together_while_every_thread_is_held_each_run_at_once():
    """The stall granian's own pool has: two requests arriving together get one new thread
    between them, and the second waits behind held long polls. Here each gets its own."""
    pool = WaitPool(most=1000, idle_timeout=5)
    release = threading.Event()
    try:
        for _ in range(20):
            pool.submit(release.wait)
        for _round in range(30):
            ran: list[float] = []
            barrier = threading.Barrier(4)

            def submit(ran=ran, barrier=barrier) -> None:
                barrier.wait()
                asked = time.monotonic()
                done = threading.Event()
                pool.submit(lambda: (ran.append(time.monotonic() - asked), done.set()))
                assert done.wait(2), "a job queued behind held ones"

            submitters = [threading.Thread(target=submit) for _ in range(4)]
            for thread in submitters:
                thread.start()
            for thread in submitters:
                thread.join()
            assert len(ran) == 4 and max(ran) < 0.5, ran
            pool.submit(release.wait)  # one more held each round
        assert pool.threads >= 20 + 30
    finally:
        release.set()


def test_idle_threads_stop_after_the_idle_timeout_and_busy_ones_do_not():
    pool = WaitPool(most=100, idle_timeout=0.3)
    release = threading.Event()
    for _ in range(10):
        pool.submit(release.wait)
    wait_until(lambda: pool.threads == 10 and pool.idle == 0)
    time.sleep(0.5)
    assert pool.threads == 10  # all held
    release.set()
    wait_until(lambda: pool.threads == 0, timeout=5)
    assert pool.idle == 0
    done = threading.Event()
    pool.submit(done.set)  # and a thread comes back when needed
    assert done.wait(2)


def test_at_most_threads_jobs_queue_with_one_warning_and_run_when_a_thread_frees():
    pool = WaitPool(most=2, idle_timeout=5)
    release = threading.Event()
    ran = threading.Event()
    with structlog.testing.capture_logs() as logged:
        pool.submit(release.wait)
        pool.submit(release.wait)
        pool.submit(ran.set)
        pool.submit(lambda: None)
    assert pool.threads == 2 and not ran.wait(0.2)
    warnings = [entry for entry in logged if entry["log_level"] == "warning"]
    assert len(warnings) == 1 and "raise max_threads" in warnings[0]["event"]
    release.set()
    assert ran.wait(2)


@pytest.mark.parametrize(("query", "accept", "held"), [
    ("wait=30", "", True), ("x=1&wait=0.5", "", True), ("follow=1", "", True),
    ("", "text/event-stream", True), ("", "application/json", False),
    ("limit=5", "", False), ("%66ollow", "", True), ("%77ait=5", "", True),
    ("wait%3D5", "", True),
])
def test_what_counts_as_a_waiting_request(query: str, accept: str, held: bool):
    assert waits({"QUERY_STRING": query, "HTTP_ACCEPT": accept}) is held


class FakeProtocol:
    """What granian hands the dispatcher: the answer is sent through it."""

    def __init__(self, close_early: bool = False):
        self.answered = threading.Event()
        self.status = 0
        self.body = b""
        self.thread: str | None = None
        self.close_early = close_early

    def response_bytes(self, status: int, headers: list, body: bytes) -> None:
        self.status, self.body, self.thread = status, body, threading.current_thread().name
        self.answered.set()

    def response_iter(self, status: int, headers: list, body) -> None:
        self.status, self.thread = status, threading.current_thread().name
        if self.close_early:  # the client is gone: granian closes the body at once
            next(body)
        else:
            self.body = b"".join(body)
        body.close()
        self.answered.set()


def scope(query: str = "", body: bytes = b"") -> dict:
    return {"REQUEST_METHOD": "POST", "PATH_INFO": "/x", "QUERY_STRING": query,
            "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body)}


def test_short_requests_run_on_the_calling_thread_and_waiting_ones_on_the_pool():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["wsgi.input"].read()]

    dispatcher = Dispatcher(app, most_waiting=10)
    short, held = FakeProtocol(), FakeProtocol()
    dispatcher(short, scope("", b"short"))
    dispatcher(held, scope("wait=5", b"held"))
    assert held.answered.wait(2)
    assert (short.status, short.body, short.thread) == (200, b"short", "MainThread")
    assert (held.status, held.body, held.thread) == (200, b"held", "blanket wait")


def test_an_answer_that_finds_no_client_is_undone_once_and_a_delivered_one_is_not():
    undone: list[str] = []

    def app(environ, start_response):
        environ[UNDELIVERED] = lambda: undone.append(environ["QUERY_STRING"])
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b'{"task": ', b"1}"]

    dispatcher = Dispatcher(app, most_waiting=10)
    gone, there = FakeProtocol(close_early=True), FakeProtocol()
    dispatcher(gone, scope("wait=1&gone"))
    dispatcher(there, scope("wait=1&there"))
    assert gone.answered.wait(2) and there.answered.wait(2)
    assert there.body == b'{"task": 1}'
    assert undone == ["wait=1&gone"]


def test_the_waiting_pool_grows_for_held_requests_and_shrinks_after_a_quiet_period(
        tmp_path: Path):
    (tmp_path / "conf.d" / "types").mkdir(parents=True)
    (tmp_path / "conf.d" / "types" / "unclaimed.toml").write_text(UNCLAIMED)
    settings = Settings(port=free_port(), config_dir=tmp_path / "conf.d",
                        data_dir=tmp_path / "var", inbox_dir=tmp_path / "inbox",
                        threads=2, max_threads=200)
    server = Server(settings)
    pool = server.dispatcher.waiting
    pool.idle_timeout = 0.5
    seen: dict[str, object] = {}

    def load() -> None:
        try:
            wait_until(lambda: server.http._signal is not None)
            token = (settings.data_dir / "admin.token").read_text().strip()
            holding: list[HoldResult] = []
            holder = threading.Thread(target=lambda: holding.append(hold_requests(
                settings.port, token, [], HELD, hold=3)))
            holder.start()
            seen["peak"] = wait_until(lambda: pool.threads >= HELD and pool.threads)
            holder.join()
            seen["answers"] = holding[0].statuses
            seen["shorts"] = (len(holding[0].short_latencies), holding[0].short_failures)
            seen["after"] = wait_until(lambda: pool.threads == 0 or None, timeout=15)
        finally:
            server.stop()

    loader = threading.Thread(target=load)
    loader.start()
    server.serve()
    loader.join()
    assert seen["answers"] == {201: HELD}
    assert seen["peak"] >= HELD
    shorts, failures = seen["shorts"]
    assert shorts > 0 and failures == 0  # answered on 2 threads while 40 were held


@pytest.fixture(autouse=True)
def _restore_signals() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


# A body sent slowly holds one of granian's threads: without credentials, one address may
# hold only a few.

def _posting(address: str, **headers: str) -> dict:
    return {"REMOTE_ADDR": address, "CONTENT_LENGTH": "10", **headers}


def test_one_address_without_credentials_may_send_only_so_many_bodies_at_once():
    from blanket.server.httppool import BodyGate

    gate = BodyGate(lambda environ: None, most=2)
    first, second = gate.admit(_posting("198.51.100.7"))[0], gate.admit(_posting("198.51.100.7"))[0]
    assert (first, second) == ("address 198.51.100.7", "address 198.51.100.7")
    assert gate.admit(_posting("198.51.100.7"))[0] is None  # a third waits for one to end
    assert gate.admit(_posting("198.51.100.8"))[0] == "address 198.51.100.8"  # another address
    gate.done("address 198.51.100.7")
    assert gate.admit(_posting("198.51.100.7"))[0] == "address 198.51.100.7"


def test_every_address_together_may_send_only_so_many_bodies_at_once():
    """Many addresses sending slowly, each under its own bound, still leave the threads
    beyond `most_in_all` to callers with tokens."""
    from blanket.server.httppool import BodyGate

    gate = BodyGate(lambda environ: None, most=2, most_in_all=3)
    assert [gate.admit(_posting(a))[0] for a in ("192.0.2.1", "192.0.2.1", "192.0.2.2")] == [
        "address 192.0.2.1", "address 192.0.2.1", "address 192.0.2.2"]
    counted, refusal = gate.admit(_posting("192.0.2.3"))  # a new address, over the bound
    assert counted is None and b"without a token" in refusal
    assert gate.admit(_posting("192.0.2.1"))[1] == gate.refusal  # its own bound first
    gate.done("address 192.0.2.1")
    assert gate.admit(_posting("192.0.2.3"))[0] == "address 192.0.2.3"
    assert gate.admit(_posting("192.0.2.4"))[0] is None


def test_bodiless_local_and_credentialed_requests_are_not_counted():
    from blanket.server.httppool import BodyGate, has_body

    fleet = Identity(name="fleet", role="worker", token_id="w")
    gate = BodyGate(lambda environ: fleet if environ.get("HTTP_AUTHORIZATION") == "Bearer good"
                    else None, most=1)
    assert gate.admit(_posting("198.51.100.7"))[0] == "address 198.51.100.7"
    for environ in ({"REMOTE_ADDR": "198.51.100.7", "CONTENT_LENGTH": "0"},
                    {"REMOTE_ADDR": "198.51.100.7"},
                    _posting("127.0.0.1"), _posting("::1"), _posting(""),  # "" is the socket
                    _posting("198.51.100.7", HTTP_AUTHORIZATION="Bearer good")):
        assert gate.admit(environ)[0] == "", environ  # not counted
    assert gate.admit(_posting("198.51.100.7", HTTP_AUTHORIZATION="Bearer bad"))[0] is None
    assert has_body({"HTTP_TRANSFER_ENCODING": "chunked"})
    assert not has_body({"CONTENT_LENGTH": "0"}) and not has_body({})


def test_one_token_may_send_only_so_many_bodies_at_once_from_any_address():
    """A token holder sending bodies slowly would otherwise hold every thread that answers
    short requests; counted by its name, from loopback too (a proxy on the same machine)."""
    from blanket.server.httppool import BodyGate

    alice = Identity(name="alice", role="submitter", token_id="t1")
    gate = BodyGate(lambda environ: alice if "HTTP_AUTHORIZATION" in environ else None,
                    most=1, most_in_all=1, most_per_token=2)
    sent = {"HTTP_AUTHORIZATION": "Bearer a"}
    assert gate.admit(_posting("198.51.100.7", **sent))[0] == "token 'alice'"
    assert gate.admit(_posting("127.0.0.1", **sent))[0] == "token 'alice'"
    counted, refusal = gate.admit(_posting("198.51.100.8", **sent))
    assert counted is None and b"'alice' already has 2 requests whose bodies" in refusal
    assert gate.admit(_posting("198.51.100.7"))[0] == "address 198.51.100.7"  # tokens leave room
    gate.done("token 'alice'")
    assert gate.admit(_posting("198.51.100.8", **sent))[0] == "token 'alice'"
    assert gate.admit(_posting("198.51.100.9"))[0] is None  # the one for addresses is taken


def test_a_streamed_answer_is_sent_from_a_stream_thread_and_a_whole_one_at_once():
    """granian takes a streamed body's chunks on the thread that hands it the body, and
    waits there while the client reads: a short request's stream leaves the calling thread
    (one of the few that answer short requests) for a thread of its own."""
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        if "stream" in environ["QUERY_STRING"]:
            return iter([b"a", b"b"])
        return [b"whole"]

    dispatcher = Dispatcher(app, most_waiting=10)
    streamed, whole, held = FakeProtocol(), FakeProtocol(), FakeProtocol()
    dispatcher(streamed, scope("stream"))
    dispatcher(whole, scope(""))
    dispatcher(held, scope("stream&wait=1"))
    assert streamed.answered.wait(2) and held.answered.wait(2)
    assert (streamed.body, streamed.thread) == (b"ab", "blanket stream")
    assert (whole.body, whole.thread) == (b"whole", "MainThread")
    # a waiting request's stream is already on a thread of its own: it stays there
    assert (held.body, held.thread) == (b"ab", "blanket wait")


def test_a_stream_finding_every_stream_thread_taken_is_sent_at_once_not_queued():
    """Queued streams would each hold their file open, without bound: with every stream
    thread taken, a stream is sent from the calling thread, as a short answer is."""
    release = threading.Event()

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return iter([b"a", b"b"])

    class Stuck(FakeProtocol):
        def response_iter(self, status: int, headers: list, body) -> None:
            self.thread = threading.current_thread().name
            self.answered.set()
            release.wait(5)  # a client that does not read
            body.close()

    dispatcher = Dispatcher(app, most_waiting=1)
    stuck, next_one = Stuck(), FakeProtocol()
    dispatcher(stuck, scope("stream"))
    assert stuck.answered.wait(2) and stuck.thread == "blanket stream"
    with structlog.testing.capture_logs() as logged:
        dispatcher(next_one, scope("stream"))
        dispatcher(FakeProtocol(), scope("stream"))
    assert (next_one.body, next_one.thread) == (b"ab", "MainThread")
    warnings = [entry for entry in logged if entry["log_level"] == "warning"]
    assert len(warnings) == 1 and "raise max_threads" in warnings[0]["event"]  # said once
    release.set()


@pytest.mark.parametrize(("path", "held"), [
    ("/mcp", True), ("/mcp/", True), ("/task/", False), ("/mcpx", False)])
def test_an_mcp_call_counts_as_waiting_whatever_it_accepts(path: str, held: bool):
    """A tool may wait (wait_task, a submission or a run with a wait), and a client choosing
    not to accept event streams must not hold a short request's thread meanwhile."""
    assert waits({"PATH_INFO": path, "QUERY_STRING": "", "HTTP_ACCEPT": "application/json"}) \
        is held


def test_bodies_from_one_ipv6_client_count_together_by_its_64():
    """The same callers and keys as the held share (heldshare.caller_key): one client holds
    a whole /64, and would otherwise get a share for every address in it."""
    from blanket.server.httppool import BodyGate

    gate = BodyGate(lambda environ: None, most=1)
    assert gate.admit(_posting("2001:db8:1:2::5"))[0] == "address 2001:db8:1:2::/64"
    assert gate.admit(_posting("2001:db8:1:2::6"))[0] is None
    assert gate.admit(_posting("::ffff:127.0.0.1"))[0] == ""  # loopback, dual-stack
