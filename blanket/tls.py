"""TLS for the server and its clients: the self-signed certificate `--tls self-signed` makes,
certificate fingerprints, and the client side's trust (a CA file, or a pinned fingerprint)."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import ipaddress
import os
import re
import socket
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

from blanket.errors import BlanketError, InvalidInput
from blanket.taskdir import DataDir

if TYPE_CHECKING:
    from blanket.config.settings import Settings

SELF_SIGNED_DAYS = 3650
TRUST_ADVICE = ("give the certificate that signed it with --ca FILE (or BLANKET_CA), or pin "
                "the server's with --fingerprint SHA256HEX (or BLANKET_FINGERPRINT); "
                "`blanket server` prints its fingerprint when it starts")
_HEX = re.compile(r"[0-9a-f]{64}")


class UntrustedServer(BlanketError):
    """The server's certificate is not the one this client trusts."""

    code = "untrusted_server"
    status = 495


def self_signed_paths(data_dir: Path) -> tuple[Path, Path]:
    """Where `--tls self-signed` keeps its certificate and private key."""
    folder = DataDir(Path(data_dir)).tls
    return folder / "cert.pem", folder / "key.pem"


def local_tls_files(settings: Settings) -> tuple[Path, Path] | None:
    """The certificate and key a server with these settings serves, when they exist."""
    if settings.tls_cert is not None and settings.tls_key is not None:
        return settings.tls_cert, settings.tls_key
    if settings.tls:
        cert, key = self_signed_paths(settings.data_dir)
        return (cert, key) if cert.is_file() else None
    return None


def ensure_self_signed(data_dir: Path, host: str) -> tuple[Path, Path]:
    """The self-signed certificate and key in `data_dir`, made on first use (an EC P-256 key;
    names: localhost, this machine's names and addresses, and `host` when it is specific)."""
    cert_path, key_path = self_signed_paths(data_dir)
    if cert_path.is_file() and key_path.is_file():
        return cert_path, key_path
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    common_name = f"blanket on {socket.gethostname()}"[:64]
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SELF_SIGNED_DAYS))
        .add_extension(x509.SubjectAlternativeName(_alternative_names(host)), critical=False)
        # Its own authority, so that clients can trust it as a CA file (--ca cert.pem).
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key_bytes = key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    _write_private(key_path, key_bytes)
    _write_private(cert_path, certificate.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def _alternative_names(host: str) -> list:
    from cryptography import x509

    names = {"localhost", socket.gethostname(), socket.getfqdn()}
    addresses = {"127.0.0.1", "::1"}
    for candidate in (host, *names):
        if _is_address(candidate):
            addresses.add(candidate)
        elif candidate and candidate not in ("0.0.0.0", "::"):
            names.add(candidate)
            with contextlib.suppress(OSError):
                addresses |= {str(info[4][0]) for info in socket.getaddrinfo(candidate, None)}
    addresses -= {"0.0.0.0", "::"}
    return ([x509.DNSName(n) for n in sorted(names) if n]
            + [x509.IPAddress(ipaddress.ip_address(a.split("%")[0])) for a in sorted(addresses)])


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return False
    return True


def _write_private(path: Path, data: bytes) -> None:
    """Write `path` readable by its owner only, whole or not at all."""
    partial = path.with_name(path.name + ".partial")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(data)
    partial.replace(path)


def certificate_fingerprint(cert_path: Path) -> str:
    """The SHA-256 fingerprint (lower-case hex) of the first certificate in a PEM file."""
    try:
        pem = Path(cert_path).read_text()
        start = pem.index(ssl.PEM_HEADER)
        end = pem.index(ssl.PEM_FOOTER, start) + len(ssl.PEM_FOOTER)
        der = ssl.PEM_cert_to_DER_cert(pem[start:end])
    except (OSError, ValueError) as e:
        raise InvalidInput(f"cannot read the certificate {cert_path}: {e}") from None
    return hashlib.sha256(der).hexdigest()


def normalize_fingerprint(text: str) -> str:
    """A SHA-256 fingerprint as 64 lower-case hex digits; colons and spaces are allowed in
    `text` (as openssl prints it)."""
    cleaned = re.sub(r"[\s:]", "", text).lower()
    cleaned = re.sub(r"^sha-?256(fingerprint)?=?", "", cleaned)
    if not _HEX.fullmatch(cleaned):
        raise InvalidInput(f"fingerprint {text!r}: give the certificate's SHA-256 fingerprint, "
                           "64 hex digits (colons allowed)")
    return cleaned


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """Checks that the certificate and key load together, with a message saying which is
    wrong when they do not."""
    for path in (cert, key):
        if not Path(path).is_file():
            raise InvalidInput(f"TLS: {path} does not exist; check tls_cert and tls_key, or "
                               "use tls = \"self-signed\"")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(str(cert), str(key))
    except (ssl.SSLError, OSError) as e:
        raise InvalidInput(f"TLS: cannot use the certificate {cert} with the key {key} ({e}); "
                           "tls_cert is the PEM certificate (chain), tls_key its PEM private "
                           "key, unencrypted") from None
    return context


def client_context(ca: str | None, fingerprint: str | None) -> ssl.SSLContext:
    """The context a client verifies the server with: `ca` (a PEM file) as the trusted
    authority, else the system's authorities. With a pinned `fingerprint` the certificate
    itself is compared instead (see `check_pinned`), so neither its issuer nor its names
    matter."""
    if fingerprint:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    try:
        return ssl.create_default_context(cafile=ca)
    except (OSError, ssl.SSLError) as e:
        raise InvalidInput(f"--ca {ca}: cannot read it as PEM certificates ({e})") from None


def check_pinned(sock: ssl.SSLSocket, fingerprint: str, server: str) -> None:
    """Raise UntrustedServer unless the certificate `sock`'s peer showed has `fingerprint`."""
    der = sock.getpeercert(binary_form=True)
    seen = hashlib.sha256(der).hexdigest() if der else "none"
    if seen != fingerprint:
        raise UntrustedServer(
            f"the server at {server} showed a certificate whose SHA-256 fingerprint is {seen}, "
            f"not the pinned {fingerprint}: refusing to talk to it. If the server's "
            "certificate changed on purpose, pin the new fingerprint it printed at start "
            "(--fingerprint or BLANKET_FINGERPRINT); otherwise something is in between")
