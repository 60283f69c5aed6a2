"""TLS for the HTTPS listener: a self-signed certificate made on first start, and the
server-side SSL context.

A fresh install must answer HTTPS at once (clients default to it), so the server makes its
own certificate, valid for its host name and loopback addresses, unless one is installed.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALID_DAYS = 3650


def ensure_self_signed(
    cert_path: Path, key_path: Path, hostnames: list[str], addresses: list[str]
) -> bool:
    """Create a self-signed certificate and key unless both files exist.

    The certificate's subjectAltName lists `hostnames` (DNS) and `addresses` (IP), so
    clients that verify it against the pinned file accept any of those names. Returns True
    if the files were created.
    """
    cert_path = Path(cert_path)
    key_path = Path(key_path)
    if cert_path.exists() and key_path.exists():
        return False
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    names = [n for n in dict.fromkeys(hostnames) if n]
    common_name = names[0] if names else "localhost"
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "openxapi"),
        ]
    )
    alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alt_names.extend(x509.IPAddress(ipaddress.ip_address(a)) for a in dict.fromkeys(addresses))
    now = datetime.datetime.now(datetime.UTC)
    public_key = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=_VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_atomically(key_path, key_bytes, 0o600)
    _write_atomically(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return True


def server_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """Server-side TLS (1.2 or later), no client certificates asked for."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION
    context.set_alpn_protocols(["http/1.1"])
    context.load_cert_chain(str(cert_path), str(key_path))
    return context


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        os.fchmod(fd, mode)
        out.write(data)
        out.flush()
        os.fsync(fd)
    os.replace(temporary, path)
