"""TLS server context: a configured certificate, or a self-signed one made once.

The self-signed pair lives in ``<data_dir>/tls/`` so its fingerprint stays the
same across restarts (phones that pin it keep working).
"""
from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import ssl
from pathlib import Path


def _generate_self_signed(cert_path: Path, key_path: Path, names: list[str]) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def certificate_paths(data_dir: Path, cert: str, key: str,
                      names: list[str]) -> tuple[Path, Path]:
    """The configured pair, or the self-signed one (generated on first use)."""
    if cert:
        return Path(cert), Path(key or cert)
    cert_path, key_path = data_dir / "tls" / "cert.pem", data_dir / "tls" / "key.pem"
    if not (cert_path.exists() and key_path.exists()):
        _generate_self_signed(cert_path, key_path, names or ["minisip"])
    return cert_path, key_path


def server_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_path, key_path)
    return ctx


def files_state(cert_path: Path, key_path: Path) -> tuple[object, ...]:
    """What tells that a pair changed: the paths, and each file's inode, size and time
    (certbot and the like write new files and swap them in)."""
    return tuple((str(p), s.st_ino, s.st_size, s.st_mtime_ns)
                 for p in (cert_path, key_path) for s in [p.stat()])


def fingerprint(cert_path: Path) -> str:
    """SHA-256 fingerprint as phones show it (AB:CD:...)."""
    return fingerprint_der(ssl.PEM_cert_to_DER_cert(cert_path.read_text()))


def fingerprint_der(der: bytes) -> str:
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))
