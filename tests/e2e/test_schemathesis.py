"""schemathesis against a running server's /openapi.json: every operation fuzzed (coverage,
fuzzing and stateful phases, following the document's links), with every check but two
whose premise blanket does not share (below). A fixed seed and a budget that fits CI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ECHO = 'command = "echo hi"\nallow_extra_environment = true\n'
CONFIG = '''
[parameters]
# Long polls and streams hold their answer for real: fuzzing them would only wait.
"query.wait" = 0
"query.follow" = "false"
'''
# - positive_data_acceptance: a body the schema allows can still be refused for what it
#   names (an unknown task type, a task that is not running): that is a 4xx by design.
# - use_after_free: DELETE /worker/ID answers 202 and the worker stays listed, `stopping`,
#   until it has left; it is not gone at once.
EXCLUDED = "positive_data_acceptance,use_after_free"


def test_schemathesis_finds_no_failure(make_server, tmp_path: Path):
    server = make_server(types={"echo": ECHO})
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    command = [str(Path(sys.executable).parent / "schemathesis"), "--config-file", str(config),
               "run", f"{server.url}/openapi.json", "--checks", "all",
               "--exclude-checks", EXCLUDED, "-H", f"Authorization: Bearer {server.admin_token}",
               "--seed", "1", "--max-examples", "25", "--workers", "1",
               "--request-timeout", "20", "--no-color"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "Stateful" in done.stdout and " passed" in done.stdout
    assert "Traceback" not in server.log_text()
