"""Faults (429/500/timeouts injected into the real engine) and auth (bearer, SMART)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from connectors.errors import FhirAuthError, FhirServerError
from connectors.fhir.jwks import public_jwks, thumbprint
from connectors.fhir.rest import FhirRestSource, from_settings
from tests.fhir.cohort import Cohort, build_cohort, transaction_of
from tests.servers.fhir_engine import FhirEngine

pytestmark = pytest.mark.fhir_server


@pytest.fixture(scope="module")
def cohort(fhir_engine: FhirEngine) -> Cohort:
    c = build_cohort(n_patients=3, n_obs=2)
    fhir_engine.load(transaction_of(c.resources))
    return c


def source(engine: FhirEngine, **kw: object) -> FhirRestSource:
    args: dict[str, object] = {"base_url": engine.base_url, "backoff_s": 0.05}
    args.update(kw)
    return from_settings(**args)  # type: ignore[arg-type]


# ------------------------------------------------------------------ faults
def test_429_retry_after_is_honoured(engine: FhirEngine, cohort: Cohort) -> None:
    pid = cohort.patient_ids[0]
    with source(engine) as src:
        engine.inject_fault(429, count=2, retry_after=0.4, path_contains=f"Patient/{pid}")
        t0 = time.monotonic()
        rec = src.patient_record(pid)
        assert time.monotonic() - t0 >= 0.75  # two waits of 0.4 s, not the 0.05 s backoff
        assert rec.patient_id == pid and src.http.retries_done == 2
    assert engine.stats()["byStatus"]["429"] == 2


def test_500_and_timeout_are_retried(engine: FhirEngine, cohort: Cohort) -> None:
    pid = cohort.patient_ids[1]
    with source(engine, timeout_s=0.5) as src:
        engine.inject_fault(500, count=2, path_contains="Condition")
        engine.inject_fault(None, count=1, hang_ms=1500, path_contains="MedicationRequest")
        engine.inject_fault(503, count=1, retry_after=0, path_contains="Encounter")
        rec = src.patient_record(pid)
        assert len(rec.conditions) == 1 and len(rec.medication_requests) == 1
        assert src.http.retries_done == 4


def test_persistent_faults_end_in_a_clear_per_patient_error(
    engine: FhirEngine, cohort: Cohort
) -> None:
    bad, good = cohort.patient_ids[2], cohort.patient_ids[0]
    with source(engine, max_retries=2) as src:
        engine.inject_fault(500, count=50, path_contains=bad)
        results = dict(src.iter_patient_records([good, bad]))
        assert not isinstance(results[good], Exception)
        err = results[bad]
        assert isinstance(err, FhirServerError)
        assert str(err).startswith(f"Patient/{bad}: ")
        assert "HTTP 500" in str(err) and "after 3 tries" in str(err)
        assert "injected fault 500" in str(err)  # the OperationOutcome's diagnostics
    engine.reset()
    with source(engine, max_retries=1, timeout_s=0.3) as src:
        engine.inject_fault(None, count=10, hang_ms=1000, path_contains=bad)
        with pytest.raises(FhirServerError, match=rf"^Patient/{bad}: .*timed out after 2 tries"):
            src.patient_record(bad)
    engine.reset()
    with source(engine, max_retries=1) as src:
        engine.inject_fault(429, count=10, retry_after=0.1, path_contains=f"Patient/{bad}")
        with pytest.raises(FhirServerError, match=r"HTTP 429"):
            src.patient_record(bad)


# ------------------------------------------------------------------ bearer
def test_bearer_token(engine: FhirEngine, cohort: Cohort) -> None:
    engine.configure_auth(require=True, tokens=["s3cret-token"])
    pid = cohort.patient_ids[0]
    with source(engine, auth="bearer", bearer_token="s3cret-token") as src:
        assert src.patient_record(pid).patient_id == pid
    with source(engine, auth="bearer", bearer_token="wrong") as src:
        with pytest.raises(FhirAuthError, match=r"HTTP 401") as info:
            src.patient_record(pid)
        assert "wrong" not in str(info.value)
    with source(engine) as src, pytest.raises(FhirAuthError):
        src.patient_record(pid)
    with pytest.raises(FhirAuthError, match="needs a token"):
        source(engine, auth="bearer", bearer_token="")


# ------------------------------------------------------------------ SMART backend services
def _write_key(path: Path, alg: str) -> Path:
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    if alg == "RS384":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        key = ec.generate_private_key(ec.SECP384R1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


@pytest.mark.parametrize("alg", ["RS384", "ES384"])
def test_smart_backend_token_fetch_cache_and_refresh(
    engine: FhirEngine, cohort: Cohort, tmp_path: Path, alg: str
) -> None:
    key = _write_key(tmp_path / "key.pem", alg)
    jwks = public_jwks(key, alg)
    engine.configure_auth(require=True, clients={"mprtm-app": {"jwks": jwks}}, token_ttl=2)
    pid = cohort.patient_ids[1]
    with source(
        engine, auth="smart-backend", client_id="mprtm-app", private_key_file=str(key), key_alg=alg
    ) as src:  # token_url discovered
        auth = src.http.auth
        src.patient_record(pid)
        src.patient_record(pid)
        assert auth.tokens_fetched == 1  # type: ignore[attr-defined]  # cached
        time.sleep(1.7)  # refreshed before the 2 s token expires
        src.patient_record(pid)
        assert auth.tokens_fetched == 2  # type: ignore[attr-defined]
        # the server forgets every token: the 401 triggers one fresh token and a retry
        engine.configure_auth(require=True, clients={"mprtm-app": {"jwks": jwks}}, token_ttl=300)
        assert src.patient_record(pid).patient_id == pid
        assert auth.tokens_fetched == 3  # type: ignore[attr-defined]
    assert engine.stats()["tokensIssued"] == 3


def test_smart_assertion_claims(engine: FhirEngine, tmp_path: Path) -> None:
    key = _write_key(tmp_path / "key.pem", "RS384")
    jwks = public_jwks(key, "RS384", kid="")
    engine.configure_auth(require=True, clients={"c1": {"jwks": jwks}})
    with source(
        engine,
        auth="smart-backend",
        client_id="c1",
        private_key_file=str(key),
        token_url=engine.token_url,
    ) as src:
        a1 = src.http.auth.client_assertion()  # type: ignore[attr-defined]
        a2 = src.http.auth.client_assertion()  # type: ignore[attr-defined]
    header = jwt.get_unverified_header(a1)
    assert header["alg"] == "RS384" and header["kid"] == thumbprint(jwks["keys"][0])
    pub = jwt.PyJWK(jwks["keys"][0]).key
    claims = jwt.decode(a1, pub, algorithms=["RS384"], audience=engine.token_url)
    assert claims["iss"] == claims["sub"] == "c1"
    assert 290 <= claims["exp"] - time.time() <= 300
    assert (
        claims["jti"] != jwt.decode(a2, pub, algorithms=["RS384"], audience=engine.token_url)["jti"]
    )
    # a replayed assertion is refused by the token endpoint (jti used once)
    form = {
        "grant_type": "client_credentials",
        "scope": "system/*.rs",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": a1,
    }
    assert httpx.post(engine.token_url, data=form).status_code == 200
    replay = httpx.post(engine.token_url, data=form)
    assert replay.status_code == 401 and replay.json()["error"] == "invalid_client"


def test_smart_wrong_key_is_an_auth_error(engine: FhirEngine, tmp_path: Path) -> None:
    registered = _write_key(tmp_path / "registered.pem", "ES384")
    other = _write_key(tmp_path / "other.pem", "ES384")
    jwks = public_jwks(registered, "ES384", kid="k1")
    engine.configure_auth(require=True, clients={"c2": {"jwks": jwks}})
    with pytest.raises(FhirAuthError, match="invalid_client: signature does not verify"):
        source(
            engine,
            auth="smart-backend",
            client_id="c2",
            private_key_file=str(other),
            key_alg="ES384",
            key_id="k1",
            max_retries=0,
        )
    with pytest.raises(FhirAuthError, match="ES384 needs an EC key"):
        source(
            engine,
            auth="smart-backend",
            client_id="c2",
            private_key_file=str(_write_key(tmp_path / "rsa.pem", "RS384")),
            key_alg="ES384",
        )


def test_token_endpoint_discovered_from_capability_statement(
    engine: FhirEngine, cohort: Cohort, tmp_path: Path
) -> None:
    key = _write_key(tmp_path / "key.pem", "ES384")
    engine.configure_auth(
        require=True, clients={"c3": {"jwks": public_jwks(key, "ES384")}}, well_known=False
    )
    assert httpx.get(f"{engine.base_url}/.well-known/smart-configuration").status_code == 404
    with source(
        engine, auth="smart-backend", client_id="c3", private_key_file=str(key), key_alg="ES384"
    ) as src:
        assert src.http.auth.token_url == engine.token_url  # type: ignore[attr-defined]
        assert src.patient_record(cohort.patient_ids[0]).patient_id == cohort.patient_ids[0]
