"""Who may call the CDS service: JWT bearer verification per CDS Hooks 2.0 "Trusting CDS Clients".

Every call carries ``Authorization: Bearer <JWT>`` signed by the EHR (CDS Client) with its
private key.  Verification here:

* ``alg`` must be ES384 or RS384 (the two the specification recommends); ``none`` and every
  symmetric (HMAC) algorithm are refused before any key is looked at.
* ``iss`` must be one of ``[[cds_hooks.trusted_issuers]]``; its JWK Set comes from that
  entry's ``jwks_file`` or ``jwks_url``.  A ``jku`` header is honoured only when the URL is
  listed in that issuer's ``jku_allowed``; any other ``jku`` is refused (never fetched).
* ``kid`` selects the key in the JWK Set (an unknown kid triggers one refetch, rate-limited).
* ``aud`` must equal the URL of the endpoint being called (``<base_url>/cds-services/<id>``).
* ``exp``, ``iat`` and ``jti`` are required; exp and iat are checked with a small leeway;
  a token may not live longer than ``max_token_lifetime_s``.
* ``jti`` may be used once per issuer: the application database remembers it until it
  expires, so several server processes share what they have seen.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
from jwt import PyJWK, PyJWKSet
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from cds.config import CdsHooksSettings, TrustedIssuer
from cds.db.models import JwtReplay
from cds.hooks.errors import Unauthorized

log = logging.getLogger("mprtm.hooks.security")

#: The only signature algorithms accepted (CDS Hooks 2.0 recommends ES384 and RS384).
ALLOWED_ALGORITHMS: tuple[str, ...] = ("ES384", "RS384")
_KEY_TYPE = {"ES384": "EC", "RS384": "RSA"}
#: Seconds between two fetches of the same JWK Set triggered by an unknown kid.
_REFETCH_MIN_INTERVAL_S = 10.0
#: Seconds between two looks at a jwks_file's modification time.
_FILE_CHECK_INTERVAL_S = 2.0


class ReplayCache:
    """Remembers ``(iss, jti)`` pairs until their token expires, in the application
    database (table ``jwt_replay``), so that every ``mprtm serve`` process behind one proxy
    refuses a replay that any of them has seen.

    A pair is stored as sha256(iss, jti).  The first use inserts it; a later use finds
    the row and passes only when the stored expiry is past, through a conditional update
    that lets exactly one of several concurrent callers (threads or processes) through.

    Args:
        sessions: the application's session factory.
        purge_every: expired rows are deleted once every this many first uses.
    """

    def __init__(self, sessions: sessionmaker[Session], purge_every: int = 1000) -> None:
        if purge_every < 1:
            raise ValueError("purge_every must be >= 1")
        self._sessions = sessions
        self._purge_every = purge_every
        self._uses = 0
        self._lock = threading.Lock()

    @staticmethod
    def _key(iss: str, jti: str) -> str:
        return hashlib.sha256(f"{iss}\x00{jti}".encode()).hexdigest()

    def first_use(self, iss: str, jti: str, expires_at: float, now: float | None = None) -> bool:
        """Record the pair; False when it was already seen and has not yet expired."""
        now = time.time() if now is None else now
        key = self._key(iss, jti)
        with self._sessions() as session:
            try:
                session.add(JwtReplay(key=key, expires_at=expires_at))
                session.commit()
            except IntegrityError:
                session.rollback()
                res = session.execute(
                    update(JwtReplay)
                    .where(JwtReplay.key == key, JwtReplay.expires_at < now)
                    .values(expires_at=expires_at)
                )
                session.commit()
                if getattr(res, "rowcount", 0) != 1:
                    return False
        with self._lock:
            self._uses += 1
            purge = self._uses % self._purge_every == 0
        if purge:
            self.purge(now)
        return True

    def purge(self, now: float | None = None) -> int:
        """Delete the pairs whose token has expired; returns how many."""
        now = time.time() if now is None else now
        with self._sessions() as session:
            res = session.execute(delete(JwtReplay).where(JwtReplay.expires_at < now))
            session.commit()
        return int(getattr(res, "rowcount", 0) or 0)

    def __len__(self) -> int:
        with self._sessions() as session:
            return int(session.scalar(select(func.count()).select_from(JwtReplay)) or 0)


@dataclass
class _CachedSet:
    keys: dict[str, PyJWK]
    loaded_at: float
    mtime: float = 0.0
    checked_at: float = 0.0


class JwksStore:
    """JWK Sets by source (a file path or an https URL), cached for ``ttl_s`` seconds.

    Args:
        ttl_s: seconds a fetched URL set is reused; files are re-read when they change.
        timeout_s: HTTP timeout of one JWKS fetch.
    """

    def __init__(self, ttl_s: float = 300.0, timeout_s: float = 2.0) -> None:
        self._ttl = ttl_s
        self._timeout = timeout_s
        self._sets: dict[str, _CachedSet] = {}
        self._lock = threading.Lock()

    def key(self, source: str, kid: str) -> PyJWK:
        """The key ``kid`` of the set at ``source``; raises :class:`Unauthorized`."""
        with self._lock:
            cached = self._sets.get(source)
            now = time.monotonic()
            if cached is None or self._stale(source, cached, now):
                cached = self._load(source)
            elif kid not in cached.keys and now - cached.loaded_at > _REFETCH_MIN_INTERVAL_S:
                cached = self._load(source)  # key rotation: look once more
            found = cached.keys.get(kid)
        if found is None:
            raise Unauthorized(f"JWT kid {kid!r} is not in the issuer's JWK Set")
        return found

    def _stale(self, source: str, cached: _CachedSet, now: float) -> bool:
        if _is_url(source):
            return now - cached.loaded_at > self._ttl
        if now - cached.checked_at < _FILE_CHECK_INTERVAL_S:
            return False
        cached.checked_at = now
        try:
            return Path(source).stat().st_mtime != cached.mtime
        except OSError:
            return True

    def _load(self, source: str) -> _CachedSet:
        mtime = 0.0
        try:
            if _is_url(source):
                resp = httpx.get(source, timeout=self._timeout, follow_redirects=False)
                resp.raise_for_status()
                data = resp.json()
            else:
                path = Path(source)
                mtime = path.stat().st_mtime
                data = json.loads(path.read_text(encoding="utf-8"))
            jwks = PyJWKSet.from_dict(data)
        except (httpx.HTTPError, OSError, ValueError, jwt.PyJWTError) as exc:
            log.warning("cannot load JWK Set %s: %s", source, type(exc).__name__)
            raise Unauthorized(f"the issuer's JWK Set could not be loaded from {source}") from None
        keys = {str(k.key_id): k for k in jwks.keys if k.key_id}
        now = time.monotonic()
        entry = _CachedSet(keys=keys, loaded_at=now, mtime=mtime, checked_at=now)
        self._sets[source] = entry
        return entry


def _is_url(source: str) -> bool:
    return source.startswith(("https://", "http://"))


class JwtVerifier:
    """Verifies the bearer JWT of one CDS Hooks call.

    Args:
        settings: the ``[cds_hooks]`` section (trusted issuers, leeway, lifetimes).
        replay: the jti store (in the application database).
        jwks: the JWK Set store, shared likewise.
    """

    def __init__(
        self,
        settings: CdsHooksSettings,
        replay: ReplayCache,
        jwks: JwksStore | None = None,
    ) -> None:
        self._issuers: dict[str, TrustedIssuer] = {i.iss: i for i in settings.trusted_issuers}
        self._leeway = float(settings.jwt_leeway_s)
        self._max_lifetime = float(settings.max_token_lifetime_s)
        self.replay = replay
        self.jwks = jwks or JwksStore(ttl_s=float(settings.jwks_cache_s))

    def verify(self, authorization: str | None, audiences: Sequence[str]) -> dict[str, Any]:
        """Check the ``Authorization`` header against the endpoint URL(s) ``audiences``.

        Returns:
            The verified claims.

        Raises:
            Unauthorized: with the reason (never the token itself).
        """
        token = _bearer(authorization)
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise Unauthorized("the bearer token is not a well-formed JWT") from None
        alg = header.get("alg")
        if alg not in ALLOWED_ALGORITHMS:
            raise Unauthorized(f"JWT alg {alg!r} is not accepted (only ES384 or RS384)")
        typ = header.get("typ")
        if typ is not None and str(typ).upper() != "JWT":
            raise Unauthorized(f"JWT typ {typ!r} is not 'JWT'")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthorized("JWT header has no kid")
        iss = unverified.get("iss")
        issuer = self._issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise Unauthorized(f"JWT issuer {iss!r} is not trusted")
        source = self._jwks_source(issuer, header.get("jku"))
        key = self.jwks.key(source, kid)
        if key.key_type != _KEY_TYPE[alg] or key.algorithm_name not in (alg, None, ""):
            raise Unauthorized(f"JWT alg {alg} does not match the type of key {kid!r}")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key.key,
                algorithms=[alg],
                audience=list(audiences),
                issuer=issuer.iss,
                leeway=self._leeway,
                options={"require": ["iss", "aud", "exp", "iat", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("JWT has expired") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized(f"JWT aud does not name this endpoint ({audiences[0]})") from None
        except jwt.ImmatureSignatureError:
            raise Unauthorized("JWT iat is in the future") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(f"JWT lacks the required claim {exc.claim!r}") from None
        except jwt.InvalidSignatureError:
            raise Unauthorized("JWT signature does not verify") from None
        except (jwt.PyJWTError, TypeError, ValueError) as exc:
            raise Unauthorized(f"JWT rejected: {type(exc).__name__}") from None
        exp, iat = float(claims["exp"]), float(claims["iat"])
        if exp - iat > self._max_lifetime:
            raise Unauthorized(f"JWT lifetime {exp - iat:.0f} s exceeds {self._max_lifetime:.0f} s")
        jti = claims["jti"]
        if not isinstance(jti, str) or not jti:
            raise Unauthorized("JWT jti must be a non-empty string")
        if not self.replay.first_use(issuer.iss, jti, exp + self._leeway):
            raise Unauthorized("JWT jti was already used (replay)")
        return claims

    def _jwks_source(self, issuer: TrustedIssuer, jku: Any) -> str:
        if jku is not None:
            if jku not in issuer.jku_allowed:
                raise Unauthorized(f"JWT jku {jku!r} is not allow-listed for issuer {issuer.iss}")
            return str(jku)
        source = issuer.jwks_file or issuer.jwks_url
        if not source:
            raise Unauthorized(f"issuer {issuer.iss} has neither jwks_file nor jwks_url")
        return source


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise Unauthorized("missing Authorization: Bearer <JWT> header")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header is not a Bearer token")
    return token.strip()
