"""The production on-demand scorer: the FHIR mapping (:func:`cds.pipeline.assemble`) and
the scoring core (:class:`cds.scoring.ScoringCore`), as the nightly batch uses them.

The predictor is loaded once per process from ``model.checkpoint``, lazily (the first call
or :meth:`ModelScorer.warm_up` at server start) and under a lock, so concurrent first calls
load it once.  Forward passes are serialised by a second lock: on CPU, parallel passes only
compete for the same cores.  Image features are never computed here: the cached embedding
of the patient's LGE series (written by the nightly batch) is handed to the predictor
through its image cache, keyed by a fingerprint; the PACS is never touched.  Text
embeddings are remembered (LRU, :data:`TEXT_CACHE_SIZE`) because the text encoder is by
far the slowest part of an on-demand score on CPU.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from cds.config import Settings
from cds.errors import ConfigError
from cds.hooks.errors import ScoringError
from cds.hooks.scoring import ModelInfo, OnDemandScore, OnDemandScorer
from cds.scoring import CachedImage, ScoringCore
from connectors.fhir.base import PatientRecord

log = logging.getLogger("mprtm.hooks.scorer")

#: Seconds before a failed model load is tried again.
_RETRY_LOAD_AFTER_S = 60.0
#: Text embeddings remembered per process (medication list + notes change rarely between
#: two calls for the same patient; the text encoder dominates on-demand time on CPU).
#: An entry is the text's segment embeddings, text_max_segments x 384 float32 (74 KB with
#: the defaults), so 512 entries hold about 38 MB.
TEXT_CACHE_SIZE = 512


def _caching_predictor(base: Any) -> Any:
    """``model.predictor.Predictor`` with an LRU of text embeddings keyed by the text."""

    class CachingPredictor(base):
        """A Predictor whose :meth:`encode_texts` remembers the last embeddings."""

        _text_cache: OrderedDict[str, np.ndarray] | None = None

        def encode_texts(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
            if self._text_cache is None:
                self._text_cache = OrderedDict()
            cache = self._text_cache
            keys = [hashlib.sha256(t.encode()).hexdigest() for t in texts]
            missing = [i for i, k in enumerate(keys) if k not in cache]
            if missing:
                fresh = super().encode_texts([texts[i] for i in missing], progress)
                for row, i in enumerate(missing):
                    cache[keys[i]] = np.array(fresh[row], dtype=np.float32)
            rows = []
            for k in keys:
                cache.move_to_end(k)
                rows.append(cache[k])
            while len(cache) > TEXT_CACHE_SIZE:
                cache.popitem(last=False)
            return np.stack(rows)

    return CachingPredictor


class ModelScorer:
    """Scores a :class:`PatientRecord` with the M-PRTM checkpoint of the settings.

    Args:
        settings: ``model.*`` (checkpoint, device, threads, text encoder), ``risk.*``
            (tier thresholds overriding the checkpoint's) and the mapping's ``fhir.*`` keys.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._load_lock = threading.Lock()
        self._predict_lock = threading.Lock()
        self._core: ScoringCore | None = None
        self._info: ModelInfo | None = None
        self._failed_at = 0.0
        self._failure = ""

    def warm_up(self) -> None:
        """Load the model now (called by ``mprtm serve`` in the background)."""
        try:
            self.info()
        except ScoringError as exc:
            log.warning("on-demand scorer not ready: %s", exc)

    def _active_sha(self) -> str | None:
        from sqlalchemy.exc import SQLAlchemyError

        from cds.registry_serving import active_sha256

        try:
            return active_sha256(self._settings)
        except SQLAlchemyError as exc:
            raise ScoringError(f"model registry unreadable: {type(exc).__name__}") from None

    def _load(self) -> ScoringCore:
        core = self._core
        if core is not None and self._active_sha() in (None, core.checkpoint_sha256):
            return core
        with self._load_lock:
            if self._core is not None and self._core is not core:
                return self._core  # another thread loaded the new active version
            self._core = None
            if self._failure and time.monotonic() - self._failed_at < _RETRY_LOAD_AFTER_S:
                raise ScoringError(self._failure)
            from sqlalchemy.exc import SQLAlchemyError

            from cds.registry_serving import active_settings
            from model.errors import ModelError
            from model.predictor import Predictor

            try:
                settings = active_settings(self._settings)
            except (SQLAlchemyError, ModelError) as exc:
                raise ScoringError(f"model registry: {type(exc).__name__}: {exc}") from None
            m = settings.model
            try:
                core = ScoringCore.load(
                    settings,
                    predictor_class=_caching_predictor(Predictor),
                    threads=self._settings.cds_hooks.torch_threads or m.cpu_threads,
                    batch_size=1,
                )
            except (ConfigError, ModelError, OSError, ValueError) as exc:
                self._failed_at = time.monotonic()
                self._failure = f"model checkpoint {m.checkpoint} cannot be used: {exc}"
                raise ScoringError(self._failure) from None
            self._info = ModelInfo(
                name=core.model_name,
                version=core.model_version,
                checkpoint_sha256=core.checkpoint_sha256,
                synthetic_training_data=core.synthetic_training_data,
                image_cache_key=core.model_version,
            )
            self._core = core
            log.info("on-demand scorer loaded %s", self._info.label)
            return core

    def info(self) -> ModelInfo:
        self._load()
        assert self._info is not None
        return self._info

    def score(
        self, record: PatientRecord, image: CachedImage | None, as_of: dt.datetime
    ) -> OnDemandScore:
        from cds.pipeline import assemble

        core = self._load()
        mapped = assemble(
            record, None, as_of=as_of.date(), image_size=core.image_size, settings=self._settings
        )
        cache = core.use_cached_image(mapped, image) if image is not None else None
        with self._predict_lock:
            got = core.predict([mapped], cache)[mapped.patient_id]
        if isinstance(got, BaseException):
            raise ScoringError(f"patient {record.patient_id}: {got}") from None
        return core.scored(mapped, got, image)


def default_scorer(settings: Settings) -> OnDemandScorer:
    """The scorer of this installation (the model is loaded on first use)."""
    return ModelScorer(settings)
