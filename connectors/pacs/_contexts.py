"""Presentation contexts we propose and accept for MR retrieval and storage.

SOP class UIDs are spelled out (PS3.4 Annex B and C; PS3.6 Annex A) because pynetdicom
generates its ``sop_class`` names at run time, out of sight of the type checker.
"""

from __future__ import annotations

from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import build_context, build_role
from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation
from pynetdicom.presentation import PresentationContext

VERIFICATION = UID("1.2.840.10008.1.1")
FIND_MODEL = UID("1.2.840.10008.5.1.4.1.2.2.1")  # Study Root Q/R - FIND
MOVE_MODEL = UID("1.2.840.10008.5.1.4.1.2.2.2")  # Study Root Q/R - MOVE
GET_MODEL = UID("1.2.840.10008.5.1.4.1.2.2.3")  # Study Root Q/R - GET

#: Storage SOP classes an LGE series can arrive as.
MR_STORAGE_CLASSES: tuple[UID, ...] = (
    UID("1.2.840.10008.5.1.4.1.1.4"),  # MR Image Storage
    UID("1.2.840.10008.5.1.4.1.1.4.1"),  # Enhanced MR Image Storage
    UID("1.2.840.10008.5.1.4.1.1.4.3"),  # Enhanced MR Color Image Storage
    UID("1.2.840.10008.5.1.4.1.1.4.4"),  # Legacy Converted Enhanced MR Image Storage
)

#: Every transfer syntax the pixel pipeline decodes (pydicom natively, or its GDCM
#: handler from the ``python-gdcm`` dependency), uncompressed first.  Instances arrive as
#: the PACS stores them, without a lossy or costly transcoding on its side.  JPEG Extended
#: (12-bit, 1.2.840.10008.1.2.4.51) is left out: GDCM's Python wheel and Pillow cannot
#: decode its 12-bit samples (the one decoder that can, libjpeg, is GPL-3.0), so the PACS
#: is left to transcode such instances to one of these.
STORAGE_TRANSFER_SYNTAXES: list[str] = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    JPEGLosslessSV1,
    JPEGLossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEG2000Lossless,
    JPEG2000,
    RLELossless,
    JPEGBaseline8Bit,
]


def storage_contexts() -> list[PresentationContext]:
    """One context per (MR storage class, transfer syntax): a C-STORE sender (the PACS in
    a C-GET) picks the context of the syntax it holds the instance in."""
    return [
        build_context(uid, [ts]) for uid in MR_STORAGE_CLASSES for ts in STORAGE_TRANSFER_SYNTAXES
    ]


def echo_contexts() -> list[PresentationContext]:
    return [build_context(VERIFICATION)]


def find_contexts() -> list[PresentationContext]:
    return [build_context(FIND_MODEL)]


def move_contexts() -> list[PresentationContext]:
    return [build_context(FIND_MODEL), build_context(MOVE_MODEL)]


def get_contexts() -> tuple[list[PresentationContext], list[SCP_SCU_RoleSelectionNegotiation]]:
    """C-GET needs storage contexts with us in the SCP role (SCP/SCU role selection)."""
    contexts = [build_context(FIND_MODEL), build_context(GET_MODEL)]
    contexts += storage_contexts()
    roles = [build_role(uid, scp_role=True) for uid in MR_STORAGE_CLASSES]
    return contexts, roles
