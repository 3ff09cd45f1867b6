"""Turn FHIR JSON into ``fhir.resources.R4B`` objects; report what does not parse.

A warning names the resource type and id and the failing element paths, never the
offending values (they may be identifying).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, cast

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.resource import Resource
from pydantic import ValidationError

log = logging.getLogger("connectors.fhir.parse")


def resource_label(data: Mapping[str, Any]) -> str:
    """``Type/id`` of a resource dict ("?" for missing parts)."""
    rtype = data.get("resourceType") if isinstance(data, Mapping) else None
    rid = data.get("id") if isinstance(data, Mapping) else None
    return f"{rtype or '?'}/{rid or '?'}"


def parse_resource(data: Any, expected: str | None = None) -> tuple[Resource | None, str | None]:
    """Parse ``data`` as an R4B resource.

    Returns ``(resource, None)`` or ``(None, warning)`` where the warning names the
    resource's type/id and the element paths that failed.
    """
    if not isinstance(data, Mapping):
        return None, f"?/?: skipped, not a JSON object ({type(data).__name__})"
    label = resource_label(data)
    rtype = data.get("resourceType")
    if expected is not None and rtype != expected:
        return None, f"{label}: skipped, expected a {expected}"
    try:
        cls = get_fhir_model_class(str(rtype))
    except (KeyError, ValueError, AttributeError):
        return None, f"{label}: skipped, unknown resource type"
    try:
        resource = cls.model_validate(dict(data))
    except ValidationError as exc:
        paths = sorted({".".join(str(p) for p in err["loc"]) or "(root)" for err in exc.errors()})
        shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
        return None, f"{label}: skipped, does not parse as R4 ({shown})"
    except (TypeError, ValueError) as exc:
        return None, f"{label}: skipped, does not parse as R4 ({type(exc).__name__})"
    return cast(Resource, resource), None


def to_json(resource: Resource | Mapping[str, Any]) -> dict[str, Any]:
    """JSON-ready dict of an R4B resource (or a dict, returned as a copy)."""
    if isinstance(resource, Mapping):
        return dict(resource)
    import json

    return dict(json.loads(resource.model_dump_json(exclude_none=True)))
