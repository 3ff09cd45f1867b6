"""The "no recent LGE" suggestion reads prefetched ImagingStudy series with the PACS series
classifier (description and modality), so names it accepts count as LGE here too."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.hooks.conftest import TokenFactory
from tests.hooks.helpers import (
    PV,
    RuleScorer,
    add_prediction,
    auth,
    bundle,
    full_prefetch,
    hook_body,
    service_url,
)

DCM = "http://dicom.nema.org/resources/ontology/DCM"


def _study(patient: str, description: str, modality: str, days_ago: int) -> dict[str, Any]:
    started = dt.datetime.now(dt.UTC) - dt.timedelta(days=days_ago)
    return {
        "resourceType": "ImagingStudy",
        "id": f"is-{patient}",
        "status": "available",
        "subject": {"reference": f"Patient/{patient}"},
        "started": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "series": [
            {"uid": "1.2.3.4", "modality": {"system": DCM, "code": modality}},
            {
                "uid": "1.2.3.5",
                "modality": {"system": DCM, "code": modality},
                "description": description,
            },
        ],
    }


@pytest.mark.parametrize(
    ("description", "modality", "days_ago", "mri_suggested"),
    [
        # accepted by the classifier's vocabulary, not by the default site patterns
        ("Viability SA", "MR", 30, False),
        ("DE_SA_stack", "MR", 30, False),
        # the same names on another modality, an old study, or a non-LGE series
        ("Viability SA", "CT", 30, True),
        ("Viability SA", "MR", 500, True),
        ("T1_mprage_ns_sag_p2", "MR", 30, True),
        ("LGE PSIR cine", "MR", 30, True),  # "cine" is a default exclude pattern
    ],
)
def test_prefetched_imaging_study_counts_as_lge_by_the_classifier(
    client: FlaskClient,
    token: TokenFactory,
    sessions: Any,
    scorer: RuleScorer,
    description: str,
    modality: str,
    days_ago: int,
    mri_suggested: bool,
) -> None:
    pid = f"p-lge-{abs(hash((description, modality, days_ago))) % 10**8}"
    add_prediction(sessions, pid, age_hours=50, p_death=0.2)  # stale: scored on demand
    prefetch = full_prefetch(pid)
    prefetch["imagingStudies"] = bundle(_study(pid, description, modality, days_ago))
    resp = client.post(
        f"/cds-services/{PV}",
        json=hook_body(pid, prefetch=prefetch),
        headers=auth(token(service_url(PV))),
    )
    assert resp.status_code == 200
    [card] = resp.get_json()["cards"]
    assert "computed now" in card["summary"]
    labels = [s["label"] for s in card.get("suggestions", [])]
    assert any("cardiac MRI" in x for x in labels) is mri_suggested, labels
