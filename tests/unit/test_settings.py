from pathlib import Path

import pytest

from blanket.config.settings import LogDestination, load_settings
from blanket.durations import parse_duration
from blanket.errors import InvalidInput


def test_a_missing_settings_file_means_defaults(tmp_path: Path):
    settings = load_settings(tmp_path / "absent.toml", environ={})
    assert (settings.host, settings.port) == ("127.0.0.1", 8773)
    assert settings.config_dir == Path("conf.d")
    assert settings.database_url == "sqlite:///var/blanket.db"
    assert settings.url == "http://127.0.0.1:8773"


def test_the_file_sets_values(tmp_path: Path):
    path = tmp_path / "blanket.toml"
    path.write_text('port = 9000\ndata_dir = "/srv/blanket"\nlost_after = "1m"\n'
                    'worker_tags = ["a", "b"]\n')
    settings = load_settings(path, environ={})
    assert settings.port == 9000
    assert settings.data_dir == Path("/srv/blanket")
    assert settings.lost_after == 60.0
    assert settings.worker_tags == ("a", "b")


def test_environment_variables_override_the_file(tmp_path: Path):
    path = tmp_path / "blanket.toml"
    path.write_text("port = 9000\n")
    settings = load_settings(path, environ={"BLANKET_PORT": "9100",
                                            "BLANKET_WORKER_TAGS": "x, y"})
    assert settings.port == 9100
    assert settings.worker_tags == ("x", "y")


def test_flags_override_environment_variables(tmp_path: Path):
    settings = load_settings(tmp_path / "none.toml", {"port": 9200, "host": None},
                             environ={"BLANKET_PORT": "9100"})
    assert settings.port == 9200
    assert settings.host == "127.0.0.1"


def test_the_settings_file_can_be_named_by_a_variable(tmp_path: Path):
    path = tmp_path / "other.toml"
    path.write_text("port = 9300\n")
    assert load_settings(environ={"BLANKET_SETTINGS": str(path)}).port == 9300


def test_an_unknown_key_is_named_with_the_valid_ones(tmp_path: Path):
    path = tmp_path / "blanket.toml"
    path.write_text("prot = 1\n")
    with pytest.raises(InvalidInput, match=r"unknown setting\(s\) prot; valid: .*port"):
        load_settings(path, environ={})


def test_a_bad_value_says_which_setting(tmp_path: Path):
    with pytest.raises(InvalidInput, match="setting port"):
        load_settings(tmp_path / "x.toml", environ={"BLANKET_PORT": "eighty"})


def test_bad_toml_says_where(tmp_path: Path):
    path = tmp_path / "blanket.toml"
    path.write_text("port = \n")
    with pytest.raises(InvalidInput, match="line 1"):
        load_settings(path, environ={})


def test_log_destinations_and_level_override(tmp_path: Path):
    path = tmp_path / "blanket.toml"
    path.write_text('[[log]]\ndestination = "stderr"\n[[log]]\ndestination = "log/b.log"\n'
                    'level = "debug"\nformat = "json"\nbackups = 2\n')
    settings = load_settings(path, environ={"BLANKET_LOG_LEVEL": "warning"})
    assert settings.log == (
        LogDestination("stderr", "warning"),
        LogDestination("log/b.log", "warning", "json", backups=2),
    )


def test_a_bad_log_key_is_refused(tmp_path: Path):
    path = tmp_path / "blanket.toml"
    path.write_text('[[log]]\ndest = "stderr"\n')
    with pytest.raises(InvalidInput, match="unknown log key"):
        load_settings(path, environ={})


def test_a_server_url_names_what_clients_call(tmp_path: Path):
    settings = load_settings(tmp_path / "x.toml", environ={"BLANKET_SERVER": "http://h:1/"})
    assert settings.url == "http://h:1"


@pytest.mark.parametrize("key", ["threads", "max_threads"])
def test_a_server_needs_at_least_one_thread(key: str):
    with pytest.raises(InvalidInput, match=f"setting {key}: 0 must be 1 or more"):
        load_settings(Path("/nonexistent.toml"), environ={}, overrides={key: 0})
    assert getattr(load_settings(Path("/nonexistent.toml"), environ={},
                                 overrides={key: "3"}), key) == 3


def test_server_cpus_are_cpu_numbers():
    def cpus(value: object) -> tuple[int, ...]:
        return load_settings(Path("/nonexistent.toml"), environ={},
                             overrides={"server_cpus": value}).server_cpus

    assert load_settings(Path("/nonexistent.toml"), environ={}).server_cpus == ()
    assert cpus("1, 0") == (0, 1) and cpus([2]) == (2,) and cpus("") == ()
    assert load_settings(Path("/nonexistent.toml"),
                         environ={"BLANKET_SERVER_CPUS": "0"}).server_cpus == (0,)
    for wrong in ("-1", "one", "0.5"):
        with pytest.raises(InvalidInput, match="is not a CPU number"):
            cpus(wrong)


@pytest.mark.parametrize(("key", "most"), [("keep_finished", "36500d"),
                                           ("keep_failed", "36500d"),
                                           ("prune_interval", "366d"),
                                           ("lost_after", "366d")])
def test_setting_durations_are_bounded_as_in_a_type_file(key: str, most: str):
    settings = load_settings(Path("/nonexistent.toml"), environ={}, overrides={key: most})
    assert getattr(settings, key) == parse_duration(most)
    with pytest.raises(InvalidInput, match=f"setting {key}: '{most}1s' is too long; the most "
                                           f"is {most}"):
        load_settings(Path("/nonexistent.toml"), environ={}, overrides={key: most + "1s"})
