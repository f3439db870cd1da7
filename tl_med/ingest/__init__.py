"""Ingest: DICOM series and NIfTI labels in, de-identified NIfTI volumes and a manifest out."""
