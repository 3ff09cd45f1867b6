"""A throw-away certificate authority for the DICOM-over-TLS tests (``cryptography``):
one CA, a certificate for Orthanc and one for us, both valid for 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class Pki:
    ca: Path
    orthanc_cert: Path
    orthanc_key: Path
    our_cert: Path
    our_key: Path
    other_ca: Path  # a CA that signed nothing here (for "untrusted" cases)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def _write_cert(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _ca(name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(
    name: str, ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def make_pki(folder: Path) -> Pki:
    """Write the CA, Orthanc's and our certificate and key (PEM) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key = _ca("mprtm test CA")
    orthanc, orthanc_key = _leaf("ORTHANC", ca, ca_key)
    ours, our_key = _leaf("MPRTM", ca, ca_key)
    other, _ = _ca("unrelated CA")
    return Pki(
        ca=_write_cert(ca, folder / "ca.pem"),
        orthanc_cert=_write_cert(orthanc, folder / "orthanc.pem"),
        orthanc_key=_write_key(orthanc_key, folder / "orthanc.key"),
        our_cert=_write_cert(ours, folder / "mprtm.pem"),
        our_key=_write_key(our_key, folder / "mprtm.key"),
        other_ca=_write_cert(other, folder / "other-ca.pem"),
    )
