"""TLS for the hub's public address: the admin's certificate, or a self-signed one for a lab
network, made once in the data directory and kept (browsers remember an exception for it).

Made with `cryptography` (a JupyterHub dependency, through certipy): no openssl command line.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from pathlib import Path

CERT_NAME = "mlrp-selfsigned.crt"
KEY_NAME = "mlrp-selfsigned.key"
VALID_DAYS = 825  # the longest validity browsers accept for a leaf certificate


def self_signed_paths(data_dir: Path) -> tuple[Path, Path]:
    return data_dir / "tls" / CERT_NAME, data_dir / "tls" / KEY_NAME


def _names(ip: str) -> tuple[list[str], list[str]]:
    """DNS names and IP addresses the certificate is for: this machine's names, loopback,
    and the configured address when it is one address (not "all interfaces")."""
    dns = sorted({socket.gethostname(), socket.getfqdn(), "localhost"} - {""})
    ips = ["127.0.0.1", "::1"]
    if ip not in ("", "0.0.0.0", "::"):
        try:
            ipaddress.ip_address(ip)
            ips.append(ip)
        except ValueError:
            dns.append(ip)
    return dns, sorted(set(ips))


def ensure_self_signed(data_dir: Path, ip: str) -> tuple[Path, Path]:
    """The self-signed certificate and key, made on first use; (cert, key) paths."""
    cert_path, key_path = self_signed_paths(data_dir)
    if cert_path.is_file() and key_path.is_file():
        return cert_path, key_path
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    dns, ips = _names(ip)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns[0] if dns else "mlrp")])
    now = datetime.datetime.now(datetime.UTC)
    san = [x509.DNSName(n) for n in dns] + [x509.IPAddress(ipaddress.ip_address(a)) for a in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def fingerprint(cert_path: Path) -> str:
    """SHA-256 fingerprint, as browsers show it, for people to check the certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes

    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()
