"""TLS contexts for DICOM over TLS (PS3.15 Annex B.1, "Basic TLS Secure Transport
Connection Profile"): our client side towards the PACS and our Storage SCP's server side.

Both sides present our certificate when one is configured (mutual TLS) and verify the
peer against the configured CA file, TLS 1.2 or newer.
"""

from __future__ import annotations

import ssl
from pathlib import Path


def _check_files(**files: str) -> None:
    for key, path in files.items():
        if path and not Path(path).is_file():
            raise ValueError(f"{key} {path!r} is not a readable file")


def client_context(ca_file: str = "", cert_file: str = "", key_file: str = "") -> ssl.SSLContext:
    """Context for connecting to the PACS: verifies its certificate and host name.

    Args:
        ca_file: PEM file of the CA(s) that signed the PACS certificate ("" = system CAs).
        cert_file: our certificate (PEM), presented when the PACS asks for one.
        key_file: the key of ``cert_file`` (PEM; "" when it is inside ``cert_file``).

    Raises:
        ValueError: a file is missing or not valid PEM (the message names it).
    """
    _check_files(tls_ca_file=ca_file, tls_cert_file=cert_file, tls_key_file=key_file)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        if ca_file:
            ctx.load_verify_locations(cafile=ca_file)
        else:
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
        if cert_file:
            ctx.load_cert_chain(cert_file, key_file or None)
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(f"TLS files cannot be loaded: {exc}") from exc
    return ctx


def server_context(cert_file: str, key_file: str = "", ca_file: str = "") -> ssl.SSLContext:
    """Context for our Storage SCP: presents our certificate; with ``ca_file`` it also
    requires and verifies the PACS' client certificate.

    Raises:
        ValueError: a file is missing or not valid PEM, or no certificate is given.
    """
    if not cert_file:
        raise ValueError("a TLS storage SCP needs tls_cert_file (and tls_key_file)")
    _check_files(tls_ca_file=ca_file, tls_cert_file=cert_file, tls_key_file=key_file)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert_file, key_file or None)
        if ca_file:
            ctx.load_verify_locations(cafile=ca_file)
            ctx.verify_mode = ssl.CERT_REQUIRED
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(f"TLS files cannot be loaded: {exc}") from exc
    return ctx
