"""Who may call the CDS service: JWT bearer verification per CDS Hooks 2.0 "Trusting CDS Clients".

Every call carries ``Authorization: Bearer <JWT>`` signed by the EHR (CDS Client) with its
private key.  Verification here:

* ``alg`` must be one of the issuer's ``algorithms`` (ES384 and RS384 by default, the two the
  specification recommends; ES256, RS256 and PS384 may be added); ``none`` and every
  symmetric (HMAC) algorithm are refused before any key is looked at.
* ``iss`` must be one of ``[[cds_hooks.trusted_issuers]]``.  Its keys come from the source
  configured for it: ``jwks_file`` first (a ``jku`` header is then ignored and never
  fetched), else a ``jku`` listed in ``jku_allowed``, else ``jwks_url``.  A ``jku`` that is
  not allow-listed is refused when the issuer has no file or URL, ignored otherwise.
* ``kid`` selects the key in the JWK Set (an unknown kid triggers one refetch, rate-limited).
  The key's type (and curve) must fit ``alg``; its ``alg`` member may be absent.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
from jwt import PyJWK
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from cds.config import CdsHooksSettings, TrustedIssuer
from cds.db.models import JwtReplay
from cds.hooks.errors import Unauthorized

log = logging.getLogger("mprtm.hooks.security")

#: Signature algorithms an issuer may be configured to use, with the key type (and EC curve)
#: each needs.  CDS Hooks 2.0 recommends ES384 and RS384; never HMAC or none.
_KEY_TYPE: dict[str, tuple[str, str | None]] = {
    "ES384": ("EC", "secp384r1"),
    "ES256": ("EC", "secp256r1"),
    "RS384": ("RSA", None),
    "RS256": ("RSA", None),
    "PS384": ("RSA", None),
}
ALLOWED_ALGORITHMS: tuple[str, ...] = tuple(_KEY_TYPE)
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


@dataclass(frozen=True)
class JwkEntry:
    """One key of a JWK Set and the ``alg`` member it declared (None when absent).

    PyJWT gives an RSA JWK without ``alg`` the algorithm RS256; the declared value is kept
    apart so that such a key serves RS384 (or PS384) tokens as RFC 7517 allows.
    """

    jwk: PyJWK
    declared_alg: str | None


@dataclass
class _CachedSet:
    keys: dict[str, JwkEntry]
    loaded_at: float
    mtime: float = 0.0
    checked_at: float = 0.0


@dataclass
class _Source:
    """State of one key source: its lock, last good set and last failure."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    good: _CachedSet | None = None
    failed_at: float | None = None


class JwksStore:
    """JWK Sets by source (a file path or an https URL), cached for ``ttl_s`` seconds.

    Each source has its own lock, so a hanging JWKS URL delays only the callers of that
    source, one fetch at a time.  When a refresh fails, the last good set is served; when
    there is none, the failure is remembered for ``failure_ttl_s`` seconds and callers are
    refused at once instead of triggering a fetch each.

    Args:
        ttl_s: seconds a fetched URL set is reused; files are re-read when they change.
        timeout_s: HTTP timeout of one JWKS fetch.
        failure_ttl_s: seconds a failed load is remembered.
    """

    def __init__(
        self, ttl_s: float = 300.0, timeout_s: float = 2.0, failure_ttl_s: float = 30.0
    ) -> None:
        self._ttl = ttl_s
        self._timeout = timeout_s
        self._failure_ttl = failure_ttl_s
        self._sources: dict[str, _Source] = {}
        self._lock = threading.Lock()  # guards _sources only, never held during I/O
        self.fetches = 0  # statistics (tests)

    def _source(self, source: str) -> _Source:
        with self._lock:
            return self._sources.setdefault(source, _Source())

    def key(self, source: str, kid: str) -> JwkEntry:
        """The key ``kid`` of the set at ``source``; raises :class:`Unauthorized`."""
        state = self._source(source)
        with state.lock:
            now = time.monotonic()
            cached = state.good
            if cached is None or self._stale(source, cached, now):
                cached = self._refresh(source, state, now)
            elif kid not in cached.keys and now - cached.loaded_at > _REFETCH_MIN_INTERVAL_S:
                cached = self._refresh(source, state, now)  # key rotation: look once more
            found = cached.keys.get(kid)
        if found is None:
            raise Unauthorized(f"JWT kid {kid!r} is not in the issuer's JWK Set")
        return found

    def _refresh(self, source: str, state: _Source, now: float) -> _CachedSet:
        """Load the set; on failure the last good one, or :class:`Unauthorized`."""
        recent_failure = state.failed_at is not None and now - state.failed_at < self._failure_ttl
        if not recent_failure:
            try:
                state.good = self._load(source)
                state.failed_at = None
                return state.good
            except Unauthorized:
                state.failed_at = time.monotonic()
                if state.good is None:
                    raise
        if state.good is not None:
            return state.good  # stale, but the last set that loaded
        raise Unauthorized(
            f"the issuer's JWK Set could not be loaded from {source} (recent failure)"
        )

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
        self.fetches += 1
        try:
            if _is_url(source):
                resp = httpx.get(
                    source, timeout=self._timeout, follow_redirects=False, trust_env=False
                )
                resp.raise_for_status()
                data = resp.json()
            else:
                path = Path(source)
                mtime = path.stat().st_mtime
                data = json.loads(path.read_text(encoding="utf-8"))
            keys = _parse_set(data)
        except (httpx.HTTPError, OSError, ValueError, RecursionError, jwt.PyJWTError) as exc:
            log.warning("cannot load JWK Set %s: %s", source, type(exc).__name__)
            raise Unauthorized(f"the issuer's JWK Set could not be loaded from {source}") from None
        now = time.monotonic()
        return _CachedSet(keys=keys, loaded_at=now, mtime=mtime, checked_at=now)


