"""Two scheduler processes on a fast cron: every tick runs the batch exactly once."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import select

from cds.db import make_engine, session_factory, session_scope
from cds.db.models import BatchItem, BatchRun, IssuedCard
from tests.batch.conftest import batch_settings, write_config

REPO = Path(__file__).resolve().parents[2]
TICK_S = 8


def _small_cohort(cohort_dir: Path, out: Path, n: int = 3) -> Path:
    shutil.copytree(cohort_dir, out)
    ids = [json.loads(x)["id"] for x in (out / "fhir" / "Patient.ndjson").read_text().splitlines()]
    group = {
        "resourceType": "Group",
        "id": "small",
        "type": "person",
        "actual": True,
        "member": [{"entity": {"reference": f"Patient/{i}"}} for i in ids[:n]],
    }
    with (out / "fhir" / "Group.ndjson").open("a") as fh:
        fh.write(json.dumps(group) + "\n")
    return out


def test_two_schedulers_run_each_tick_once(
    tmp_path: Path, cohort_dir: Path, checkpoint: Path
) -> None:
    cohort = _small_cohort(cohort_dir, tmp_path / "cohort")
    s = batch_settings(
        tmp_path,
        cohort,
        checkpoint,
        batch__cohort="group:small",
        batch__schedule=f"*/{TICK_S} * * * * *",
        batch__misfire_grace_s=2,
        retention__issued_cards_days=30,
        retention__after_nightly=True,
    )
    # a card record past [retention] issued_cards_days: the purge after a tick removes it
    seed_engine = make_engine(s.database.url)
    with session_scope(session_factory(seed_engine)) as db:
        db.add(
            IssuedCard(
                card_uuid="old-card",
                service_id="s",
                patient_fhir_id="p",
                issued_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=31),
            )
        )
    seed_engine.dispose()
    cfg = write_config(tmp_path / "sched.toml", s)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPRTM_")}
    procs, logs, handles = [], [], []
    for k in range(2):
        log = tmp_path / f"scheduler-{k}.log"
        logs.append(log)
        handles.append(log.open("wb"))
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "cds.cli", "--config", str(cfg), "scheduler"],
                cwd=REPO,
                env=env,
                stdout=handles[-1],
                stderr=subprocess.STDOUT,
            )
        )
    engine = make_engine(s.database.url)
    sessions = session_factory(engine)
    deadline = time.monotonic() + 150
    n_done_runs = 0
    while time.monotonic() < deadline and n_done_runs < 3:
        time.sleep(1)
        with session_scope(sessions) as db:
            n_done_runs = len(
                list(db.scalars(select(BatchRun).where(BatchRun.status == "completed")))
            )
        assert all(p.poll() is None for p in procs), [x.read_text()[-1500:] for x in logs]
    for p in procs:
        p.send_signal(signal.SIGTERM)
    codes = [p.wait(60) for p in procs]
    for h in handles:
        h.close()
    texts = [x.read_text(errors="replace") for x in logs]
    assert codes == [0, 0], [t[-1500:] for t in texts]
    assert all("scheduler stopped" in t for t in texts)

    with session_scope(sessions) as db:
        runs = list(db.scalars(select(BatchRun).where(BatchRun.run_key.like("tick:%"))))
        assert len(runs) >= 3, texts
        for run in runs:
            assert run.attempts == 1, f"tick {run.run_key} ran more than once"
            items = list(db.scalars(select(BatchItem).where(BatchItem.run_id == run.id)))
            assert len(items) == 3
        keys = [r.run_key for r in runs]
        # ticks are distinct scheduled times TICK_S apart
        secs = sorted(int(re.search(r":(\d\d)\+00:00$", k).group(1)) for k in keys)
        assert all(x % TICK_S == 0 for x in secs)
        assert list(db.scalars(select(IssuedCard))) == []  # purged after a tick
    engine.dispose()
    ran = [set(re.findall(r"tick (tick:\S+): run \d+ completed", t)) for t in texts]
    skipped = [set(re.findall(r"tick (tick:\S+) (?:already ran|not run here)", t)) for t in texts]
    assert not (ran[0] & ran[1]), "a tick ran in both processes"
    assert (ran[0] | ran[1]) >= set(keys) - {None}
    # the second process saw ticks the first one ran, and stood down
    assert (skipped[0] & ran[1]) or (skipped[1] & ran[0]), texts
    assert any("deleted 1 card records" in t for t in texts), texts
