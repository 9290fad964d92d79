"""Settings for where the server listens and how: `listen`, `tls`, `tls_cert`/`tls_key`,
`insecure`."""

from pathlib import Path

import pytest

from blanket.config.settings import load_settings
from blanket.errors import InvalidInput

NO_FILE = Path("/nonexistent.toml")


def settings_with(**overrides):
    return load_settings(NO_FILE, overrides, environ={})


def test_a_unix_socket_alone_is_what_clients_call():
    settings = settings_with(listen=["unix:/run/blanket/b.sock"])
    assert not settings.serves_tcp
    assert settings.unix_socket == Path("/run/blanket/b.sock")
    assert settings.url == "unix:/run/blanket/b.sock"
    assert settings.local_url == "unix:/run/blanket/b.sock"
    assert settings.anonymous_role == "operator"  # local, like loopback


def test_a_socket_path_may_start_with_the_home_directory():
    assert settings_with(listen=["unix:~/b.sock"]).unix_socket == Path.home() / "b.sock"


def test_a_tcp_address_in_listen_becomes_host_and_port():
    settings = load_settings(NO_FILE, environ={"BLANKET_LISTEN": "unix:/tmp/b.sock, [::1]:9001"})
    assert settings.serves_tcp
    assert (settings.host, settings.port) == ("::1", 9001)
    assert settings.url == "http://[::1]:9001"
    assert settings.local_url == "unix:/tmp/b.sock"  # local workers take the socket


def test_listen_in_the_file_with_a_port_flag_is_refused_with_an_example(tmp_path: Path):
    path = tmp_path / "blanket.toml"
    path.write_text('listen = "unix:/tmp/b.sock"\n')
    with pytest.raises(InvalidInput, match=r"listen replaces host and port, and port is set "
                                           r"too: put the TCP address in listen \(listen = \["):
        load_settings(path, {"port": 9000}, environ={})


def test_listen_takes_one_tcp_address_at_most():
    with pytest.raises(InvalidInput, match="one TCP address and one unix socket at most"):
        settings_with(listen=["127.0.0.1:1", "127.0.0.1:2"])


@pytest.mark.parametrize("entry", ["8773", "localhost", "unix:", "host:port", "h:70000"])
def test_a_bad_listen_entry_says_how_to_write_one(entry: str):
    with pytest.raises(InvalidInput, match=r"setting listen: .*(HOST:PORT|unix:/PATH)"):
        settings_with(listen=[entry])


def test_tls_self_signed_makes_the_url_https():
    settings = settings_with(tls="self-signed", port=9443)
    assert settings.serves_tls
    assert settings.url == "https://127.0.0.1:9443"


def test_an_unknown_tls_mode_is_refused():
    with pytest.raises(InvalidInput, match=r'setting tls: .*"self-signed"'):
        settings_with(tls="letsencrypt")


def test_a_certificate_needs_its_key():
    with pytest.raises(InvalidInput, match=r"set both tls_cert .* and tls_key"):
        settings_with(tls_cert="cert.pem")
    settings = settings_with(tls_cert="~/cert.pem", tls_key="key.pem")
    assert settings.tls_cert == Path.home() / "cert.pem" and settings.serves_tls


def test_self_signed_and_own_files_together_are_refused():
    with pytest.raises(InvalidInput, match="makes its own certificate"):
        settings_with(tls="self-signed", tls_cert="c.pem", tls_key="k.pem")


@pytest.mark.parametrize(("text", "value"), [("true", True), ("1", True), ("no", False)])
def test_insecure_reads_a_boolean_from_the_environment(text: str, value: bool):
    assert load_settings(NO_FILE, environ={"BLANKET_INSECURE": text}).insecure is value


def test_insecure_refuses_what_is_not_a_boolean():
    with pytest.raises(InvalidInput, match="setting insecure: 'maybe': write true or false"):
        load_settings(NO_FILE, environ={"BLANKET_INSECURE": "maybe"})
