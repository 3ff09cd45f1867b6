"""FHIR resources -> model inputs, driven by the clinical tables in ``cds/data/``.

:func:`map_record` turns a :class:`connectors.fhir.base.PatientRecord` into a
:class:`MappedPatient`; ``cds.pipeline.assemble`` adds the LGE image.  Each step lives in
its own module: ``observations`` (LOINC/UCUM/window/plausibility), ``conditions``
(``cond_*`` flags), ``medications`` (``med_*`` flags and the medication text), ``notes``
(the most recent notes) and ``record`` (demographics, text, basis).
"""

from cds.mapping._types import FeatureValue, MappedPatient
from cds.mapping.record import build_text, map_record

__all__ = ["FeatureValue", "MappedPatient", "build_text", "map_record"]
