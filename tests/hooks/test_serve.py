"""``mprtm serve``: the app under waitress, over real HTTP, with a JWT from the EHR."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from cds.db import make_engine, session_factory
from cds.errors import UsageError
from tests.hooks.conformance import check_discovery, check_response
from tests.hooks.conftest import Keys
from tests.hooks.helpers import ISS, PV, add_prediction, hook_body
from tests.hooks.served import free_port, serve, write_config


def _token(keys: Keys, aud: str) -> str:
    now = int(time.time())
    claims = {"iss": ISS, "aud": aud, "exp": now + 60, "iat": now, "jti": str(uuid.uuid4())}
    return jwt.encode(claims, keys.ec, algorithm="ES384", headers={"kid": "ec-1", "typ": "JWT"})


def test_serve_answers_hooks_over_http(
    tmp_path: Path, db_url: str, jwks_file: Path, keys: Keys
) -> None:
    engine = make_engine(db_url)
    add_prediction(session_factory(engine), "p-http", age_hours=1)
    engine.dispose()
    port = free_port()
    cfg = write_config(
        tmp_path / "mprtm.toml",
        db_url,
        port=port,
        require_jwt=True,
        jwks_file=str(jwks_file),
        iss=ISS,
    )
    with serve(cfg, port) as base:
        services = f"{base}/cds-services"
        assert httpx.get(services).status_code == 401
        resp = httpx.get(services, headers={"Authorization": f"Bearer {_token(keys, services)}"})
        assert resp.status_code == 200
        check_discovery(resp.json())
        url = f"{services}/{PV}"
        resp = httpx.post(
            url, json=hook_body("p-http"), headers={"Authorization": f"Bearer {_token(keys, url)}"}
        )
        assert resp.status_code == 200, resp.text
        body: Any = resp.json()
        check_response(body)
        assert "nightly" in body["cards"][0]["summary"]
        pre = httpx.options(
            url, headers={"Origin": "https://ehr.example", "Access-Control-Request-Method": "POST"}
        )
        assert pre.status_code == 204 and pre.headers["access-control-allow-origin"] == "*"


def test_serve_rejects_bad_arguments() -> None:
    import argparse

    from cds.commands.serve import _serve
    from cds.config import Settings

    for threads, port in ((0, 8080), (4, 70000)):
        args = argparse.Namespace(host=None, port=port, threads=threads, trusted_proxy=None)
        with pytest.raises(UsageError):
            _serve(args, Settings())
