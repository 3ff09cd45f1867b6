"""Keys of our SMART clients (Backend Services, and the inbox as a confidential asymmetric
client): load the private key, sign client assertions, publish the JWKS.

The EHR's authorization server verifies our client assertions with the public half of
the configured private key; hospitals register either the JWKS document itself or the
URL where the application serves it (``/.well-known/jwks.json``).  The key id defaults to
the RFC 7638 JWK thumbprint, so it is stable for a given key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from connectors.errors import FhirAuthError

ALGORITHMS = ("RS384", "ES384")
#: ``client_assertion_type`` of a private_key_jwt client (RFC 7523).
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME_S = 300
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64url_fixed(value: int, size: int) -> str:
    return base64.urlsafe_b64encode(value.to_bytes(size, "big")).rstrip(b"=").decode("ascii")


def load_private_key(path: str | Path, alg: str) -> PrivateKey:
    """Read a PEM private key (unencrypted PKCS#8 or traditional) that fits ``alg``.

    Raises:
        FhirAuthError: file missing, not a PEM key, or the wrong kind for ``alg``
            (RS384 needs RSA of at least 2048 bits; ES384 needs an EC P-384 key).
    """
    if alg not in ALGORITHMS:
        raise FhirAuthError(f"key_alg must be RS384 or ES384, got {alg!r}")
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise FhirAuthError(f"private key file {p}: cannot be read ({exc.strerror})") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise FhirAuthError(f"private key file {p}: not an unencrypted PEM key ({exc})") from None
    if alg == "RS384":
        if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < 2048:
            raise FhirAuthError(f"private key file {p}: RS384 needs an RSA key of >= 2048 bits")
    elif not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp384r1":
        raise FhirAuthError(f"private key file {p}: ES384 needs an EC key on curve P-384")
    return key


def public_jwk(key: PrivateKey, alg: str, kid: str = "") -> dict[str, Any]:
    """The public JWK of ``key`` with ``alg``, ``use=sig``, ``key_ops=[verify]`` and ``kid``."""
    if isinstance(key, rsa.RSAPrivateKey):
        numbers = key.public_key().public_numbers()
        jwk: dict[str, Any] = {
            "kty": "RSA",
            "e": _b64url_uint(numbers.e),
            "n": _b64url_uint(numbers.n),
        }
    else:
        pub = key.public_key().public_numbers()
        size = (key.curve.key_size + 7) // 8
        jwk = {
            "kty": "EC",
            "crv": "P-384",
            "x": _b64url_fixed(pub.x, size),
            "y": _b64url_fixed(pub.y, size),
        }
    jwk["kid"] = kid or thumbprint(jwk)
    jwk.update({"alg": alg, "use": "sig", "key_ops": ["verify"]})
    return jwk


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url) of a public RSA or EC JWK."""
    members = ("e", "kty", "n") if jwk["kty"] == "RSA" else ("crv", "kty", "x", "y")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    digest = hashlib.sha256(canonical.encode("utf-8")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def public_jwks(private_key_file: str | Path, alg: str, kid: str = "") -> dict[str, Any]:
    """The JWKS document (``{"keys": [...]}``) to publish for the configured client key."""
    return {"keys": [public_jwk(load_private_key(private_key_file, alg), alg, kid)]}


def sign_client_assertion(
    key: PrivateKey, alg: str, kid: str, *, client_id: str, token_url: str
) -> str:
    """A client assertion JWT for SMART asymmetric client authentication (``private_key_jwt``).

    Header ``alg``, ``kid``, ``typ=JWT``; claims ``iss`` = ``sub`` = client id, ``aud`` = the
    token endpoint URL, ``exp`` five minutes ahead, ``iat`` and a unique ``jti``.
    """
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": token_url,
        "exp": now + ASSERTION_LIFETIME_S,
        "iat": now,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid, "typ": "JWT"})
