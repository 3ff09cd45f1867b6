"""The real on-demand path: prefetch -> cds.pipeline mapping -> a trained M-PRTM checkpoint.

A tiny model is trained here (seconds) on the model tests' synthetic cohort; the service
loads it through ``model.checkpoint`` like a deployment does.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask import Flask
from sqlalchemy import select

from cds.app import create_app
from cds.config import Settings
from cds.db.models import ImageFeatureCache, Prediction
from cds.hooks.model_scorer import ModelScorer
from cds.scoring import StoredInputs
from model.predictor import Predictor
from model.train import train_mprtm
from tests.hooks.conformance import check_response
from tests.hooks.conftest import TokenFactory
from tests.hooks.helpers import PV, auth, full_prefetch, hook_body, service_url
from tests.model.helpers import tiny_cohort, tiny_config, write_tiny_bert

pytestmark = pytest.mark.slow  # trains a tiny model (about 10-30 s on a busy machine)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hooks-model")
    bert = write_tiny_bert(root / "bert")
    cfg = tiny_config(bert)
    res = train_mprtm(
        tiny_cohort(24, seed=5),
        cfg,
        seed=7,
        out=root / "m.pt",
        progress=False,
        synthetic=True,
        baselines=False,
    )
    return Path(res.path)


@pytest.fixture
def model_app(make_settings: Callable[..., Settings], checkpoint: Path) -> Iterator[Flask]:
    settings = make_settings(time_budget_ms=5000).replace(model__checkpoint=str(checkpoint))
    app = create_app(settings)
    assert isinstance(app.extensions["mprtm.hooks"].engine.scorer, ModelScorer)
    yield app
    app.extensions["mprtm.hooks"].engine.close()
    app.extensions["mprtm.engine"].dispose()


def _prefetch(pid: str) -> dict[str, Any]:
    prefetch = full_prefetch(pid)
    prefetch["patient"]["birthDate"] = "1950-03-01"
    return prefetch


def _post(app: Flask, token: TokenFactory, pid: str) -> Any:
    resp = app.test_client().post(
        f"/cds-services/{PV}",
        json=hook_body(pid, prefetch=_prefetch(pid)),
        headers=auth(token(service_url(PV))),
    )
    assert resp.status_code == 200
    return resp.get_json()


def test_on_demand_with_the_trained_model(model_app: Flask, token: TokenFactory) -> None:
    body = _post(model_app, token, "p-real")
    check_response(body)
    [card] = body["cards"]
    assert "computed now" in card["summary"], card["summary"]
    assert "mprtm-" in card["detail"] and "trained on synthetic patients" in card["detail"]
    model_app.extensions["mprtm.hooks"].engine.writer.flush()  # written behind
    with model_app.extensions["mprtm.sessions"]() as s:
        pred = s.scalars(select(Prediction).where(Prediction.source == "on_demand")).one()
    assert set(pred.probabilities) >= {"death", "cv_death", "macce"}
    assert all(0.0 < p < 1.0 for p in pred.probabilities.values())
    stored = StoredInputs.from_json(pred.inputs)
    assert pred.inputs["version"] == 2  # the shape the batch writes too
    lvef, bnp = stored.get("lvef"), stored.get("nt_probnp")
    assert lvef is not None and lvef.value == 30 and lvef.unit == "%" and lvef.group == "echo"
    assert bnp is not None and bnp.source == "Observation/bnp-1"
    assert "Observation/lvef-1" in pred.basis
    assert pred.modality_weights["image"] == 0.0


def test_cached_image_features_are_used(
    model_app: Flask, token: TokenFactory, checkpoint: Path
) -> None:
    predictor = Predictor.from_checkpoint(checkpoint)
    volume = tiny_cohort(1, seed=9)[0].input.image
    feats = predictor.encode_image(volume)
    with model_app.extensions["mprtm.sessions"]() as s, s.begin():
        s.add(
            ImageFeatureCache(
                series_fingerprint=uuid.uuid4().hex,
                model_version=predictor.version,
                patient_fhir_id="p-img",
                study_instance_uid="1.2.3",
                series_instance_uid="1.2.3.9",
                study_date=(dt.date.today() - dt.timedelta(days=20)).strftime("%Y%m%d"),
                n_slices=int(volume.shape[0]),
                embedding=np.asarray(feats.embedding, dtype=np.float32).tobytes(),
                fibrosis_burden=0.31,
            )
        )
    [card] = _post(model_app, token, "p-img")["cards"]
    assert "31.0% of the myocardium" in card["detail"]
    model_app.extensions["mprtm.hooks"].engine.writer.flush()  # written behind
    with model_app.extensions["mprtm.sessions"]() as s:
        pred = s.scalars(select(Prediction).where(Prediction.source == "on_demand")).one()
    assert pred.modality_weights["image"] > 0.0
    assert pred.lge_series_uid == "1.2.3.9"
    # each outcome's stored parts add up to its stored probability (4-decimal rounding)
    for outcome, p in pred.probabilities.items():
        parts = pred.contributions[outcome]
        assert set(parts) == {"reference", "numeric", "text", "image"}
        assert sum(parts.values()) == pytest.approx(p, abs=5e-4)
    assert "What moved the 1-year death risk** (" in card["detail"]
    assert "typical patients " in card["detail"]
    assert not any("cardiac MRI" in sg["label"] for sg in card.get("suggestions", []))


def test_a_cached_embedding_of_the_wrong_size_gives_an_info_card(
    model_app: Flask, token: TokenFactory, checkpoint: Path
) -> None:
    version = Predictor.from_checkpoint(checkpoint).version
    with model_app.extensions["mprtm.sessions"]() as s, s.begin():
        s.add(
            ImageFeatureCache(
                series_fingerprint=uuid.uuid4().hex,
                model_version=version,
                patient_fhir_id="p-bad",
                study_instance_uid="1.2.3",
                series_instance_uid="1.2.3.10",
                study_date="20260101",
                n_slices=3,
                embedding=np.zeros(5, dtype=np.float32).tobytes(),
                fibrosis_burden=0.1,
            )
        )
    [card] = _post(model_app, token, "p-bad")["cards"]
    assert card["indicator"] == "info" and "p-bad" in card["detail"]


def test_missing_checkpoint_gives_an_info_card(
    make_settings: Callable[..., Settings], token: TokenFactory, tmp_path: Path
) -> None:
    settings = make_settings().replace(model__checkpoint=str(tmp_path / "missing.pt"))
    app = create_app(settings)
    try:
        [card] = _post(app, token, "p-nomodel")["cards"]
        assert card["indicator"] == "info" and "not found" in card["detail"]
    finally:
        app.extensions["mprtm.hooks"].engine.close()
        app.extensions["mprtm.engine"].dispose()


def test_text_embeddings_are_remembered(model_app: Flask, token: TokenFactory) -> None:
    import base64

    from tests.hooks.helpers import bundle

    note = base64.b64encode(b"Worsening dyspnea, admitted; furosemide 40 mg daily.").decode()
    prefetch = _prefetch("p-text")
    prefetch["documents"] = bundle(
        {
            "resourceType": "DocumentReference",
            "id": "note-1",
            "status": "current",
            "subject": {"reference": "Patient/p-text"},
            "date": f"{dt.date.today().isoformat()}T08:00:00Z",
            "content": [{"attachment": {"contentType": "text/plain", "data": note}}],
        }
    )
    client = model_app.test_client()
    for _ in range(2):
        resp = client.post(
            f"/cds-services/{PV}",
            json=hook_body("p-text", prefetch=prefetch),
            headers=auth(token(service_url(PV))),
        )
        assert "computed now" in resp.get_json()["cards"][0]["summary"]
    predictor = model_app.extensions["mprtm.hooks"].engine.scorer._core.predictor
    assert len(predictor._text_cache) == 1  # the second call reused the embedding
    assert resp.get_json()["cards"][0]["detail"].count("notes: ") == 1
