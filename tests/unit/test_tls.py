"""TLS on the client side against a small real HTTPS server: a pinned fingerprint or a CA
file is trusted, anything else is refused with a message that says what to do, on both the
http.client path (JSON) and the urllib3 one (uploads, forms, streams). And the self-signed
certificate `--tls self-signed` makes."""

from __future__ import annotations

import json
import os
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from blanket.client import Client
from blanket.errors import InvalidInput
from blanket.tls import (
    UntrustedServer,
    certificate_fingerprint,
    ensure_self_signed,
    normalize_fingerprint,
)


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = json.dumps({"path": self.path, "length": len(self.rfile.read(length))}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    do_GET = do_POST

    def log_message(self, *args: object) -> None:
        return None


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:  # refused handshakes are expected
        return None


@pytest.fixture
def https(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(URL, certificate) of an HTTPS server with a fresh self-signed certificate."""
    cert, key = ensure_self_signed(tmp_path / "var", "127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    httpd = QuietServer(("127.0.0.1", 0), Echo)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{httpd.server_address[1]}", cert
    httpd.shutdown()
    httpd.server_close()


def every_path(client: Client) -> list:
    """One call through http.client (JSON) and three through urllib3 (form, upload, stream)."""
    answers = [client.post("/json", {"a": 1}),
               client.request("POST", "/form", fields={"data": "{}"})[1],
               client.upload("/upload", b"12345", {})]
    response = client.stream("/stream")
    answers.append(json.loads(response.read()))
    response.release_conn()
    return answers


def test_a_pinned_fingerprint_is_trusted_on_every_path(https):
    url, cert = https
    fingerprint = certificate_fingerprint(cert)
    answers = every_path(Client(url, fingerprint=fingerprint))
    assert [a["path"] for a in answers] == ["/json", "/form", "/upload", "/stream"]
    assert answers[2]["length"] == 5


def test_the_fingerprint_may_be_written_as_openssl_prints_it(https):
    url, cert = https
    plain = certificate_fingerprint(cert)
    openssl_style = ":".join(plain[i:i + 2] for i in range(0, 64, 2)).upper()
    assert normalize_fingerprint(f"SHA256 Fingerprint={openssl_style}") == plain
    assert Client(url, fingerprint=openssl_style).get("/x")["path"] == "/x"


def test_a_wrong_fingerprint_is_refused_with_both_fingerprints_on_every_path(https):
    url, cert = https
    right = certificate_fingerprint(cert)
    wrong = ("0" if right[0] != "0" else "1") + right[1:]
    client = Client(url, fingerprint=wrong)
    calls = [lambda: client.post("/json", {}),
             lambda: client.request("POST", "/form", fields={"data": "{}"}),
             lambda: client.upload("/upload", b"x", {}),
             lambda: client.stream("/stream")]
    for call in calls:
        with pytest.raises(UntrustedServer) as refused:
            call()
        message = refused.value.message
        assert f"fingerprint is {right}, not the pinned {wrong}" in message
        assert "--fingerprint" in message


def test_a_ca_file_is_trusted_on_every_path(https):
    url, cert = https
    assert len(every_path(Client(url, ca=str(cert)))) == 4


def test_an_unknown_certificate_is_refused_with_what_to_give(https):
    url, _ = https
    client = Client(url)
    for call in (lambda: client.get("/json"), lambda: client.upload("/upload", b"x", {})):
        with pytest.raises(UntrustedServer) as refused:
            call()
        assert "is not trusted (self-signed certificate)" in refused.value.message
        assert "--ca FILE" in refused.value.message and "--fingerprint" in refused.value.message


@pytest.mark.parametrize("text", ["abc", "g" * 64, "ab" * 20])
def test_a_malformed_fingerprint_is_refused(text: str):
    with pytest.raises(InvalidInput, match="64 hex digits"):
        Client("https://127.0.0.1:1", fingerprint=text)


def test_a_missing_ca_file_is_named():
    with pytest.raises(InvalidInput, match=r"--ca /nonexistent\.pem: cannot read it"):
        Client("https://127.0.0.1:1", ca="/nonexistent.pem")


def test_the_self_signed_certificate_is_made_once_with_a_private_key(tmp_path: Path):
    cert, key = ensure_self_signed(tmp_path, "10.1.2.3")
    first = certificate_fingerprint(cert)
    assert (cert, key) == ensure_self_signed(tmp_path, "10.1.2.3")
    assert certificate_fingerprint(cert) == first
    assert os.stat(key).st_mode & 0o777 == 0o600
    names = ssl._ssl._test_decode_cert(str(cert))["subjectAltName"]
    assert ("DNS", "localhost") in names
    assert {("IP Address", "127.0.0.1"), ("IP Address", "10.1.2.3")} <= set(names)
