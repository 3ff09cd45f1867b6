"""Synthetic heart-failure follow-up cohort (``mprtm synth``) and the seed CSV import.

:func:`cds.synth.generate.generate` writes FHIR R4 NDJSON, LGE cardiac MR DICOM series
and the truth files (outcomes, true risks, masks); :func:`cds.synth.seed_import.import_seed_csv`
turns the seed study's CSV format into the same layout.  The generating model is written
up in ``docs/synthetic-cohort.md``.
"""
