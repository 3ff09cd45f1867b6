"""Several LGE series per pass of the image network (``Predictor.encode_images``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from model.errors import ModelInputError
from model.predictor import Predictor
from model.train import train_mprtm
from tests.model.helpers import tiny_cohort, tiny_config, write_tiny_bert


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list]:  # type: ignore[type-arg]
    root = tmp_path_factory.mktemp("batching")
    bert = write_tiny_bert(root / "bert")
    cfg = tiny_config(bert, crop=1.0, seg_epochs=1, fusion_epochs=2)
    examples = tiny_cohort(24, seed=4)
    res = train_mprtm(examples, cfg, seed=2, out=root / "m.pt", progress=False, baselines=False)
    assert res.path is not None
    return res.path, [e.input for e in examples if e.input.image is not None]


def test_batched_series_give_each_series_own_features(trained) -> None:  # type: ignore[no-untyped-def]
    path, inputs = trained
    one = Predictor.from_checkpoint(path, threads=1)
    assert one.image_batch_slices == 0  # the CPU default: one series per pass
    used = one.config.max_slices
    # room for two series per pass, so the 7 series go in groups of 2, 2, 2, 1
    many = Predictor.from_checkpoint(path, threads=1, image_batch_slices=2 * used + 1)
    vols = [i.image for i in inputs[:7]]
    together = many.encode_images(vols)
    assert len(together) == 7
    for vol, f in zip(vols, together, strict=True):
        alone = one.encode_image(vol)
        np.testing.assert_allclose(f.embedding, alone.embedding, atol=1e-5)
        assert f.fibrosis_burden == pytest.approx(alone.fibrosis_burden, abs=1e-6)
        assert f.segmentation is not None and alone.segmentation is not None
        assert f.segmentation.shape == alone.segmentation.shape
        assert f.segmentation.shape == (min(vol.shape[0], used), *vol.shape[1:])
        assert (f.segmentation == alone.segmentation).mean() > 0.999
    # the series differ, so a mix-up between them would show
    assert not np.allclose(together[0].embedding, together[1].embedding)


def test_predict_batches_the_series_of_a_batch(trained) -> None:  # type: ignore[no-untyped-def]
    path, inputs = trained
    one = Predictor.from_checkpoint(path, threads=1, batch_size=8)
    many = Predictor.from_checkpoint(path, threads=1, batch_size=8, image_batch_slices=1000)
    cached = one.encode_image(inputs[0].image)
    cache = {inputs[0].image_fingerprint: cached} if inputs[0].image_fingerprint else {}
    a, b = one.predict(inputs[:8], cache), many.predict(inputs[:8], cache)
    for x, y in zip(a, b, strict=True):
        assert x.patient_id == y.patient_id
        for o, p in x.probabilities.items():
            assert y.probabilities[o] == pytest.approx(p, abs=1e-5)
        assert y.fibrosis_burden == pytest.approx(x.fibrosis_burden, abs=1e-6)


def test_a_bad_series_among_several_is_named(trained) -> None:  # type: ignore[no-untyped-def]
    path, inputs = trained
    pred = Predictor.from_checkpoint(path, threads=1, image_batch_slices=1000)
    bad = np.array(inputs[1].image, copy=True)
    bad[0, 0, 0] = np.nan
    with pytest.raises(ModelInputError, match=r"^patient p-bad: "):
        pred.predict([inputs[0], dataclasses.replace(inputs[1], patient_id="p-bad", image=bad)])
    with pytest.raises(ModelInputError, match=r"^series 1: "):
        pred.encode_images([inputs[0].image, bad])
    with pytest.raises(ModelInputError) as one:
        pred.encode_image(bad)
    assert not str(one.value).startswith("series")
    with pytest.raises(ValueError, match="image_batch_slices"):
        Predictor.from_checkpoint(path, image_batch_slices=-1)
