"""One place where HTTP requests to a FHIR server are sent, retried and turned into errors.

Retries: 429, 500, 502, 503, 504, timeouts and connection failures are retried up to
``max_retries`` times with exponential backoff (``backoff_s * 2**attempt``, with jitter);
a ``Retry-After`` header (seconds or an HTTP date) on any retried answer is honoured
instead, capped at ``max_wait_s``.  After the last try the failure becomes a
:class:`~connectors.errors.FhirServerError`.  Other statuses map once, here:
401/403 -> :class:`FhirAuthError` (after one token refresh on 401), 404/410 ->
:class:`ResourceNotFound`, 400/422 -> :class:`FhirInvalidResource`, others ->
:class:`FhirError`.  Messages carry method, path and the OperationOutcome's diagnostics;
never the query string (a search may hold identifying values) nor credentials.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import threading
import time
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

import httpx

from connectors.errors import (
    FhirAuthError,
    FhirError,
    FhirInvalidResource,
    FhirServerError,
    ResourceNotFound,
)

log = logging.getLogger("connectors.fhir.http")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
FHIR_JSON = "application/fhir+json"


class AuthProvider(Protocol):
    """Adds credentials to requests (see :mod:`connectors.fhir._auth`)."""

    def headers(self) -> dict[str, str]: ...

    def invalidate(self) -> bool:
        """Forget a cached token; True when a fresh one can be fetched (worth a retry)."""
        ...


class NoAuth:
    """No credentials."""

    def headers(self) -> dict[str, str]:
        return {}

    def invalidate(self) -> bool:
        return False


def redact_url(url: str) -> str:
    """``scheme://host/path`` of ``url``: no query string, no user info."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}" if parts.scheme else parts.path


