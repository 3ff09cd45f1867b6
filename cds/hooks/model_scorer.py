"""The production on-demand scorer: FHIR mapping (``cds.pipeline``) + ``model.predictor``.

Until both the mapping and the predictor are installed in this application, no scorer is
configured and the service answers from nightly results only (stale ones labelled).
"""

from __future__ import annotations

import importlib.util
import logging

from cds.config import Settings
from cds.hooks.scoring import OnDemandScorer

log = logging.getLogger("mprtm.hooks.scorer")


def default_scorer(settings: Settings) -> OnDemandScorer | None:
    """The scorer this installation can offer, or None (nightly results only)."""
    missing = [m for m in ("cds.pipeline", "model.predictor") if not _importable(m)]
    if missing:
        log.warning(
            "on-demand scoring unavailable (%s not installed): CDS Hooks answers from "
            "nightly results only",
            ", ".join(missing),
        )
        return None
    return None


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False
