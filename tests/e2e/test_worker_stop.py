"""Workers stop promptly when told to, even with no server to talk to."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import free_port


def test_workers_without_a_server_stop_at_once_on_sigterm(tmp_path: Path):
    nowhere = f"http://127.0.0.1:{free_port()}"
    proc = subprocess.Popen([sys.executable, "-m", "blanket", "worker", "-n", "2", "--server",
                             nowhere, "--data-dir", str(tmp_path / "var")],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        time.sleep(1.5)  # the children are up and retrying their registration
        proc.send_signal(signal.SIGTERM)
        began = time.monotonic()
        proc.wait(timeout=10)
        assert time.monotonic() - began < 5
        assert b"could not register" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
