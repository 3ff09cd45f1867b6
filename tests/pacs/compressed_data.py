"""Compressed and multi-frame copies of one MR series, made with real tools.

Every variant holds the same pixels as the uncompressed single-frame original (same
generator seed) under its own UIDs, then is encoded by the tool a PACS or scanner would
use: dcmtk's ``dcmcjpls``, ``dcmcjpeg`` and ``dcmcrle``, GDCM's ``gdcmconv`` (JPEG 2000;
dcmtk has no JPEG 2000 encoder), highdicom's Legacy Converted Enhanced MR conversion,
and Orthanc's own transcoding (``Transcode`` of ``/series/{id}/modify``).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from tests.pacs.mr_attrs import legacy_enhanced, mr_series
from tests.pacs.orthanc_server import OrthancServer

PATIENT_ID = "CMP-0001"
SERIES_KW = {"n_positions": 5, "size": 40, "seed": 11, "smooth": True}
ACQ = {"EchoTime": 1.2, "InversionTime": 300.0, "ScanningSequence": ["GR", "IR"]}


@dataclass(frozen=True)
class Variant:
    """One encoded copy: its SeriesDescription, the tool that made it, the transfer
    syntax it must arrive in, and whether decoding must reproduce the pixels exactly."""

    name: str
    tool: tuple[str, ...]  # command and options, input and output paths appended
    transfer_syntax: str
    lossless: bool
    enhanced: bool = False
    #: the syntaxes it may arrive in (default: ``transfer_syntax``, as stored)
    arrives_as: tuple[str, ...] = ()

    @property
    def received(self) -> tuple[str, ...]:
        return self.arrives_as or (self.transfer_syntax,)


VARIANTS = (
    Variant("jpegls", ("dcmcjpls",), "1.2.840.10008.1.2.4.80", True),
    Variant("jpegls-near", ("dcmcjpls", "+en"), "1.2.840.10008.1.2.4.81", False),
    Variant("rle", ("dcmcrle",), "1.2.840.10008.1.2.5", True),
    Variant("jpeg-lossless-sv1", ("dcmcjpeg",), "1.2.840.10008.1.2.4.70", True),
    # 12-bit JPEG Extended is not decodable here: the PACS transcodes it for us
    Variant(
        "jpeg-extended",
        ("dcmcjpeg", "+ee", "+sr"),  # +sr: keep the 12-bit value range
        "1.2.840.10008.1.2.4.51",
        False,
        arrives_as=("1.2.840.10008.1.2.1", "1.2.840.10008.1.2"),
    ),
    Variant("j2k", ("gdcmconv", "--j2k"), "1.2.840.10008.1.2.4.90", True),
    Variant(
        "j2k-lossy", ("gdcmconv", "--j2k", "--lossy", "-r", "5"), "1.2.840.10008.1.2.4.91", False
    ),
    Variant("enhanced", (), "1.2.840.10008.1.2.1", True, enhanced=True),
    Variant("enhanced-jpegls", ("dcmcjpls",), "1.2.840.10008.1.2.4.80", True, enhanced=True),
    Variant("enhanced-rle", ("dcmcrle",), "1.2.840.10008.1.2.5", True, enhanced=True),
)
#: Made by Orthanc from the uploaded original: (description, transfer syntax, lossless).
ORTHANC_TRANSCODED = (("orthanc-jpegls", "1.2.840.10008.1.2.4.80", True),)


def original() -> list[Dataset]:
    """The uncompressed single-frame series every variant is compared with."""
    return mr_series(**SERIES_KW, **ACQ, PatientID=PATIENT_ID, SeriesDescription="original")  # type: ignore[arg-type]


def _fresh_copy(description: str) -> list[Dataset]:
    series = original()
    uid = generate_uid()
    for ds in series:
        ds.SeriesInstanceUID = uid
        ds.SeriesDescription = description
    return series


def write_variant(variant: Variant, out: Path) -> list[Path]:
    """Encode ``variant`` under ``out``; the file paths."""
    folder = out / variant.name
    folder.mkdir(parents=True)
    series = _fresh_copy(variant.name)
    if variant.enhanced:
        enhanced = legacy_enhanced(series)
        enhanced.SeriesDescription = variant.name
        series = [enhanced]
    paths = []
    for k, ds in enumerate(series):
        raw = folder / f"raw{k:03d}.dcm"
        ds.save_as(raw, enforce_file_format=True)
        if not variant.tool:
            paths.append(raw)
            continue
        path = folder / f"{k:03d}.dcm"
        binary = shutil.which(variant.tool[0])
        if binary is None:
            raise RuntimeError(f"{variant.tool[0]} is not installed (.ci/apt-packages.txt)")
        subprocess.run([binary, *variant.tool[1:], str(raw), str(path)], check=True)
        got = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
        assert got == variant.transfer_syntax, (variant.name, got)
        paths.append(path)
    return paths


def upload(server: OrthancServer, paths: list[Path]) -> str:
    """POST the files to Orthanc; the Orthanc id of their series."""
    parent = ""
    for path in paths:
        rsp = server.rest("POST", "/instances", content=path.read_bytes())
        rsp.raise_for_status()
        parent = rsp.json()["ParentSeries"]
    return parent


def orthanc_transcode(server: OrthancServer, series_id: str, name: str, syntax: str) -> None:
    """A new series: Orthanc's copy of ``series_id`` transcoded to ``syntax``."""
    rsp = server.rest(
        "POST",
        f"/series/{series_id}/modify",
        json={"Transcode": syntax, "Replace": {"SeriesDescription": name}},
    )
    rsp.raise_for_status()
