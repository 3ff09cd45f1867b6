"""Streaming reader of ``multipart/related`` bodies (RFC 2046 section 5.1; DICOM PS3.18
section 8.7.1 for WADO-RS).  One part is held in memory at a time."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from connectors.errors import DicomWebError


def boundary_of(content_type: str) -> bytes:
    """The ``boundary`` parameter of a multipart Content-Type header.

    Raises:
        DicomWebError: when the header is not multipart or has no boundary.
    """
    media, _, params = content_type.partition(";")
    if not media.strip().lower().startswith("multipart/"):
        raise DicomWebError(f"expected a multipart answer, got Content-Type {media.strip()!r}")
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "boundary" and value.strip():
            return value.strip().strip('"').encode("ascii")
    raise DicomWebError("multipart answer without a boundary parameter")


def _part_type(headers: bytes) -> str:
    for line in headers.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-type":
            return value.decode("latin-1").split(";")[0].strip().lower()
    return ""


def iter_parts(
    chunks: Iterable[bytes], boundary: bytes, *, expected_type: str = "application/dicom"
) -> Iterator[bytes]:
    """Bodies of the parts of a multipart stream, in order.

    Raises:
        DicomWebError: a part of another media type, or a stream that ends early.
    """
    delim = b"--" + boundary
    sep = b"\r\n" + delim
    buf = bytearray()
    state = "preamble"
    scan = 0
    for chunk in chunks:
        buf += chunk
        while True:
            if state == "preamble":
                idx = buf.find(delim)
                if idx < 0:
                    del buf[: max(0, len(buf) - len(delim))]
                    break
                del buf[: idx + len(delim)]
                state = "delimiter"
            if state == "delimiter":
                if len(buf) < 2:
                    break
                if buf[:2] == b"--":
                    return
                idx = buf.find(b"\r\n")
                if idx < 0:
                    break
                del buf[: idx + 2]
                state = "headers"
            if state == "headers":
                idx = buf.find(b"\r\n\r\n")
                if idx < 0:
                    break
                ptype = _part_type(bytes(buf[:idx]))
                if expected_type and ptype and ptype != expected_type:
                    raise DicomWebError(f"multipart part of type {ptype!r}, not {expected_type}")
                del buf[: idx + 4]
                state, scan = "body", 0
            if state == "body":
                idx = buf.find(sep, scan)
                if idx < 0:
                    scan = max(0, len(buf) - len(sep))
                    break
                yield bytes(buf[:idx])
                del buf[: idx + len(sep)]
                state = "delimiter"
    raise DicomWebError("multipart answer ended before its closing boundary")
