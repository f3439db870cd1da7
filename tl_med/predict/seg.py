"""A DICOM Segmentation of a predicted mask, referencing the series it was predicted on.

Written with highdicom the way MONAI Deploy's SEG writer does: ``Segmentation(source_images,
pixel_array, BINARY, segment_descriptions, …, omit_empty_frames=True)``, one segment per
foreground label of the model's label map (AUTOMATIC, algorithm "tl_med <model>", family
Artificial Intelligence), frames on the source images' own planes. The SEG takes the patient and
study of its source series, as it must to be filed with them in the PACS; it is written only to
the output folder the user names and to the PACS, never to logs or tracking.

Example:
    >>> # ds = segmentation(series_geometry, mask, labels={"0": "background", "1": "liver"},
    >>> #                   model="tlmed-liver-east v3", series_number=901)
"""

from __future__ import annotations

import warnings

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

import tl_med
from tl_med.ingest.geometry import SeriesGeometry
from tl_med.own_segs import PREDICTION_MANUFACTURER

__all__ = ["segmentation", "segment_codes", "seg_frames"]


def segment_codes(name: str) -> tuple[hd.sr.CodedConcept | pydicom.sr.coding.Code, ...]:
    """(category, type) for a label name: SNOMED CT when it names a structure (``liver`` →
    Anatomical Structure / Liver), else a private code (scheme ``99TLMED``) that keeps the name."""
    key = "".join(part.title() for part in name.replace("_", " ").split())
    try:
        return codes.SCT.AnatomicalStructure, getattr(codes.SCT, key)
    except AttributeError:
        return codes.SCT.Tissue, hd.sr.CodedConcept(value=key[:16] or "LABEL", scheme_designator="99TLMED",
                                                  meaning=name[:64] or "label")


def seg_frames(geometry: SeriesGeometry, mask: np.ndarray) -> np.ndarray:
    """The mask (on the series' NIfTI grid: columns, rows, slices) as one (rows, columns) plane
    per source frame, in the order of ``geometry.frames``."""
    return np.stack([mask[:, :, k].T for k in range(mask.shape[2])]).astype(np.uint8)


def _sources(geometry: SeriesGeometry) -> list[pydicom.Dataset]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        paths = list(dict.fromkeys(f.path for f in geometry.frames))
        return [pydicom.dcmread(p) for p in paths]


def segmentation(geometry: SeriesGeometry, mask: np.ndarray, *, labels: dict[str, str], model: str,
                 series_number: int = 901) -> pydicom.Dataset:
    """The BINARY SEG of ``mask`` (label values of ``labels``) over the series of ``geometry``."""
    if geometry.correction is not None:
        raise ValueError("the series was resampled onto a regular grid, so its slices are not the mask's planes")
    algorithm = hd.AlgorithmIdentificationSequence(name=f"tl_med {model}"[:64], family=codes.DCM.ArtificialIntelligence,
                                                   version=tl_med.__version__)
    present = sorted({int(v) for v in np.unique(mask)} - {0})
    descriptions = []
    for value in sorted(int(k) for k in labels if int(k) != 0):
        category, kind = segment_codes(labels[str(value)])
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=value, segment_label=labels[str(value)][:64], segmented_property_category=category,
            segmented_property_type=kind, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm))
    if any(v > len(descriptions) for v in present):
        raise ValueError(f"mask values {present} outside the label map {sorted(labels)}")
    sources = _sources(geometry)
    # UIDs derived from the source series and the model: storing the same prediction again
    # replaces it in the PACS instead of adding a second SEG
    series_uid = pydicom.uid.generate_uid(entropy_srcs=["tl_med SEG series", sources[0].SeriesInstanceUID, model])
    sop_uid = pydicom.uid.generate_uid(entropy_srcs=["tl_med SEG instance", sources[0].SeriesInstanceUID, model])
    frames = seg_frames(geometry, mask)
    if len(sources) == 1 and len(frames) > 1:  # an enhanced multi-frame source: frames in its own order
        order = np.argsort([f.index or 0 for f in geometry.frames])
        frames = frames[order]
    return hd.seg.Segmentation(
        source_images=sources, pixel_array=frames, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=series_uid, series_number=series_number,
        sop_instance_uid=sop_uid, instance_number=1, manufacturer=PREDICTION_MANUFACTURER, manufacturer_model_name=model[:64],
        software_versions=tl_med.__version__, device_serial_number="none", content_label="TLMED",
        content_description=f"Automatic segmentation by {model}"[:64], omit_empty_frames=True)
