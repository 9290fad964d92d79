"""The server always stops, even when one of its parts fails to."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from blanket.client import Client
from blanket.config.settings import Settings
from blanket.server.serve import Server
from tests.conftest import free_port, wait_until


def test_a_part_that_fails_to_stop_does_not_hang_the_server(tmp_path: Path, monkeypatch):
    settings = Settings(port=free_port(), config_dir=tmp_path / "conf.d",
                        data_dir=tmp_path / "var", inbox_dir=tmp_path / "inbox")
    server = Server(settings)

    def broken() -> None:
        raise RuntimeError("the watcher will not stop")

    monkeypatch.setattr(server.services.catalog, "stop_watching", broken)
    client = Client(settings.url, timeout=5)

    def stop_when_up() -> None:
        wait_until(lambda: _answers(client))
        server.stop()

    stopper = threading.Thread(target=stop_when_up)
    stopper.start()
    server.serve()  # returns only once everything it could stop has stopped
    stopper.join()
    assert not _answers(client)


def _answers(client: Client) -> bool:
    try:
        return client.request("GET", "/health", ok=(503,))[0] == 200
    except Exception:
        return False


@pytest.fixture(autouse=True)
def _restore_signals():
    import signal

    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)