def _parse_set(data: Any) -> dict[str, JwkEntry]:
    """Keys of a JWK Set by kid; a key PyJWT cannot read is skipped (the rest still count)."""
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list):
        raise ValueError("not a JWK Set")
    out: dict[str, JwkEntry] = {}
    for raw in data["keys"]:
        if not isinstance(raw, dict) or not isinstance(raw.get("kid"), str):
            continue
        declared = raw.get("alg") if isinstance(raw.get("alg"), str) else None
        if declared is not None and declared not in _KEY_TYPE:
            continue  # a key for an algorithm never accepted here (HS*, none, ...)
        try:
            jwk = PyJWK(raw, algorithm=declared or _default_alg(raw))
        except (jwt.PyJWTError, ValueError, TypeError, KeyError):
            continue
        out[raw["kid"]] = JwkEntry(jwk=jwk, declared_alg=declared)
    if not out:
        raise ValueError("no usable key in the JWK Set")
    return out


def _default_alg(raw: dict[str, Any]) -> str | None:
    """An algorithm to build an ``alg``-less key with (the key serves any of its type)."""
    if raw.get("kty") == "RSA":
        return "RS384"
    if raw.get("kty") == "EC":
        return {"P-384": "ES384", "P-256": "ES256"}.get(str(raw.get("crv")))
    return None


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
        self.jwks = jwks or JwksStore(
            ttl_s=float(settings.jwks_cache_s), failure_ttl_s=float(settings.jwks_failure_cache_s)
        )

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
            raise Unauthorized(
                f"JWT alg {alg!r} is not accepted (only {', '.join(ALLOWED_ALGORITHMS)})"
            )
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
        if alg not in issuer.algorithms:
            raise Unauthorized(
                f"JWT alg {alg} is not accepted for issuer {issuer.iss} "
                f"(only {', '.join(issuer.algorithms)})"
            )
        source = self._jwks_source(issuer, header.get("jku"))
        entry = self.jwks.key(source, kid)
        if not _fits(entry, alg):
            raise Unauthorized(f"JWT alg {alg} does not match the type of key {kid!r}")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=entry.jwk.key,
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
        """The configured key source wins: the file, then an allow-listed jku, then the URL."""
        if issuer.jwks_file:
            return issuer.jwks_file
        if jku is not None:
            if jku in issuer.jku_allowed:
                return str(jku)
            if not issuer.jwks_url:
                raise Unauthorized(f"JWT jku {jku!r} is not allow-listed for issuer {issuer.iss}")
        if not issuer.jwks_url:
            raise Unauthorized(f"issuer {issuer.iss} has neither jwks_file nor jwks_url")
        return issuer.jwks_url


def _fits(entry: JwkEntry, alg: str) -> bool:
    """The key's type (and EC curve) suit ``alg``, and its declared alg, if any, is ``alg``."""
    kty, curve = _KEY_TYPE[alg]
    if entry.jwk.key_type != kty:
        return False
    if entry.declared_alg is not None and entry.declared_alg != alg:
        return False
    if curve is not None:
        key_curve = getattr(getattr(entry.jwk.key, "curve", None), "name", None)
        if key_curve != curve:
            return False
    return True


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise Unauthorized("missing Authorization: Bearer <JWT> header")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header is not a Bearer token")
    return token.strip()
