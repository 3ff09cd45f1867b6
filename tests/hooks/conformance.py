"""Checks of response bodies against the CDS Hooks 2.0 text (cds-hooks.hl7.org/2.0).

Each assertion quotes the rule it checks; the tests call these on every card they get.
"""

from __future__ import annotations

import re
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

INDICATORS = ("info", "warning", "critical")  # "Allowed values ... info, warning, critical"
SELECTION_BEHAVIORS = ("at-most-one", "any")
ACTION_TYPES = ("create", "update", "delete")
LINK_TYPES = ("absolute", "smart")
TOKEN = re.compile(r"\{\{([^}]*)\}\}")
HOOK_CONTEXT_TOKENS = {
    "patient-view": {"context.userId", "context.patientId", "context.encounterId"},
    "encounter-discharge": {"context.userId", "context.patientId", "context.encounterId"},
}
USER_TOKENS = {
    "userPractitionerId",
    "userPractitionerRoleId",
    "userPatientId",
    "userRelatedPersonId",
}


def check_coding(c: Any, *, display_required: bool) -> None:
    # Coding: "code REQUIRED", "system REQUIRED", display "REQUIRED for Override Reasons"
    assert isinstance(c, dict)
    assert isinstance(c.get("code"), str) and c["code"]
    assert isinstance(c.get("system"), str) and c["system"]
    if display_required:
        assert isinstance(c.get("display"), str) and c["display"]


def check_discovery(doc: Any) -> None:
    # "The response to the discovery endpoint SHALL be an object containing a list of CDS
    # Services": services[]; hook, description, id REQUIRED; title RECOMMENDED.
    assert isinstance(doc, dict) and isinstance(doc.get("services"), list)
    for s in doc["services"]:
        for f in ("hook", "description", "id"):
            assert isinstance(s.get(f), str) and s[f], f
        assert isinstance(s.get("title"), str)
        prefetch = s.get("prefetch", {})
        assert isinstance(prefetch, dict)
        for key, template in prefetch.items():
            assert isinstance(key, str) and isinstance(template, str)
            # "Prefetch tokens MUST ... contain only the qualified path to a hook context
            # field or one of the following user identifiers"
            for tok in TOKEN.findall(template):
                assert tok in HOOK_CONTEXT_TOKENS[s["hook"]] | USER_TOKENS, tok
            # instance read or type-level search only (relative URL, no absolute URL)
            assert not template.startswith(("http://", "https://", "/"))
        if "usageRequirements" in s:
            assert isinstance(s["usageRequirements"], str)


def check_response(body: Any) -> None:
    # "an object containing a cards array and optionally a systemActions array"
    assert isinstance(body, dict) and isinstance(body.get("cards"), list)
    for card in body["cards"]:
        check_card(card)


def check_card(card: dict[str, Any]) -> None:
    # summary REQUIRED: "One-sentence, <140-character summary message"
    assert isinstance(card.get("summary"), str) and card["summary"]
    assert len(card["summary"]) < 140, len(card["summary"])
    assert card["indicator"] in INDICATORS
    # source REQUIRED; source.label REQUIRED; topic a Coding
    src = card["source"]
    assert isinstance(src.get("label"), str) and src["label"]
    if "url" in src:
        assert src["url"].startswith(("https://", "http://"))
    if "topic" in src:
        check_coding(src["topic"], display_required=False)
    if "detail" in card:
        assert isinstance(card["detail"], str)
    # uuid: "SHALL be included in any subsequent calls to the ... feedback endpoint"
    if "uuid" in card:
        assert isinstance(card["uuid"], str) and card["uuid"]
    # "If suggestions are present, selectionBehavior MUST also be provided."
    if card.get("suggestions"):
        assert card.get("selectionBehavior") in SELECTION_BEHAVIORS
        for s in card["suggestions"]:
            assert isinstance(s.get("label"), str) and s["label"]
            if "isRecommended" in s:
                assert isinstance(s["isRecommended"], bool)
            for a in s.get("actions", []):
                assert a["type"] in ACTION_TYPES
                assert isinstance(a.get("description"), str) and a["description"]
                if a["type"] == "create":
                    # "the resource attribute SHALL contain a new FHIR resource"
                    res = a["resource"]
                    get_fhir_model_class(res["resourceType"]).model_validate(res)
    # override reasons: "the CDS Service MUST populate a display value for each reason"
    for reason in card.get("overrideReasons", []):
        check_coding(reason, display_required=True)
    for link in card.get("links", []):
        assert isinstance(link.get("label"), str) and link["label"]
        assert isinstance(link.get("url"), str) and link["url"]
        assert link["type"] in LINK_TYPES
        # appContext "should only be valued if the link type is smart"
        if "appContext" in link:
            assert link["type"] == "smart"
            assert isinstance(link["appContext"], str)
