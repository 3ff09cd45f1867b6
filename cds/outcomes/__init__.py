"""1-year outcome labels derived from a site's FHIR history (``mprtm outcomes``)."""
