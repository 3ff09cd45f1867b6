"""Imaging sources (DICOM folder, DIMSE, DICOMweb), series selection and pixel handling."""
