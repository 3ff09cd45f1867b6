"""Text out of FHIR Attachments (DocumentReference.content.attachment, Binary).

Shared by every FHIR source: an attachment carries its bytes inline (``data``, base64 in
JSON, already decoded by fhir.resources) or points at them (``url``: ``Binary/<id>``,
an absolute URL ending in ``Binary/<id>``).  Content types read:

- ``text/plain`` and other ``text/*`` in the declared charset (UTF-8 when none is
  declared; a byte-order mark wins);
- ``text/html`` and ``application/xhtml+xml``, reduced to their text;
- ``application/pdf``: the text layer of every page (pypdf; a scanned PDF without one is
  unreadable);
- C-CDA (``application/hl7-v3+xml``, ``text/xml``, ``application/xml`` with a
  ``ClinicalDocument`` root): the narrative blocks (``section/text``) with their titles.
  A document type declaration is refused (no entity expansion).

Errors never carry note text, only ids.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import html
import io
import json
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable

import httpx
from fhir.resources.R4B.attachment import Attachment

from connectors.fhir.outbound import ResponseTooLarge, bounded_get, same_origin

#: Content types read as text (prefix match after lower-casing).
TEXT_TYPES = ("text/plain", "text/markdown", "text/html", "application/xhtml+xml", "text/")
PDF_TYPES = ("application/pdf",)
CDA_TYPES = ("application/hl7-v3+xml", "application/xml", "text/xml", "application/cda+xml")
CDA_NS = "urn:hl7-org:v3"
#: most PDF pages read per attachment (a note, not a book)
MAX_PDF_PAGES = 50

_TAG = re.compile(r"<[^>]+>")
_WS = re.compile(r"[ \t\r\f\v]+")
_CHARSET = re.compile(r"charset\s*=\s*\"?([A-Za-z0-9_.:-]+)", re.IGNORECASE)


class AttachmentUnreadable(ValueError):
    """An attachment is not text, or its bytes cannot be found or decoded."""


def binary_id(url: str) -> str | None:
    """The Binary logical id an attachment URL points at, or None."""
    m = re.search(r"(?:^|/)Binary/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$", url)
    return m.group(1) if m else None


def _chars(data: bytes, ctype: str) -> str:
    for bom, enc in (
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if data.startswith(bom):
            return data.decode(enc, errors="replace")
    m = _CHARSET.search(ctype)
    charset = m.group(1) if m else "utf-8"
    try:
        return data.decode(charset, errors="replace")
    except LookupError:
        return data.decode("utf-8", errors="replace")


def _tidy(text: str) -> str:
    lines = (_WS.sub(" ", line).strip() for line in text.splitlines())
    return "\n".join(line for line in lines if line)


def pdf_text(data: bytes) -> str:
    """The text layer of a PDF.

    Raises:
        AttachmentUnreadable: not a PDF, encrypted, or no text layer.
    """
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise AttachmentUnreadable("PDF is encrypted")
        pages = [p.extract_text() or "" for p in reader.pages[:MAX_PDF_PAGES]]
    except (PyPdfError, ValueError, KeyError, TypeError) as exc:
        raise AttachmentUnreadable(f"PDF not readable ({type(exc).__name__})") from None
    text = _tidy("\n".join(pages))
    if not text:
        raise AttachmentUnreadable("PDF has no text layer")
    return text


def cda_text(data: bytes) -> str:
    """The narrative of a C-CDA document: each section's title and text block.

    Raises:
        AttachmentUnreadable: not XML, a DOCTYPE, or no ClinicalDocument.
    """
    head = data[:4096].lower()
    if b"<!doctype" in head or b"<!entity" in data.lower():
        raise AttachmentUnreadable("XML with a document type declaration is refused")
    try:
        root = ET.fromstring(data)
    except ET.ParseError:
        raise AttachmentUnreadable("XML does not parse") from None
    if root.tag != f"{{{CDA_NS}}}ClinicalDocument":
        raise AttachmentUnreadable("XML is not a CDA ClinicalDocument")
    parts: list[str] = []
    for section in root.iter(f"{{{CDA_NS}}}section"):
        title = section.find(f"{{{CDA_NS}}}title")
        block = section.find(f"{{{CDA_NS}}}text")
        body = _tidy(" ".join(block.itertext())) if block is not None else ""
        if not body:
            continue
        heading = _tidy("".join(title.itertext())) if title is not None else ""
        parts.append(f"{heading}: {body}" if heading else body)
    if not parts:
        raise AttachmentUnreadable("CDA document has no narrative")
    return "\n".join(parts)


def decode_text(data: bytes, content_type: str | None) -> str:
    """Bytes of an attachment as text (see the module docstring for the types read).

    Raises:
        AttachmentUnreadable: a content type not read, or content that cannot be read.
    """
    ctype = (content_type or "text/plain").lower()
    base = ctype.split(";")[0].strip()
    if base in PDF_TYPES:
        return pdf_text(data)
    if base in CDA_TYPES:
        return cda_text(data)
    if not ctype.startswith(TEXT_TYPES):
        raise AttachmentUnreadable(f"content type {base} is not read")
    text = _chars(data, ctype)
    if "html" in ctype:
        text = html.unescape(_TAG.sub(" ", re.sub(r"(?is)<(script|style)\b.*?</\1>", " ", text)))
    return _tidy(text)


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


#: largest attachment fetched by reference (bytes)
MAX_FETCH_BYTES = 10 * 1024 * 1024


def same_origin_url(base_url: str, url: str) -> str | None:
    """``url`` resolved against the FHIR base when it is relative; the absolute URL when it
    has the same scheme, host and port as the base and lies under the base path; None for
    any other server (the token is never sent elsewhere)."""
    base = httpx.URL(base_url.rstrip("/") + "/")
    target = base.join(url)
    if not same_origin(str(target), str(base)):
        return None
    if not target.path.startswith(base.path):
        return None
    return str(target)


def fetch_attachment(
    client: httpx.Client, base_url: str, url: str, token: str | None, timeout_s: float
) -> tuple[bytes, str | None]:
    """The bytes and content type behind an attachment URL on the FHIR server: a Binary
    (read as FHIR JSON, its base64 ``data`` decoded) or any other resource of the same
    origin served raw.

    Raises:
        AttachmentUnreadable: another origin, an HTTP error, a timeout, too large, or a
            Binary whose data is not base64.
    """
    target = same_origin_url(base_url, url)
    if target is None:
        raise AttachmentUnreadable("url is not on the FHIR server; not fetched")
    headers = {"Accept": "application/fhir+json, */*;q=0.8"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        resp = bounded_get(
            client,
            target,
            headers=headers,
            deadline=time.monotonic() + max(0.01, timeout_s),
            max_bytes=MAX_FETCH_BYTES,
        )
    except ResponseTooLarge:
        raise AttachmentUnreadable("attachment larger than 10 MiB") from None
    except httpx.TimeoutException:
        raise AttachmentUnreadable("not fetched within the time budget") from None
    except httpx.HTTPError as exc:
        raise AttachmentUnreadable(f"not fetched ({type(exc).__name__})") from None
    if resp.status_code >= 400:
        raise AttachmentUnreadable(f"fetch answered HTTP {resp.status_code}")
    ctype = resp.headers.get("Content-Type", "")
    if ctype.split(";")[0].strip().lower() in ("application/fhir+json", "application/json"):
        try:
            body = json.loads(resp.content)
        except ValueError:
            raise AttachmentUnreadable("Binary is not JSON") from None
        if isinstance(body, dict) and body.get("resourceType") == "Binary":
            try:
                raw = base64.b64decode(str(body.get("data", "")), validate=True)
            except (binascii.Error, ValueError):
                raise AttachmentUnreadable(f"Binary/{body.get('id')} data is not base64") from None
            return raw, str(body["contentType"]) if body.get("contentType") else None
    return resp.content, ctype or None
