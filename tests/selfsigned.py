"""Throwaway self-signed certificates for the tests (peers, expired pairs, the watcher's checks)."""

from __future__ import annotations

from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID


def self_signed(
    key: CertificateIssuerPrivateKeyTypes,
    name: str,
    not_before: datetime,
    not_after: datetime,
    san: bool = True,
) -> tuple[bytes, bytes]:
    """(certificate PEM, PKCS#8 key PEM) for CN=`name`, valid from `not_before` to `not_after`,
    with `name` as its DNS subjectAltName unless `san` is false.

    >>> from cryptography.hazmat.primitives.asymmetric import ec
    >>> now = datetime.now()
    >>> cert, key = self_signed(ec.generate_private_key(ec.SECP256R1()), "a.test", now, now)
    >>> cert.startswith(b"-----BEGIN CERTIFICATE-----"), b"PRIVATE KEY" in key
    (True, True)
    """
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
    )
    if san:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False
        )
    cert = builder.sign(key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