def outcome_text(body: Any, limit: int = 500) -> str:
    """Diagnostics of an OperationOutcome (issue diagnostics, details text, expression)."""
    if not isinstance(body, Mapping) or body.get("resourceType") != "OperationOutcome":
        return ""
    parts: list[str] = []
    for issue in body.get("issue") or []:
        if not isinstance(issue, Mapping):
            continue
        text = issue.get("diagnostics") or (issue.get("details") or {}).get("text") or ""
        expr = issue.get("expression") or issue.get("location") or []
        code = issue.get("code", "")
        piece = f"{issue.get('severity', 'error')} {code}: {text}".strip()
        if expr and isinstance(expr, list):
            piece += f" [{', '.join(str(e) for e in expr)}]"
        parts.append(piece)
    text = "; ".join(parts)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _response_outcome(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        return ""
    if isinstance(body, Mapping) and "error" in body and "resourceType" not in body:
        # OAuth error answer (RFC 6749 section 5.2)
        return f"{body.get('error')}: {body.get('error_description', '')}".strip(": ")
    return outcome_text(body)


def _issue_codes(resp: httpx.Response) -> tuple[str, ...]:
    try:
        body = resp.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        return ()
    if not isinstance(body, Mapping) or body.get("resourceType") != "OperationOutcome":
        return ()
    issues = body.get("issue")
    if not isinstance(issues, list):
        return ()
    return tuple(str(i.get("code", "")) for i in issues if isinstance(i, Mapping))


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class FhirHttp:
    """Sends requests to one FHIR server with retries, bounded concurrency and auth.

    Args:
        base_url: FHIR base URL (``https://ehr.example.org/fhir/R4``).
        auth: credentials provider (``NoAuth()`` by default).
        timeout_s: connect/read/write timeout of one HTTP call.
        max_retries: retries after the first try on retryable failures.
        backoff_s: first backoff delay; doubled at every retry.
        max_wait_s: longest single wait (also caps a server's Retry-After).
        max_concurrency: HTTP calls in flight at once through this object (all threads).
        transport: an ``httpx`` transport (tests); default: real network.
    """

    def __init__(
        self,
        base_url: str,
        *,
        auth: AuthProvider | None = None,
        timeout_s: float = 30.0,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        max_wait_s: float = 60.0,
        max_concurrency: int = 4,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise FhirError(f"FHIR base URL must be http(s): {redact_url(base_url)!r}")
        if max_retries < 0 or max_concurrency < 1 or timeout_s <= 0:
            raise ValueError("max_retries >= 0, max_concurrency >= 1 and timeout_s > 0 required")
        self.base_url = base_url.rstrip("/")
        self.auth: AuthProvider = auth or NoAuth()
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_wait_s = max_wait_s
        self._slots = threading.BoundedSemaphore(max_concurrency)
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout_s),
            transport=transport,
            limits=httpx.Limits(max_connections=max_concurrency * 2),
            headers={"Accept": FHIR_JSON, "User-Agent": "mprtm-cds"},
            follow_redirects=False,
        )
        self.retries_done = 0  # statistics (benchmarks, tests)

    # -------------------------------------------------------------- helpers
    def url(self, path_or_url: str) -> str:
        """Absolute URL of a relative path (``Patient/1``) or an absolute URL on this server."""
        if path_or_url.startswith(("http://", "https://")):
            if not self.same_origin(path_or_url):
                raise FhirError(
                    f"refusing to follow a URL outside the FHIR server: {redact_url(path_or_url)}"
                )
            return path_or_url
        return f"{self.base_url}/{path_or_url.lstrip('/')}"

    def same_origin(self, url: str) -> bool:
        a, b = urlsplit(url), urlsplit(self.base_url)
        return (a.scheme, a.hostname, a.port) == (b.scheme, b.hostname, b.port)

    def close(self) -> None:
        self._client.close()

    # -------------------------------------------------------------- requests
    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        params: Mapping[str, str | list[str]] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        use_auth: bool = True,
        what: str = "",
        stream: bool = False,
        content: bytes | None = None,
        any_origin: bool = False,
        trusted_origin: bool = False,
        retry_statuses: frozenset[int] = RETRY_STATUSES,
    ) -> httpx.Response:
        """Send one request (with retries) and return a 2xx/3xx response; raise otherwise.

        ``what`` names the resource or search in error messages (e.g. ``Patient/123``).
        With ``stream`` the body is not read (the caller must close the response).
        ``any_origin`` allows a URL outside the FHIR server; credentials go there only with
        ``trusted_origin`` (the caller checked that origin against its configuration).
        ``retry_statuses`` are the statuses retried (transport failures always are): callers
        that read the OperationOutcome to decide themselves narrow it.
        """
        if any_origin and use_auth and not trusted_origin:
            raise ValueError("credentials are only sent to the FHIR server's own origin")
        url = path_or_url if any_origin else self.url(path_or_url)
        label = what or f"{method} {redact_url(url)}"
        extra = dict(headers or {})
        if json_body is not None:
            content = json.dumps(json_body, separators=(",", ":")).encode("utf-8")
            extra.setdefault("Content-Type", FHIR_JSON)
        refreshed = False
        attempt = 0
        while True:
            hdrs = {**extra, **(self.auth.headers() if use_auth else {})}
            try:
                with self._slots:
                    req = self._client.build_request(
                        method, url, params=params, content=content, headers=hdrs
                    )
                    resp = self._client.send(req, stream=stream)
            except httpx.TimeoutException as exc:
                if attempt >= self.max_retries:
                    raise FhirServerError(
                        f"{label}: timed out after {attempt + 1} tries ({type(exc).__name__})",
                        url=redact_url(url),
                    ) from None
                self._sleep(attempt, None, label, "timeout")
                attempt += 1
                continue
            except httpx.TransportError as exc:
                if attempt >= self.max_retries:
                    raise FhirServerError(
                        f"{label}: connection failed after {attempt + 1} tries "
                        f"({type(exc).__name__})",
                        url=redact_url(url),
                    ) from None
                self._sleep(attempt, None, label, type(exc).__name__)
                attempt += 1
                continue
            status = resp.status_code
            if status < 400:
                return resp
            if stream:
                resp.read()
                resp.close()
            if status in retry_statuses and attempt < self.max_retries:
                wait = parse_retry_after(resp.headers.get("Retry-After"))
                self._sleep(attempt, wait, label, f"HTTP {status}")
                attempt += 1
                continue
            if status == 401 and use_auth and not refreshed and self.auth.invalidate():
                refreshed = True
                continue
            raise self._error(resp, label, attempt + 1)

    def _sleep(self, attempt: int, retry_after: float | None, label: str, why: str) -> None:
        if retry_after is not None:
            delay = min(retry_after, self.max_wait_s)
        else:
            delay = min(self.backoff_s * (2**attempt), self.max_wait_s)
            delay *= random.uniform(0.8, 1.2)  # noqa: S311 (jitter, not cryptography)
        self.retries_done += 1
        log.warning(
            "%s: %s, retry %d/%d in %.2fs", label, why, attempt + 1, self.max_retries, delay
        )
        time.sleep(delay)

    def request_token(self, token_url: str, form: Mapping[str, str]) -> httpx.Response:
        """POST an OAuth token request (form-encoded; no credentials header; retried)."""
        body = urlencode(dict(form)).encode("ascii")
        return self.request(
            "POST",
            token_url,
            content=body,
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
            },
            use_auth=False,
            any_origin=True,
            what=f"POST {redact_url(token_url)}",
        )

    @staticmethod
    def _error(resp: httpx.Response, label: str, tries: int) -> FhirError:
        status = resp.status_code
        diag = _response_outcome(resp)
        msg = f"{label}: HTTP {status}" + (f": {diag}" if diag else "")
        kw: dict[str, Any] = {
            "status": status,
            "url": redact_url(str(resp.request.url)),
            "issue_codes": _issue_codes(resp),
        }
        if status in RETRY_STATUSES:
            return FhirServerError(f"{msg} (after {tries} tries)", **kw)
        if status in (401, 403):
            return FhirAuthError(msg, **kw)
        if status in (404, 410):
            return ResourceNotFound(msg, **kw)
        if status in (400, 422):
            return FhirInvalidResource(msg, **kw)
        return FhirError(msg, **kw)

    def get_json(
        self,
        path_or_url: str,
        *,
        params: Mapping[str, str | list[str]] | None = None,
        what: str = "",
    ) -> dict[str, Any]:
        """GET a FHIR JSON resource or Bundle as a dict (internal; typed at the boundary)."""
        resp = self.request("GET", path_or_url, params=params, what=what)
        return self.decode(resp, what or path_or_url)

    @staticmethod
    def decode(resp: httpx.Response, what: str) -> dict[str, Any]:
        try:
            body = resp.json()
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            raise FhirError(
                f"{what}: answer is not JSON ({resp.headers.get('Content-Type', '?')})",
                status=resp.status_code,
                url=redact_url(str(resp.request.url)),
            ) from None
        if not isinstance(body, dict):
            raise FhirError(f"{what}: answer is not a JSON object", status=resp.status_code)
        return body
