"""CDS Hooks 2.0 cards: the risk card, its suggestions, links and override reasons, info cards.

Field rules taken from the specification's "Card Attributes": ``summary`` is one sentence
under 140 characters; ``indicator`` is info / warning / critical; ``detail`` is GitHub
Flavored Markdown; ``source.label`` is required; when ``suggestions`` are present
``selectionBehavior`` must be too; every override reason carries a ``display``; a link's
``appContext`` is only valued for ``smart`` links.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from cds.canonical import Canonical
from cds.explain import HEADLINE_OUTCOME, contribution_sentence
from cds.hooks.view import RiskView
from cds.image_gate import unusable_text
from cds.labels import group_label, modality_label, outcome_label, when_text
from model.types import OUTCOMES

SUMMARY_MAX = 139  # "<140-character"
INDICATOR_BY_TIER = {"low": "info", "moderate": "warning", "high": "critical"}
#: Codes of the service's own code systems (URLs under ``fhir.canonical_base``,
#: :mod:`cds.canonical`; served at ``/fhir/CodeSystem/<name>``).
SUGGESTED_ORDERS: dict[str, str] = {
    "hf-clinic-follow-up": "Heart failure clinic follow-up",
    "cardiac-mri-lge": "Cardiac MRI with late gadolinium enhancement",
}
OVERRIDE_REASONS: tuple[tuple[str, str], ...] = (
    ("already-arranged", "Follow-up already arranged"),
    ("clinical-judgement", "Risk estimate not consistent with clinical picture"),
    ("patient-declined", "Patient declined"),
    ("comfort-care", "Patient on palliative / comfort care"),
    ("data-outdated", "Input data outdated or incorrect"),
)
LGE_MAX_AGE_DAYS = 365
FOLLOW_UP_DAYS = 7


@dataclass(frozen=True)
class CardContext:
    """Where and for whom the cards are made.

    Args:
        service_id: the CDS service called.
        patient_id: ``context.patientId``.
        encounter_id: ``context.encounterId`` or None.
        user_id: ``context.userId`` or None.
        public_url: ``server.public_url`` (inbox and model card live there).
        headline_outcome: outcome named in the summary (``alerts.outcome``).
        now: the time of the call (UTC).
        last_lge_date: the newest LGE study known (cache or prefetched ImagingStudy).
        systems: URLs of the service's own code systems (``fhir.canonical_base``).
    """

    service_id: str
    patient_id: str
    encounter_id: str | None
    user_id: str | None
    public_url: str
    headline_outcome: str
    now: dt.datetime
    last_lge_date: dt.date | None = None
    systems: Canonical = field(default_factory=Canonical)

    @property
    def model_card_url(self) -> str:
        return f"{self.public_url.rstrip('/')}/model-card"

    @property
    def launch_url(self) -> str:
        """The inbox's SMART launch endpoint: the EHR adds ``iss`` and ``launch``; after
        the launch the inbox opens the patient of the launch context.  ``patient`` is used
        only by the local demo log-in (``server.demo_login``)."""
        return f"{self.public_url.rstrip('/')}/inbox/launch?patient={self.patient_id}"


def _source(ctx: CardContext) -> dict[str, Any]:
    return {
        "label": "M-PRTM heart-failure risk model",
        "url": ctx.model_card_url,
        "topic": {
            "system": ctx.systems.card_topic,
            "code": "hf-1y-risk",
            "display": "Heart-failure risk",
        },
    }


def _links(ctx: CardContext, card_uuid: str, prediction_id: int | None) -> list[dict[str, Any]]:
    app_context = {
        "patientId": ctx.patient_id,
        "cardUuid": card_uuid,
        "serviceId": ctx.service_id,
        "predictionId": prediction_id,
    }
    return [
        {
            "label": "Open in the M-PRTM follow-up inbox",
            "url": ctx.launch_url,
            "type": "smart",
            "appContext": json.dumps(app_context, separators=(",", ":")),
        },
        {"label": "M-PRTM model card", "url": ctx.model_card_url, "type": "absolute"},
    ]


def override_reasons(systems: Canonical) -> list[dict[str, str]]:
    return [
        {"system": systems.override_reason, "code": c, "display": d} for c, d in OVERRIDE_REASONS
    ]


def _pct(p: float) -> str:
    return f"{100 * p:.0f}%"


def _clip(text: str) -> str:
    return text if len(text) <= SUMMARY_MAX else text[: SUMMARY_MAX - 1].rstrip() + "…"


def headline(view: RiskView, preferred: str) -> str | None:
    """The outcome named in the summary: ``preferred`` when scored, else the first one."""
    if preferred in view.probabilities:
        return preferred
    return next((o for o in OUTCOMES if o in view.probabilities), None)


def summary_of(view: RiskView, outcome: str) -> str:
    tier = view.tiers.get(outcome, "unknown")
    p = view.probabilities[outcome]
    text = f"HF 1-year risk {tier.upper()}: {_pct(p)} {outcome_label(outcome, lower=True)}"
    prev = (view.previous_probabilities or {}).get(outcome)
    if prev is not None:
        delta = round(100 * (p - float(prev)))
        text += f", {'+' if delta >= 0 else '−'}{abs(delta)} pts since last run"
    if view.stale:
        text = f"Not refreshed, last known ({view.computed_at:%Y-%m-%d}): " + text
    elif view.origin == "nightly" and view.checked_at is not None:
        text += f" (nightly {view.computed_at:%Y-%m-%d}, checked {view.checked_at:%Y-%m-%d})"
    elif view.origin == "nightly":
        text += f" (nightly {view.computed_at:%Y-%m-%d})"
    else:
        text += " (computed now)"
    return _clip(text)


def risk_card(view: RiskView, ctx: CardContext) -> dict[str, Any] | None:
    """The risk card, or None when the view holds no probability at all."""
    outcome = headline(view, ctx.headline_outcome)
    if outcome is None:
        return None
    tier = view.tiers.get(outcome, "")
    card_uuid = str(uuid.uuid4())
    card: dict[str, Any] = {
        "uuid": card_uuid,
        "summary": summary_of(view, outcome),
        "indicator": INDICATOR_BY_TIER.get(tier, "info"),
        "detail": detail_markdown(view, ctx),
        "source": _source(ctx),
        "links": _links(ctx, card_uuid, view.prediction_id),
        "overrideReasons": override_reasons(ctx.systems),
    }
    suggestions = _suggestions(view, ctx, outcome)
    if suggestions:
        card["suggestions"] = suggestions
        card["selectionBehavior"] = "any"
    return card


def info_card(summary: str, detail: str, ctx: CardContext) -> dict[str, Any]:
    """A plain informational card (no score to show, and why)."""
    card_uuid = str(uuid.uuid4())
    return {
        "uuid": card_uuid,
        "summary": _clip(summary),
        "indicator": "info",
        "detail": detail,
        "source": _source(ctx),
        "links": _links(ctx, card_uuid, None),
    }


_UNSAFE_MD = re.compile(r"[^A-Za-z0-9 /._:,()=\-]")


def _md_safe(text: str) -> str:
    """Data-derived text (ids, codes) without Markdown or HTML syntax."""
    return _UNSAFE_MD.sub("_", text)[:200]


def _trend(p: float, prev: float | None) -> str:
    if prev is None:
        return "no earlier run"
    delta = 100 * (p - prev)
    arrow = "▲" if delta > 0.5 else ("▼" if delta < -0.5 else "▬")
    return f"{arrow} {delta:+.1f} pts (was {100 * prev:.1f}%)"


def _age(iso: str | None, now: dt.datetime) -> str:
    if not iso:
        return "not available"
    try:
        days = (now.date() - dt.date.fromisoformat(iso[:10])).days
    except ValueError:
        return "not available"
    return f"{iso[:10]} ({days} days ago)"


def detail_markdown(view: RiskView, ctx: CardContext) -> str:
    lines: list[str] = []
    when = when_text(view.data_as_of, view.computed_at, view.checked_at)
    if view.stale:
        lines.append(
            f"**Not refreshed.** This is the last known result of the nightly run ({when}); "
            f"it is older than the freshness limit. Reason: {_md_safe(view.stale_reason)}."
        )
    elif view.origin == "nightly":
        lines.append(f"Result of the nightly follow-up run: {when}.")
    else:
        lines.append(f"Computed on demand from the EHR's current data: {when}.")
    lines += ["", "| Outcome (1 year) | Probability | Tier | Since last run |", "|---|---|---|---|"]
    prev_all = view.previous_probabilities or {}
    for o in OUTCOMES:
        if o not in view.probabilities:
            continue
        p = view.probabilities[o]
        prev = prev_all.get(o)
        trend = _trend(p, float(prev) if prev is not None else None)
        label = outcome_label(o)
        lines.append(f"| {label} | {100 * p:.1f}% | {view.tiers.get(o, '?')} | {trend} |")
    if view.previous_at is not None:
        lines.append(f"\nLast run before this one: {view.previous_at:%Y-%m-%d %H:%M} UTC.")
    weights = " · ".join(
        f"{modality_label(m, lower=True)} {w:.2f}" for m, w in view.modality_weights.items()
    )
    why = contribution_sentence(view.contributions, HEADLINE_OUTCOME)
    lines.append(
        "\n**What moved the 1-year death risk** (each data source's contribution, against "
        f"the mean risk of typical patients with the same kinds of data): "
        f"{why or 'not recorded'}"
    )
    lines.append(
        f"\n**Modality weights** (the fusion's attention; where the model looked, not how "
        f"much a source changed the risk): {weights or 'not recorded'}"
    )
    unusable = unusable_text(view.image_quality)
    if unusable is not None:
        lines.append(
            f"\n**LGE fibrosis burden:** not reported. {_md_safe(unusable)}; the risk was "
            "computed as for a patient without MRI."
        )
    elif view.fibrosis_burden is not None:
        lines.append(
            f"\n**LGE fibrosis burden:** {100 * view.fibrosis_burden:.1f}% of the myocardium"
        )
    else:
        lines.append("\n**LGE fibrosis burden:** no processed LGE study")
    if view.freshness:
        lines.append("\n**Input freshness (newest data used):**\n")
        for group, iso in view.freshness.items():
            lines.append(f"- {group_label(group, lower=True)}: {_age(iso, ctx.now)}")
    lines.append(f"\n**Model:** {_md_safe(view.model.label)}")
    if view.model.synthetic_training_data:
        lines.append(
            "\n> **Demonstration model.** It was trained on synthetic patients only, has "
            "not been validated on real patients and must not be used for clinical decisions."
        )
    if view.warnings:
        lines.append("\n**Data notes:**\n")
        lines += [f"- {_md_safe(w)}" for w in view.warnings[:10]]
        if len(view.warnings) > 10:
            lines.append(f"- … and {len(view.warnings) - 10} more")
    return "\n".join(lines)


def _service_request(
    ctx: CardContext, code: str, display: str, reason: str, days: int | None, priority: str
) -> dict[str, Any]:
    res: dict[str, Any] = {
        "resourceType": "ServiceRequest",
        "status": "draft",
        "intent": "proposal",
        "priority": priority,
        "code": {
            "coding": [{"system": ctx.systems.suggested_order, "code": code, "display": display}]
        },
        "subject": {"reference": f"Patient/{ctx.patient_id}"},
        "authoredOn": ctx.now.isoformat(timespec="seconds"),
        "reasonCode": [{"text": reason}],
    }
    res["code"]["text"] = display
    if days is not None:
        res["occurrencePeriod"] = {
            "start": ctx.now.date().isoformat(),
            "end": (ctx.now.date() + dt.timedelta(days=days)).isoformat(),
        }
    if ctx.encounter_id:
        res["encounter"] = {"reference": f"Encounter/{ctx.encounter_id}"}
    if ctx.user_id and ctx.user_id.split("/")[0] in ("Practitioner", "PractitionerRole"):
        res["requester"] = {"reference": ctx.user_id}
    return res


def _suggestions(view: RiskView, ctx: CardContext, outcome: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if view.tiers.get(outcome) == "high":
        reason = (
            f"M-PRTM 1-year risk high: {_pct(view.probabilities[outcome])} "
            f"{outcome_label(outcome, lower=True)}"
        )
        resource = _service_request(
            ctx,
            "hf-clinic-follow-up",
            SUGGESTED_ORDERS["hf-clinic-follow-up"],
            reason,
            FOLLOW_UP_DAYS,
            "urgent",
        )
        out.append(
            {
                "label": f"Book heart-failure clinic follow-up within {FOLLOW_UP_DAYS} days",
                "uuid": str(uuid.uuid4()),
                "isRecommended": True,
                "actions": [
                    {
                        "type": "create",
                        "description": "Propose an HF clinic visit within 7 days",
                        "resource": resource,
                    }
                ],
            }
        )
    last = ctx.last_lge_date
    if last is None or (ctx.now.date() - last).days > LGE_MAX_AGE_DAYS:
        when = f"last LGE study {last.isoformat()}" if last else "no LGE study on record"
        resource = _service_request(
            ctx,
            "cardiac-mri-lge",
            SUGGESTED_ORDERS["cardiac-mri-lge"],
            f"No LGE cardiac MRI in the last 12 months ({when}); fibrosis burden unknown",
            None,
            "routine",
        )
        out.append(
            {
                "label": "Refer for cardiac MRI with LGE (none in 12 months)",
                "uuid": str(uuid.uuid4()),
                "isRecommended": False,
                "actions": [
                    {
                        "type": "create",
                        "description": "Propose a cardiac MRI with late gadolinium enhancement",
                        "resource": resource,
                    }
                ],
            }
        )
    return out
