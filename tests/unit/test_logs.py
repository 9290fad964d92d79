import json
import logging
from pathlib import Path

import pytest
import structlog

from blanket.config.settings import LogDestination
from blanket.logs import configure_logging


@pytest.fixture(autouse=True)
def restore_logging():
    yield
    for handler in list(logging.getLogger().handlers):
        logging.getLogger().removeHandler(handler)
        handler.close()
    structlog.reset_defaults()


def test_file_destinations_get_json_lines_at_their_own_level(tmp_path: Path):
    configure_logging((LogDestination("info.log", "info"),
                       LogDestination("debug.log", "debug")), base_dir=tmp_path)
    log = structlog.get_logger("t")
    log.debug("detail", n=1)
    log.info("hello", task=42)
    info = [json.loads(x) for x in (tmp_path / "info.log").read_text().splitlines()]
    debug = [json.loads(x) for x in (tmp_path / "debug.log").read_text().splitlines()]
    assert [e["event"] for e in info] == ["hello"]
    assert info[0]["task"] == 42 and info[0]["level"] == "info" and "timestamp" in info[0]
    assert [e["event"] for e in debug] == ["detail", "hello"]


def test_verbosity_shifts_every_level(tmp_path: Path):
    configure_logging((LogDestination("a.log", "info"),), verbosity=1, base_dir=tmp_path)
    structlog.get_logger("t").debug("shown with -v")
    assert "shown with -v" in (tmp_path / "a.log").read_text()


def test_quiet_hides_info(tmp_path: Path):
    configure_logging((LogDestination("a.log", "info"),), verbosity=-1, base_dir=tmp_path)
    structlog.get_logger("t").info("hidden with -q")
    assert "hidden" not in (tmp_path / "a.log").read_text()


def test_files_rotate_by_size_keeping_a_count(tmp_path: Path):
    configure_logging((LogDestination("r.log", "info", max_bytes=500, backups=2),),
                      base_dir=tmp_path)
    log = structlog.get_logger("t")
    for i in range(100):
        log.info("line", i=i, pad="x" * 50)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["r.log", "r.log.1", "r.log.2"]


def test_console_lines_on_stderr(capsys):
    configure_logging((LogDestination("stderr", "info"),))
    structlog.get_logger("t").info("readable", task=7)
    err = capsys.readouterr().err
    assert "readable" in err and "task=7" in err and not err.lstrip().startswith("{")


def test_an_unknown_level_is_refused():
    with pytest.raises(ValueError, match="log level 'loud'"):
        configure_logging((LogDestination("stderr", "loud"),))
