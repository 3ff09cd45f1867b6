"""Celery scale-out: a real worker process against the Redis on this machine scores the
chunks that the coordinating process sends; results land in the same database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from sqlalchemy import func, select

from cds.batch.runner import BatchRunner, RunOptions
from cds.db import make_engine, session_factory, session_scope
from cds.db.models import BatchItem, Prediction
from tests.batch.conftest import AS_OF, N_PATIENTS, batch_settings, write_config

REPO = Path(__file__).resolve().parents[2]
BROKER = "redis://127.0.0.1:6379/14"


@pytest.mark.redis
def test_celery_worker_scores_every_chunk(
    tmp_path: Path, cohort_dir: Path, checkpoint: Path
) -> None:
    client = redis.Redis.from_url(BROKER)
    client.flushdb()
    s = batch_settings(
        tmp_path,
        cohort_dir,
        checkpoint,
        batch__executor="celery",
        batch__broker_url=BROKER,
        batch__chunk_size=5,
        batch__cohort="all",
        batch__fhir_rate_limit_per_s=50.0,
    )
    cfg = write_config(tmp_path / "celery.toml", s)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPRTM_")}
    log = (tmp_path / "worker.log").open("wb")
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cds.cli",
            "--config",
            str(cfg),
            "worker",
            "--pool",
            "solo",
            "--hostname",
            "mprtm-test@%h",
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        with BatchRunner(s) as runner:
            summary = runner.run(RunOptions(as_of=AS_OF, progress=False))
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(60)
        log.close()
    out = (tmp_path / "worker.log").read_text(errors="replace")
    assert "mprtm.score_chunk" in out, out[-2000:]
    assert summary.n_done == N_PATIENTS and summary.n_failed == 0, out[-2000:]
    assert {"pull", "map", "predict", "write", "store"} <= set(summary.timings)
    engine = make_engine(s.database.url)
    with session_scope(session_factory(engine)) as db:
        assert db.scalar(select(func.count()).select_from(Prediction)) == N_PATIENTS
        items = list(db.scalars(select(BatchItem)))
        assert all(i.status == "done" and i.attempts == 1 for i in items)
    engine.dispose()
    lines = Path(s.fhir.writeback_path).read_text().splitlines()
    assert len(lines) == N_PATIENTS
    assert len({json.loads(x)["identifier"][0]["value"] for x in lines}) == N_PATIENTS
    client.flushdb()


@pytest.mark.redis
def test_shared_rate_limiter_holds_callers_to_the_rate() -> None:
    """Over the limit, a caller waits for the next one-second window (shared in Redis)."""
    import time

    from cds.batch.celery_app import SharedRateLimiter

    key = f"mprtm:test-rate:{os.getpid()}"
    a = SharedRateLimiter(BROKER, 3, key=key)
    b = SharedRateLimiter(BROKER, 3, key=key)  # a second "worker" sharing the budget
    # start at the beginning of a window so the first three fit in it
    time.sleep(1 - (time.time() % 1) + 0.01)
    windows = []
    for limiter in (a, b, a, b, a, b):
        limiter.acquire()
        windows.append(int(time.time()))
    assert windows[0] == windows[2]
    assert windows[3] > windows[2], "the 4th acquisition must wait for the next window"
    with pytest.raises(ValueError):
        SharedRateLimiter(BROKER, 0)
