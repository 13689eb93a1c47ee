"""Self-signed certificates for the lab's TLS gateway, generated at run time (never committed)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def self_signed_pair(cert_dir: str | Path, server_names: list[str], *, days: int = 30) -> tuple[Path, Path]:
    """Write (or reuse) a self-signed certificate + key for these names under `cert_dir`;
    return (cert_path, key_path). The first name is the subject CN; all are SANs."""
    cert_dir = Path(cert_dir)
    cert_dir.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", server_names[0].replace("*", "wildcard"))
    cert_path, key_path = cert_dir / f"{stem}.crt", cert_dir / f"{stem}.key"
    if cert_path.is_file() and key_path.is_file() and _covers(cert_path, server_names):
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, server_names[0]),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshscope test only"),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in server_names]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def _covers(cert_path: Path, server_names: list[str]) -> bool:
    """Whether an existing certificate is still valid for a day and names every server name."""
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return False
    fresh = cert.not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    return fresh and set(server_names) <= set(sans.get_values_for_type(x509.DNSName))
