"""The CDS Hooks path on PostgreSQL: nightly card, on-demand score stored, feedback."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from cds.app import create_app
from cds.config import Settings
from cds.db import migrate
from cds.db.models import CardFeedback, IssuedCard, Prediction
from cds.hooks import set_scorer
from tests.hooks.conformance import check_response
from tests.hooks.conftest import TokenFactory
from tests.hooks.helpers import (
    PV,
    RuleScorer,
    add_prediction,
    auth,
    full_prefetch,
    hook_body,
    service_url,
)

pytestmark = pytest.mark.postgres


def test_hooks_on_postgres(pg_url: str, make_settings: Any, token: TokenFactory) -> None:
    migrate.upgrade(pg_url)
    settings: Settings = make_settings().replace(database__url=pg_url)
    app = create_app(settings)
    set_scorer(app, RuleScorer())
    sessions = app.extensions["mprtm.sessions"]
    try:
        add_prediction(sessions, "pg-1", age_hours=2)
        c = app.test_client()

        def call(pid: str, prefetch: Any = None) -> Any:
            resp = c.post(
                f"/cds-services/{PV}",
                json=hook_body(pid, prefetch=prefetch),
                headers=auth(token(service_url(PV))),
            )
            assert resp.status_code == 200
            check_response(resp.get_json())
            return resp.get_json()["cards"][0]

        nightly = call("pg-1")
        assert "nightly" in nightly["summary"]
        on_demand = call("pg-2", full_prefetch("pg-2"))
        assert "computed now" in on_demand["summary"]
        body = {
            "feedback": [
                {
                    "card": nightly["uuid"],
                    "outcome": "overridden",
                    "outcomeTimestamp": "2026-11-29T12:00:00Z",
                }
            ]
        }
        resp = c.post(
            f"/cds-services/{PV}/feedback", json=body, headers=auth(token(service_url(PV)))
        )
        assert resp.status_code == 200
        app.extensions["mprtm.hooks"].engine.writer.flush()
        with sessions() as s:
            assert s.scalars(select(Prediction).where(Prediction.source == "on_demand")).one()
            assert len(s.scalars(select(IssuedCard)).all()) == 2
            assert s.scalars(select(CardFeedback)).one().patient_fhir_id == "pg-1"
    finally:
        app.extensions["mprtm.hooks"].engine.close()
        app.extensions["mprtm.engine"].dispose()


def test_replay_store_lets_exactly_one_concurrent_use_through_on_postgres(pg_url: str) -> None:
    """Eight connections (as eight server processes would hold) present the same jti at
    once, first while it is new, then once it has expired: one use passes each time."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    from cds.db.session import make_engine, session_factory
    from cds.hooks.security import ReplayCache

    migrate.upgrade(pg_url)
    engines = [make_engine(pg_url) for _ in range(8)]
    caches = [ReplayCache(session_factory(e)) for e in engines]
    try:
        for now, expires in ((1000.0, 1300.0), (1400.0, 1700.0)):  # new, then expired
            barrier = Barrier(len(caches))

            def use(
                cache: ReplayCache, now: float = now, expires: float = expires, b: Barrier = barrier
            ) -> bool:
                b.wait()
                return cache.first_use("https://ehr.example", "jti-1", expires, now=now)

            with ThreadPoolExecutor(len(caches)) as pool:
                results = list(pool.map(use, caches))
            assert sum(results) == 1, results
        assert len(caches[0]) == 1
    finally:
        for e in engines:
            e.dispose()
