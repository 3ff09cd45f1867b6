"""The persistent segment-embedding cache (``segment_embeddings``) on a real SQLite file
and on the real PostgreSQL: segments encoded once across processes, keys that follow the
encoder's weights, a failing database that never fails scoring, and ``mprtm purge``."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select, text, update

from cds.config import load_settings
from cds.db import make_engine, session_factory, session_scope
from cds.db.migrate import upgrade
from cds.db.models import SegmentEmbedding
from cds.retention import purge
from cds.text_cache import DbSegmentStore
from model.text_branch import TextEncoder
from tests.model.helpers import write_tiny_bert

TEXTS = [
    "Furosemide 40 mg daily. Bisoprolol 5 mg. Lives alone.",
    "Bisoprolol 5 mg. Dyspnoea on exertion, NYHA III.",
    "Lives alone.",
]


class CountingEncoder(TextEncoder):
    """The real encoder, counting the segments it runs through the network."""

    n_encoded = 0

    def encode_segments(self, segments: list[str]) -> Any:
        self.n_encoded += len(segments)
        return super().encode_segments(segments)


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("seg-cache") / "bert")


def _db(tmp_path: Path, url: str = "") -> str:
    url = url or f"sqlite:///{tmp_path / 'app.db'}"
    upgrade(url)
    return url


def _count(url: str) -> int:
    engine = make_engine(url)
    with engine.connect() as c:
        n = c.scalar(select(func.count()).select_from(SegmentEmbedding))
    engine.dispose()
    return int(n or 0)


@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_segments_are_encoded_once_across_processes(
    backend: str, bert: Path, tmp_path: Path, request: Any
) -> None:
    url = _db(tmp_path, request.getfixturevalue("pg_url") if backend == "postgres" else "")
    enc = CountingEncoder(str(bert), window=16, max_segments=4)
    plain = enc.embed(TEXTS)
    n_unique = enc.n_encoded
    enc.n_encoded = 0

    engines = [make_engine(url), make_engine(url)]
    first = enc.embed(TEXTS, store=DbSegmentStore(engines[0]))
    assert enc.n_encoded == n_unique and _count(url) == n_unique
    np.testing.assert_allclose(first, plain, atol=1e-5)

    # another process: a new engine, a new encoder object over the same weights
    other = CountingEncoder(str(bert), window=16, max_segments=4)
    again = other.embed(
        TEXTS + ["Lives alone. New sentence here."], store=DbSegmentStore(engines[1])
    )
    assert other.n_encoded == 1  # only the sentence never seen
    np.testing.assert_allclose(again[: len(TEXTS)], plain, atol=1e-5)
    assert _count(url) == n_unique + 1
    for engine in engines:
        engine.dispose()


def test_keys_follow_the_weights_window_and_runtime(bert: Path) -> None:
    enc = TextEncoder(str(bert), window=16, max_segments=4)
    key = enc.segment_key("Lives alone.")
    assert enc.segment_key("Lives alone.", runtime="onnx-int8") != key
    assert TextEncoder(str(bert), window=32, max_segments=4).segment_key("Lives alone.") != key
    enc.state_sha256 = "0" * 64  # a checkpoint's fine-tuned layers loaded over the folder
    assert enc.segment_key("Lives alone.") != key


def test_a_failing_database_only_costs_encoding(bert: Path, tmp_path: Path) -> None:
    url = _db(tmp_path)
    engine = make_engine(url)
    with engine.begin() as c:
        c.execute(text("DROP TABLE segment_embeddings"))
    enc = CountingEncoder(str(bert), window=16, max_segments=4)
    got = enc.embed(TEXTS, store=DbSegmentStore(engine))
    np.testing.assert_allclose(got, enc.embed(TEXTS), atol=1e-5)
    engine.dispose()


def test_purge_deletes_old_segments(bert: Path, tmp_path: Path) -> None:
    url = _db(tmp_path)
    engine = make_engine(url)
    TextEncoder(str(bert), window=16, max_segments=4).embed(TEXTS, store=DbSegmentStore(engine))
    n = _count(url)
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
    sessions = session_factory(engine)
    with session_scope(sessions) as s:
        key = s.scalars(select(SegmentEmbedding.key)).first()
        s.execute(
            update(SegmentEmbedding).where(SegmentEmbedding.key == key).values(created_at=old)
        )
    settings = load_settings(environ={}).replace(
        database__url=url, retention__segment_cache_days=30, pacs__cache_dir=str(tmp_path / "c")
    )
    report = purge(settings, sessions)
    assert report.deleted["cached text segments"] == 1
    assert _count(url) == n - 1
    engine.dispose()


def test_open_is_none_without_a_migrated_database(tmp_path: Path) -> None:
    missing = tmp_path / "none.db"
    assert DbSegmentStore.open(f"sqlite:///{missing}") is None
    assert not missing.exists()  # not created as a side effect
    empty = tmp_path / "empty.db"
    make_engine(f"sqlite:///{empty}").connect().close()
    assert DbSegmentStore.open(f"sqlite:///{empty}") is None
    store = DbSegmentStore.open(_db(tmp_path))
    assert store is not None
    store.engine.dispose()
