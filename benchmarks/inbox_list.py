"""How the inbox list scales: one filtered, sorted page with its counts, against a bare query.

Builds an SQLite database (alembic head) with N alerts over N/4 patients, then times, in one
run and on the same data:

* ``bare``: ``SELECT * FROM alerts ORDER BY created_at DESC LIMIT 25`` (the floor);
* ``list``: :func:`cds.inbox.queries.list_alerts` (join, filters, sorting, page, status
  and tier counts) for the default view and for a tier + cohort + date filter;
* ``page``: the whole ``GET /inbox/`` through Flask (log-in session, template rendering);
* ``patient``: ``GET /inbox/patients/<id>`` plus its two SVG charts (matplotlib).

Prints milliseconds (median of R repeats) and each one's ratio to ``bare``.

    python benchmarks/inbox_list.py --alerts 20000 --repeats 7
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import text

from cds.app import create_app
from cds.config import Settings
from cds.db import session_factory
from cds.db.migrate import upgrade
from cds.db.models import Alert, Patient, Prediction, User
from cds.inbox.queries import AlertQuery, list_alerts
from cds.users import hash_password


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def populate(sessions: object, n_alerts: int) -> None:
    now = dt.datetime(2026, 11, 20, 2, tzinfo=dt.UTC)
    with sessions() as s:  # type: ignore[operator]
        s.add(
            User(
                username="bench",
                role="clinician",
                password_hash=hash_password("bench-pass"),
                active=True,
            )
        )
        n_pat = max(1, n_alerts // 4)
        s.add_all(Patient(fhir_id=f"b{i}", cohort=("a", "b", "c")[i % 3]) for i in range(n_pat))
        s.flush()
        ids = [pid for (pid,) in s.execute(text("SELECT id FROM patients ORDER BY id"))]
        for k in range(6):
            s.add(
                Prediction(
                    patient_id=ids[0],
                    as_of=now - dt.timedelta(days=7 * k),
                    probabilities={"death": 0.1 + 0.02 * k, "macce": 0.2},
                    tiers={"death": "moderate", "macce": "moderate"},
                    modality_weights={"numeric": 0.5, "text": 0.2, "image": 0.3},
                )
            )
        reasons = ("high_tier", "threshold_crossing", "rise", "fibrosis")
        statuses = ("new", "new", "acknowledged", "snoozed", "resolved")
        rows = []
        for j in range(n_alerts):
            status = statuses[j % 5]
            rows.append(
                Alert(
                    patient_id=ids[j % n_pat],
                    reason=reasons[(j // n_pat) % 4],
                    tier=("high", "moderate", "low")[j % 3],
                    probability=(j % 97) / 100,
                    status=status,
                    created_at=now - dt.timedelta(minutes=j),
                    open_key=None
                    if status == "resolved"
                    else f"{ids[j % n_pat]}:{reasons[(j // n_pat) % 4]}",
                    snoozed_until=now + dt.timedelta(days=30) if status == "snoozed" else None,
                )
            )
        s.add_all(rows)
        s.commit()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--alerts", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        upgrade(url)
        app = create_app(Settings().replace(database={"url": url, "echo": False}))
        sessions = session_factory(app.extensions["mprtm.engine"])
        t0 = time.perf_counter()
        populate(sessions, args.alerts)
        print(f"populated {args.alerts} alerts in {time.perf_counter() - t0:.1f} s")
        s = sessions()
        bare = median_ms(
            lambda: s.execute(text("SELECT * FROM alerts ORDER BY created_at DESC LIMIT 25")).all(),
            args.repeats,
        )
        default = median_ms(lambda: list_alerts(s, AlertQuery(), None), args.repeats)
        filtered_q = AlertQuery(
            tier="high", cohort="b", date_from=dt.date(2026, 11, 10), sort="probability"
        )
        filtered = median_ms(lambda: list_alerts(s, filtered_q, None), args.repeats)
        client = app.test_client()
        page = client.get("/inbox/login").get_data(as_text=True)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        assert token is not None
        client.post(
            "/inbox/login",
            data={"username": "bench", "password": "bench-pass", "csrf_token": token.group(1)},
        )
        assert client.get("/inbox/").status_code == 200
        full = median_ms(lambda: client.get("/inbox/"), args.repeats)

        def patient() -> None:
            for path in ("", "/risk-trend.svg", "/modality-weights.svg"):
                assert client.get(f"/inbox/patients/b0{path}").status_code == 200

        pat = median_ms(patient, args.repeats)
        s.close()
        print(f"{'step':<34}{'ms':>10}{'x bare':>10}")
        for name, ms in (
            ("bare SELECT ... LIMIT 25", bare),
            ("list_alerts (default view)", default),
            ("list_alerts (tier+cohort+date)", filtered),
            ("GET /inbox/ (whole page)", full),
            ("patient page + 2 SVG charts", pat),
        ):
            print(f"{name:<34}{ms:>10.1f}{ms / bare:>10.1f}")
        app.extensions["mprtm.engine"].dispose()


if __name__ == "__main__":
    main()
