"""FHIR R4 and PACS input/output. Knows nothing of the model or the application."""
