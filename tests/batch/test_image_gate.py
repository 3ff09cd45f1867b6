"""The image quality gate in a nightly batch: a series the network cannot read reliably is
scored as a missing image, raises no fibrosis alert, is counted in the run summary and is
explained on the card, while the same run with the gate opened uses every series."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import select

from cds.batch.runner import BatchRunner, RunOptions
from cds.db import make_engine, session_factory, session_scope
from cds.db.models import Alert, ImageFeatureCache, Prediction
from cds.hooks.cards import CardContext, detail_markdown
from cds.hooks.view import view_from_prediction
from tests.batch.conftest import AS_OF, batch_settings


def _run(tmp_path: Path, cohort: Path, checkpoint: Path, **extra: object):  # type: ignore[no-untyped-def]
    tmp_path.mkdir(parents=True, exist_ok=True)
    # every burden above 0 would raise a fibrosis alert
    s = batch_settings(tmp_path, cohort, checkpoint, alerts__fibrosis_burden=-1.0, **extra)
    summary = BatchRunner(s).run(RunOptions(as_of=AS_OF, progress=False))
    engine = make_engine(s.database.url)
    with session_scope(session_factory(engine)) as db:
        preds = list(db.scalars(select(Prediction)))
        rows = [(p.image_quality, p.fibrosis_burden, dict(p.modality_weights)) for p in preds]
        fibrosis = [a.reason for a in db.scalars(select(Alert)) if a.reason == "fibrosis"]
        cache = [(c.usable, c.quality_reason, c.overlay_png) for c in db.scalars(
            select(ImageFeatureCache))]  # fmt: skip
        view = view_from_prediction(preds[0], None, None)
        images = [p for p in preds if p.image_quality is not None]
        card = None
        if images:
            v = view_from_prediction(images[0], None, None)
            ctx = CardContext(
                service_id="mprtm-hf-risk-patient-view",
                patient_id="p",
                encounter_id=None,
                user_id=None,
                public_url="http://127.0.0.1:8080",
                headline_outcome="death",
                now=dt.datetime.now(dt.UTC),
            )
            card = detail_markdown(v, ctx)
    engine.dispose()
    assert view is not None
    return summary, rows, fibrosis, cache, card


def test_unreadable_series_are_missing_images_without_fibrosis_alerts(
    tmp_path: Path, cohort_dir: Path, checkpoint: Path
) -> None:
    opened, rows_open, fib_open, cache_open, _ = _run(tmp_path / "open", cohort_dir, checkpoint)
    with_image = [r for r in rows_open if r[0] is not None]
    assert with_image and opened.n_image_unusable == 0
    assert len(fib_open) == len(with_image)  # the open gate lets every burden alert
    assert all(r[2]["image"] > 0 and r[1] is not None for r in with_image)
    assert all(usable and png for usable, _, png in cache_open)

    gated, rows, fib, cache, card = _run(tmp_path / "gated", cohort_dir, checkpoint, gate="default")
    refused = [r for r in rows if r[0] is not None and r[0]["usable"] is False]
    assert len(refused) == len(with_image) == gated.n_image_unusable
    assert gated.as_dict()["n_image_unusable"] == len(refused)
    assert fib == []
    for quality, burden, weights in refused:
        assert quality["reason"] and quality["series_instance_uid"]
        assert burden is None and weights["image"] == 0.0
    assert all(not usable and why and png is None for usable, why, png in cache)
    assert card is not None and "MRI could not be analysed: " in card
