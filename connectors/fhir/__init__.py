"""FHIR R4 sources (NDJSON folder, REST server) and write-back."""
