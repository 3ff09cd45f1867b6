"""Text out of FHIR Attachments (DocumentReference.content.attachment, Binary).

Shared by every FHIR source: an attachment carries its bytes inline (``data``, base64 in
JSON, already decoded by fhir.resources) or points at them (``url``: ``Binary/<id>``,
an absolute URL ending in ``Binary/<id>``).  Only textual content types are read; HTML
is reduced to its text.  Errors never carry note text, only ids.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable

from fhir.resources.R4B.attachment import Attachment

#: Content types read as text (prefix match after lower-casing).
TEXT_TYPES = ("text/plain", "text/markdown", "text/html", "application/xhtml+xml", "text/")

_TAG = re.compile(r"<[^>]+>")
_WS = re.compile(r"[ \t\r\f\v]+")
_CHARSET = re.compile(r"charset\s*=\s*\"?([A-Za-z0-9_.:-]+)", re.IGNORECASE)


class AttachmentUnreadable(ValueError):
    """An attachment is not text, or its bytes cannot be found or decoded."""


def binary_id(url: str) -> str | None:
    """The Binary logical id an attachment URL points at, or None."""
    m = re.search(r"(?:^|/)Binary/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$", url)
    return m.group(1) if m else None


def decode_text(data: bytes, content_type: str | None) -> str:
    """Bytes of a textual attachment as str; HTML tags stripped.

    Raises:
        AttachmentUnreadable: the content type is not textual.
    """
    ctype = (content_type or "text/plain").lower()
    if not ctype.startswith(TEXT_TYPES):
        raise AttachmentUnreadable(f"content type {ctype.split(';')[0]} is not text")
    m = _CHARSET.search(ctype)
    charset = m.group(1) if m else "utf-8"
    try:
        text = data.decode(charset, errors="replace")
    except LookupError:
        text = data.decode("utf-8", errors="replace")
    if "html" in ctype:
        text = html.unescape(_TAG.sub(" ", text))
    lines = (_WS.sub(" ", line).strip() for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def attachment_text(
    att: Attachment, fetch_binary: Callable[[str], tuple[bytes, str | None] | None]
) -> str:
    """The text of one attachment.

    Args:
        att: the attachment.
        fetch_binary: Binary id -> (bytes, contentType) or None when unknown.

    Raises:
        AttachmentUnreadable: not text, or the bytes are not there.
    """
    if att.data is not None:
        data = att.data if isinstance(att.data, bytes) else str(att.data).encode()
        return decode_text(data, att.contentType)
    if att.url:
        bid = binary_id(str(att.url))
        if bid is None:
            raise AttachmentUnreadable("url does not point at a Binary")
        found = fetch_binary(bid)
        if found is None:
            raise AttachmentUnreadable(f"Binary/{bid} not found")
        data, ctype = found
        return decode_text(data, att.contentType or ctype)
    raise AttachmentUnreadable("attachment has neither data nor url")
