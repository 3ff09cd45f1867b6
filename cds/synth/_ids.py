"""Deterministic identifiers for the synthetic cohort.

Every id is a pure function of the seed and the patient index, so the same seed gives
the same ids (and the same bytes), and two cohorts with different seeds can live side by
side on one FHIR server or PACS without clashing.
"""

from __future__ import annotations

import hashlib

from pydicom.uid import generate_uid

#: Identifier system of the synthetic medical record number (== DICOM PatientID).
MRN_SYSTEM = "urn:mprtm:synthetic:mrn"
#: The Group every follow-up patient belongs to (cohort ``group:hf-followup``).
GROUP_ID = "hf-followup"


def cohort_tag(seed: int) -> str:
    """A short hex tag for ``seed`` that prefixes every logical id of the cohort."""
    return hashlib.sha256(f"mprtm-synth:{seed}".encode()).hexdigest()[:8]


def patient_id(seed: int, index: int) -> str:
    """The FHIR Patient logical id of patient ``index`` (0-based)."""
    return f"hf{cohort_tag(seed)}-{index:06d}"


def mrn(seed: int, index: int) -> str:
    """The medical record number (Patient.identifier value and DICOM PatientID)."""
    digest = hashlib.sha256(f"mprtm-synth-mrn:{seed}:{index}".encode()).digest()
    return f"SYN{int.from_bytes(digest[:5], 'big') % 10**10:010d}"


def dicom_uid(seed: int, index: int, *parts: object) -> str:
    """A DICOM UID derived from seed, patient and ``parts`` (pydicom's hashed UID root)."""
    return str(generate_uid(entropy_srcs=["mprtm-synth", str(seed), str(index), *map(str, parts)]))
