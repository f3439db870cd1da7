"""How tl_med marks the DICOM SEGs it predicts, so that the rest of tl_med recognises them.

A SEG that tl_med writes (:mod:`tl_med.predict.seg`) and stores back into a PACS carries
``Manufacturer`` :data:`PREDICTION_MANUFACTURER`. Ingest skips such a SEG (a prediction is never a
reference label to train on), and the PACS watcher does not call a study new data when all it
gained is such a SEG (:mod:`tl_med.pacs.changes`).

Example:
    >>> is_prediction("SEG", "tl_med"), is_prediction("SEG", "Siemens"), is_prediction("CT", "tl_med")
    (True, False, False)
"""

from __future__ import annotations

__all__ = ["PREDICTION_MANUFACTURER", "is_prediction"]

PREDICTION_MANUFACTURER = "tl_med"


def is_prediction(modality: str | None, manufacturer: str | None) -> bool:
    """Whether a series (its Modality and Manufacturer) is a segmentation tl_med predicted."""
    return (modality or "").strip() == "SEG" and (manufacturer or "").strip() == PREDICTION_MANUFACTURER
