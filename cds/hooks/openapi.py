"""The OpenAPI 3.1 document of the CDS Hooks endpoints, served at
``GET /cds-services/openapi.json`` (no authentication: it holds no data).

It describes what the service accepts and answers, following CDS Hooks 2.0
(https://cds-hooks.hl7.org/2.0/): discovery, the service call (HookRequest -> cards) and
feedback, with every error answer (``{"error", "message"}``).  Schemas are JSON Schema
2020-12 (OpenAPI 3.1); members the specification allows but the service does not read are
left open (``additionalProperties``) where the specification leaves them open.  The
service ids are the enum of ``service_id``.  ``tests/hooks/test_openapi.py`` drives every
operation from this document with schemathesis and checks each answer against it.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from cds.hooks.services import service_definitions

bp = Blueprint("cds_hooks_openapi", __name__)

_ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
}
_CODING = {
    "type": "object",
    "properties": {
        "system": {"type": "string"},
        "code": {"type": "string"},
        "display": {"type": "string"},
    },
}
_LINK = {
    "type": "object",
    "required": ["label", "url", "type"],
    "properties": {
        "label": {"type": "string"},
        "url": {"type": "string"},
        "type": {"enum": ["absolute", "smart"]},
        "appContext": {"type": "string"},
    },
}
_SUGGESTION = {
    "type": "object",
    "required": ["label"],
    "properties": {
        "label": {"type": "string"},
        "uuid": {"type": "string"},
        "isRecommended": {"type": "boolean"},
        "actions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["type", "description"],
                "properties": {
                    "type": {"enum": ["create", "update", "delete"]},
                    "description": {"type": "string"},
                    "resource": {"type": "object"},
                },
            },
        },
    },
}
_CARD = {
    "type": "object",
    "required": ["summary", "indicator", "source"],
    "properties": {
        "uuid": {"type": "string"},
        "summary": {"type": "string", "maxLength": 140},
        "detail": {"type": "string"},
        "indicator": {"enum": ["info", "warning", "critical"]},
        "source": {
            "type": "object",
            "required": ["label"],
            "properties": {
                "label": {"type": "string"},
                "url": {"type": "string"},
                "topic": _CODING,
            },
        },
        "suggestions": {"type": "array", "items": _SUGGESTION},
        "selectionBehavior": {"enum": ["at-most-one", "any"]},
        "overrideReasons": {"type": "array", "items": _CODING},
        "links": {"type": "array", "items": _LINK},
    },
}
_HOOK_REQUEST = {
    "type": "object",
    "required": ["hook", "hookInstance", "context"],
    "properties": {
        "hook": {"enum": ["patient-view", "encounter-discharge"]},
        "hookInstance": {"type": "string", "format": "uuid"},
        # null is read as absent for the optional members
        "fhirServer": {"type": ["string", "null"], "format": "uri"},
        "fhirAuthorization": {
            "type": ["object", "null"],
            "required": ["access_token", "token_type"],
            "properties": {
                "access_token": {"type": "string", "minLength": 1},
                "token_type": {"type": "string", "pattern": "^[Bb][Ee][Aa][Rr][Ee][Rr]$"},
                "expires_in": {"type": ["integer", "null"]},
                "scope": {"type": ["string", "null"]},
                "subject": {"type": ["string", "null"]},
            },
        },
        "context": {
            "type": "object",
            "required": ["userId", "patientId"],
            "properties": {
                "userId": {"type": "string", "pattern": "^[A-Za-z]+/[A-Za-z0-9\\-.]{1,64}$"},
                "patientId": {"type": "string", "pattern": "^[A-Za-z0-9\\-.]{1,64}$"},
                "encounterId": {"type": "string", "pattern": "^[A-Za-z0-9\\-.]{1,64}$"},
            },
        },
        "prefetch": {"type": ["object", "null"]},
    },
}
_FEEDBACK = {
    "type": "object",
    "required": ["feedback"],
    "properties": {
        "feedback": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["card", "outcome", "outcomeTimestamp"],
                "properties": {
                    "card": {"type": "string", "maxLength": 64},
                    "outcome": {"enum": ["accepted", "overridden"]},
                    "acceptedSuggestions": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["id"],
                            "properties": {"id": {"type": "string"}},
                        },
                    },
                    "overrideReason": {
                        "type": "object",
                        "properties": {
                            "reason": _CODING,
                            "userComment": {"type": "string", "maxLength": 4000},
                        },
                    },
                    "outcomeTimestamp": {"type": "string", "format": "date-time"},
                },
            },
        }
    },
}


def _errors(*statuses: int) -> dict[str, Any]:
    text = {
        400: "bad request: the message names the member",
        401: "missing or invalid JWT",
        404: "unknown service (or card)",
        412: "no prefetch and no usable FHIR access for the data needed",
        413: "request body too large",
        415: "not application/json",
    }
    return {
        str(s): {
            "description": text[s],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
        for s in statuses
    }


def document() -> dict[str, Any]:
    """The OpenAPI document (a fresh dict)."""
    ids = [s.id for s in service_definitions()]
    service_id = {
        "name": "service_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": ids},
    }
    bearer: list[dict[str, list[str]]] = [{"cdsHooksJwt": []}]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "M-PRTM CDS Hooks service",
            "version": "2.0",
            "description": "CDS Hooks 2.0 services of M-PRTM (heart-failure 1-year risk).",
        },
        "components": {
            "securitySchemes": {
                "cdsHooksJwt": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
            "schemas": {
                "Error": _ERROR,
                "Card": _CARD,
                "HookRequest": _HOOK_REQUEST,
                "Feedback": _FEEDBACK,
            },
        },
        "security": bearer,
        "paths": {
            "/cds-services": {
                "get": {
                    "operationId": "discovery",
                    "summary": "CDS Hooks discovery",
                    "responses": {
                        "200": {
                            "description": "the services",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["services"],
                                        "properties": {
                                            "services": {
                                                "type": "array",
                                                "items": {
                                                    "type": "object",
                                                    "required": [
                                                        "hook",
                                                        "description",
                                                        "id",
                                                    ],
                                                    "properties": {
                                                        "hook": {"type": "string"},
                                                        "title": {"type": "string"},
                                                        "description": {"type": "string"},
                                                        "id": {"type": "string"},
                                                        "prefetch": {
                                                            "type": "object",
                                                            "additionalProperties": {
                                                                "type": "string"
                                                            },
                                                        },
                                                        "usageRequirements": {"type": "string"},
                                                    },
                                                },
                                            }
                                        },
                                    }
                                }
                            },
                        },
                        **_errors(400, 401),
                    },
                }
            },
            "/cds-services/{service_id}": {
                "post": {
                    "operationId": "callService",
                    "summary": "Call a CDS service (patient-view or encounter-discharge)",
                    "parameters": [service_id],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/HookRequest"}
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "cards (possibly none)",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["cards"],
                                        "properties": {
                                            "cards": {
                                                "type": "array",
                                                "items": {"$ref": "#/components/schemas/Card"},
                                            },
                                            "systemActions": {"type": "array"},
                                        },
                                    }
                                }
                            },
                        },
                        **_errors(400, 401, 404, 412, 413, 415),
                    },
                }
            },
            "/cds-services/{service_id}/feedback": {
                "post": {
                    "operationId": "feedback",
                    "summary": "Feedback on cards (accepted or overridden)",
                    "parameters": [service_id],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/Feedback"}
                            }
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "items stored",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "required": ["stored"],
                                        "properties": {"stored": {"type": "integer"}},
                                    }
                                }
                            },
                        },
                        **_errors(400, 401, 404, 413, 415),
                    },
                }
            },
        },
    }


@bp.get("/cds-services/openapi.json")
def openapi() -> Any:
    return jsonify(document())
