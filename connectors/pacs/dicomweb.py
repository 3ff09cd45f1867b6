"""Imaging source over DICOMweb: QIDO-RS searches and WADO-RS series retrieval (httpx).

Studies are searched by PatientID and ModalitiesInStudy (``GET {root}/studies``), then
the series of each study by Modality (``GET {root}/studies/{study}/series``); a series
is retrieved as ``multipart/related; type="application/dicom"; transfer-syntax=*`` (PS3.18
8.7.3: the origin server sends each instance in the transfer syntax it holds, compressed
ones included, and the pixel pipeline decodes them) and streamed part by part into the
:class:`SeriesCache`; an instance in a syntax the pipeline cannot decode (12-bit JPEG
Extended) is asked for again on its own, in Explicit VR Little Endian.  Timeouts,
connection errors, 429 and 5xx are retried with exponential backoff that honours
``Retry-After``; other HTTP errors raise :class:`DicomWebError` at once.  URLs in
messages never carry credentials.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import io
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import httpx
import pydicom
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from connectors.errors import DicomInvalid, DicomWebError, PacsError, RetrieveIncomplete
from connectors.pacs._contexts import STORAGE_TRANSFER_SYNTAXES
from connectors.pacs._multipart import boundary_of, iter_parts
from connectors.pacs._retry import RetryPolicy
from connectors.pacs.base import SeriesRef
from connectors.pacs.cache import SeriesCache, StagedSeries, check_uid
from connectors.pacs.query import (
    RECOGNITION_TAGS,
    StudyRef,
    check_patient_id,
    dataset_recognition_fields,
    dataset_text,
    date_range,
    study_ref,
)

log = logging.getLogger("connectors.pacs.dicomweb")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
DICOM_JSON = "application/dicom+json"
MULTIPART_DICOM = 'multipart/related; type="application/dicom"; transfer-syntax=*'
#: Asked for, instance by instance, when ``transfer-syntax=*`` brought one we cannot decode.
MULTIPART_DICOM_EXPLICIT = (
    f'multipart/related; type="application/dicom"; transfer-syntax={ExplicitVRLittleEndian}'
)

# Tags asked for with includefield (QIDO-RS returns only a default set otherwise).
_STUDY_FIELDS = ("00080020", "00080061", "00100020", "0020000D")
_SERIES_FIELDS = (
    "0008103E",
    "00181030",
    "00201209",
    "00080060",
    "0020000E",
    *RECOGNITION_TAGS.values(),
)


class _Retryable(Exception):  # noqa: N818 - control flow inside this module
    def __init__(self, reason: str, retry_after: float = 0.0) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


def _retry_after(value: str | None) -> float:
    if not value:
        return 0.0
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 0.0
    return max(0.0, when.timestamp() - time.time())


def dicomweb_client(
    *,
    auth: str,
    username: str = "",
    password: str = "",
    token: str = "",
    timeout_s: float = 60.0,
    transport: httpx.BaseTransport | None = None,
    accept: str | None = None,
) -> httpx.Client:
    """The HTTP client of a DICOMweb peer: ``auth`` none, basic (``username``,
    ``password``) or bearer (``token``); no redirects followed (credentials stay with the
    configured origin).

    Raises:
        ValueError: an unknown ``auth`` or a bearer without a token.
    """
    headers = {"User-Agent": "mprtm-cds"}
    if accept:
        headers["Accept"] = accept
    client_auth: httpx.Auth | None = None
    if auth == "basic":
        client_auth = httpx.BasicAuth(username, password)
    elif auth == "bearer":
        if not token:
            raise ValueError("DICOMweb bearer authentication needs a token")
        headers["Authorization"] = f"Bearer {token}"
    elif auth != "none":
        raise ValueError(f"DICOMweb auth must be none, basic or bearer, got {auth!r}")
    return httpx.Client(
        auth=client_auth,
        headers=headers,
        timeout=httpx.Timeout(timeout_s),
        transport=transport,
        follow_redirects=False,
    )


class DicomWebSource:
    """A PACS reached over DICOMweb; implements ``ImagingSource``.

    Args:
        base_url: the DICOMweb root, e.g. ``https://pacs.example.org/dicom-web``.
        cache: where retrieved series are kept.
        auth: "none", "basic" (``username``/``password``) or "bearer" (``token``).
        username: user for basic authentication.
        password: password for basic authentication.
        token: bearer token.
        timeout_s: connect/read/write timeout of each request.
        retry: retries of timeouts, connection errors, 429 and 5xx answers.
        transport: an httpx transport (tests, proxies); None for the default.
    """

    def __init__(
        self,
        base_url: str,
        cache: SeriesCache,
        *,
        auth: Literal["none", "basic", "bearer"] = "none",
        username: str = "",
        password: str = "",
        token: str = "",
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"DICOMweb URL must start with http:// or https://: {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.cache = cache
        self.retry = retry or RetryPolicy()
        self._client = dicomweb_client(
            auth=auth,
            username=username,
            password=password,
            token=token,
            timeout_s=timeout_s,
            transport=transport,
        )
        #: HTTP requests sent (diagnostics).
        self.requests = 0

    def __enter__(self) -> DicomWebSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    # -- HTTP with retries -------------------------------------------------------------

    def _safe_url(self, url: str) -> str:
        return str(httpx.URL(url).copy_with(username=None, password=None, query=None))

    @contextmanager
    def _attempt(self, method: str, url: str, **kw: Any) -> Iterator[httpx.Response]:
        """One request; the response is streamed. Raises _Retryable or DicomWebError."""
        self.requests += 1
        try:
            with self._client.stream(method, url, **kw) as rsp:
                if rsp.status_code in RETRY_STATUSES:
                    raise _Retryable(
                        f"HTTP {rsp.status_code}", _retry_after(rsp.headers.get("Retry-After"))
                    )
                if rsp.status_code >= 400:
                    rsp.read()
                    kind = {401: "authentication failed", 403: "access forbidden"}.get(
                        rsp.status_code, "request failed"
                    )
                    raise DicomWebError(
                        f"DICOMweb {method} {self._safe_url(url)}: {kind} (HTTP {rsp.status_code})",
                        status=rsp.status_code,
                        url=self._safe_url(url),
                    )
                yield rsp
        except httpx.TimeoutException as exc:
            raise _Retryable(f"timeout ({type(exc).__name__})") from exc
        except httpx.TransportError as exc:
            raise _Retryable(f"connection error ({type(exc).__name__})") from exc

    def _with_retries(self, what: str, url: str, fn: Any) -> Any:
        reason = ""
        for attempt in range(1, self.retry.attempts + 1):
            try:
                return fn()
            except _Retryable as exc:
                reason = str(exc)
                if attempt < self.retry.attempts:
                    log.warning(
                        "%s: %s; retry %d of %d", what, reason, attempt, self.retry.max_retries
                    )
                    self.retry.sleep(attempt, exc.retry_after)
        raise DicomWebError(
            f"{what}: {self._safe_url(url)} failed after {self.retry.attempts} attempt(s): "
            f"{reason}",
            url=self._safe_url(url),
        )

    def _qido(self, path: str, params: list[tuple[str, str]], what: str) -> list[Dataset]:
        url = f"{self.base_url}/{path}"

        def call() -> list[Dataset]:
            with self._attempt("GET", url, params=params, headers={"Accept": DICOM_JSON}) as r:
                body = r.read()
                if r.status_code == 204 or not body.strip():
                    return []
                try:
                    rows = r.json()
                    return [Dataset.from_json(row) for row in rows]
                except (ValueError, TypeError, KeyError, AttributeError) as exc:
                    raise DicomWebError(
                        f"{what}: {self._safe_url(url)} answered malformed DICOM JSON ({exc})",
                        status=r.status_code,
                        url=self._safe_url(url),
                    ) from exc

        result: list[Dataset] = self._with_retries(what, url, call)
        return result

    # -- queries -----------------------------------------------------------------------

    def find_studies(
        self,
        patient_id: str,
        *,
        modality: str = "MR",
        date_from: dt.date | str | None = None,
        date_to: dt.date | str | None = None,
    ) -> list[StudyRef]:
        """QIDO-RS study search by PatientID, ModalitiesInStudy and StudyDate."""
        pid = check_patient_id(patient_id)
        params = [("PatientID", pid), ("ModalitiesInStudy", modality)]
        dates = date_range(date_from, date_to)
        if dates:
            params.append(("StudyDate", dates))
        params += [("includefield", tag) for tag in _STUDY_FIELDS]
        rows = self._qido("studies", params, f"QIDO-RS studies of patient {pid}")
        return [study_ref(pid, r) for r in rows if dataset_text(r, "PatientID") in ("", pid)]

    def find_series(
        self,
        patient_id: str,
        *,
        modality: str = "MR",
        date_from: dt.date | str | None = None,
        date_to: dt.date | str | None = None,
    ) -> list[SeriesRef]:
        """QIDO-RS: the patient's studies, then each study's series of ``modality``."""
        found: list[SeriesRef] = []
        for st in self.find_studies(
            patient_id, modality=modality, date_from=date_from, date_to=date_to
        ):
            params = [("Modality", modality)] + [("includefield", t) for t in _SERIES_FIELDS]
            rows = self._qido(
                f"studies/{st.study_instance_uid}/series",
                params,
                f"QIDO-RS series of study {st.study_instance_uid}",
            )
            for row in rows:
                if dataset_text(row, "Modality") not in ("", modality):
                    continue
                try:
                    n = int(row.get("NumberOfSeriesRelatedInstances") or 0)
                except (TypeError, ValueError):
                    n = 0
                found.append(
                    SeriesRef(
                        patient_id=st.patient_id,
                        study_instance_uid=st.study_instance_uid,
                        series_instance_uid=check_uid(
                            dataset_text(row, "SeriesInstanceUID"), "SeriesInstanceUID"
                        ),
                        modality=dataset_text(row, "Modality") or modality,
                        series_description=dataset_text(row, "SeriesDescription"),
                        protocol_name=dataset_text(row, "ProtocolName"),
                        study_date=st.study_date,
                        n_instances=n,
                        **dataset_recognition_fields(row),
                    )
                )
        return found

    # -- retrieval ---------------------------------------------------------------------

    def retrieve_series(self, ref: SeriesRef) -> list[Dataset]:
        """Every instance of the series: from the cache, else by WADO-RS.

        Raises:
            DicomWebError: HTTP errors, or failures after every retry.
            RetrieveIncomplete: fewer instances than QIDO-RS announced.
        """
        uid = check_uid(ref.series_instance_uid, "SeriesInstanceUID")
        study = check_uid(ref.study_instance_uid, "StudyInstanceUID")
        cached = self.cache.load(uid)
        if cached is not None:
            return cached
        with self.cache.lock(uid):
            cached = self.cache.load(uid)
            if cached is not None:
                return cached
            url = f"{self.base_url}/studies/{study}/series/{uid}"
            with self.cache.stage(uid, source="dicomweb") as staged:
                self._with_retries(
                    f"WADO-RS series {uid}", url, lambda: self._download(url, staged)
                )
                if ref.n_instances and len(staged) < ref.n_instances:
                    raise RetrieveIncomplete(
                        f"series {uid}: WADO-RS returned {len(staged)} of "
                        f"{ref.n_instances} instances; not cached",
                        expected=ref.n_instances,
                        received=len(staged),
                    )
        datasets = self.cache.load(uid)
        if datasets is None:
            raise PacsError(f"series {uid}: cached copy vanished right after retrieval")
        return datasets

    def _download(self, url: str, staged: StagedSeries) -> None:
        staged.clear()
        again = self._stream(url, staged, MULTIPART_DICOM)
        for sop_uid in again:
            self._stream(
                f"{url}/instances/{check_uid(sop_uid, 'SOPInstanceUID')}",
                staged,
                MULTIPART_DICOM_EXPLICIT,
            )

    def _stream(self, url: str, staged: StagedSeries, accept: str) -> list[str]:
        """Parts of one WADO-RS response into ``staged``; the SOP Instance UIDs whose
        transfer syntax cannot be decoded here (not stored)."""
        undecodable: list[str] = []
        with self._attempt("GET", url, headers={"Accept": accept}) as rsp:
            boundary = boundary_of(rsp.headers.get("Content-Type", ""))
            try:
                for part in iter_parts(rsp.iter_bytes(), boundary):
                    if not self._add_part(staged, part):
                        undecodable.append(self._sop_uid(part))
            except httpx.TimeoutException as exc:
                raise _Retryable(f"timeout during download ({type(exc).__name__})") from exc
            except httpx.TransportError as exc:
                raise _Retryable(f"connection lost during download ({type(exc).__name__})") from exc
        return undecodable

    @staticmethod
    def _sop_uid(part: bytes) -> str:
        ds = pydicom.dcmread(io.BytesIO(part), stop_before_pixels=True)
        return str(ds.get("SOPInstanceUID", ""))

    @staticmethod
    def _add_part(staged: StagedSeries, part: bytes) -> bool:
        """Store one part; False (not stored) when its transfer syntax is not decodable."""
        try:
            ds = pydicom.dcmread(io.BytesIO(part), stop_before_pixels=True)
        except (pydicom.errors.InvalidDicomError, ValueError, EOFError) as exc:
            raise DicomInvalid(f"series {staged.series_uid}: a WADO-RS part is not DICOM") from exc
        if str(ds.get("SeriesInstanceUID", "")) != staged.series_uid:
            raise DicomInvalid(
                f"series {staged.series_uid}: WADO-RS returned instance "
                f"{ds.get('SOPInstanceUID', '?')} of another series"
            )
        syntax = str(getattr(ds, "file_meta", Dataset()).get("TransferSyntaxUID", ""))
        if syntax and syntax not in STORAGE_TRANSFER_SYNTAXES:
            return False
        staged.add_bytes(str(ds.get("SOPInstanceUID", "")), part)
        return True
