"""DocumentReference attachments of a CDS Hooks call turned into note text.

Inline attachments (``data``) of every content type the FHIR connectors read, and
attachments by ``url`` (``Binary/<id>`` or an absolute URL), fetched from ``fhirServer``
with the ``fhirAuthorization`` token.  Only URLs of the same origin as ``fhirServer`` and
under its base path are fetched; each fetch gets at most the time left of the request's
budget.  An attachment that cannot be read is a warning naming the DocumentReference.
"""

from __future__ import annotations

from typing import Any

import httpx

from cds.hooks._deadline import Deadline
from cds.hooks.request import HookRequest
from connectors.fhir._attachments import AttachmentUnreadable, decode_text, fetch_attachment
from connectors.fhir.base import PatientRecord

#: seconds kept back from the budget for scoring and answering
RESERVE_S = 0.2
_HTTP = httpx.Client(follow_redirects=False, timeout=httpx.Timeout(5.0, connect=1.0))


def read_document_texts(record: PatientRecord, req: HookRequest, deadline: Deadline) -> None:
    """Fill ``record.document_texts`` for documents the prefetch left without text."""
    for doc in record.documents:
        key = f"DocumentReference/{doc.id}"
        if record.document_texts.get(key):
            continue
        parts = []
        for i, content in enumerate(doc.content or []):
            try:
                parts.append(_one(content.attachment, req, deadline))
            except AttachmentUnreadable as exc:
                record.warnings.append(f"{key}: attachment {i} not read ({exc})")
        text = "\n".join(p for p in parts if p)
        if text:
            record.document_texts[key] = text


def _one(att: Any, req: HookRequest, deadline: Deadline) -> str:
    if att is None:
        raise AttachmentUnreadable("no attachment")
    if att.data is not None:
        data = att.data if isinstance(att.data, bytes) else str(att.data).encode()
        return decode_text(data, att.contentType)
    if not att.url:
        raise AttachmentUnreadable("attachment has neither data nor url")
    if req.fhir_server is None or req.fhir_authorization is None:
        raise AttachmentUnreadable("by url, and the request gives no FHIR access")
    left = deadline.remaining_s(RESERVE_S)
    if left <= 0:
        raise AttachmentUnreadable("not fetched within the time budget")
    raw, ctype = fetch_attachment(
        _HTTP, req.fhir_server, str(att.url), req.fhir_authorization.access_token, left
    )
    return decode_text(raw, att.contentType or ctype)
