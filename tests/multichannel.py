"""Tiny two-channel, three-class datalist sites (a BraTS-like toy): a ``core`` bright in the first
channel (T1c) and an ``oedema`` shell around it bright only in the second (FLAIR), inside a head.

Neither channel alone separates the classes: the core is bright in both, the oedema only in
FLAIR, so a network must read both channels to get both classes right.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

LABELS = {"0": "background", "1": "core", "2": "oedema"}
CHANNELS = ("T1c", "FLAIR")
SHAPE = (40, 40, 30)
AFFINE = np.diag([3.0, 3.0, 4.0, 1.0])


def case(rng: np.random.Generator, gain: tuple[float, float] = (1.0, 1.0),
         offset: tuple[float, float] = (0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """(image (x, y, z, 2) float32, label (x, y, z) uint8) of one synthetic case; ``gain`` and
    ``offset`` per channel model a site's scanner."""
    grid = np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip(SHAPE, np.diag(AFFINE)[:3])],
                                indexing="ij"), axis=-1)
    centre = np.array(SHAPE) * np.diag(AFFINE)[:3] / 2 + rng.uniform(-10, 10, 3)
    head = np.linalg.norm((grid - np.array(SHAPE) * np.diag(AFFINE)[:3] / 2) / [55, 55, 55], axis=-1) < 1
    r = np.linalg.norm(grid - centre, axis=-1)
    core_r = rng.uniform(9, 14)
    label = np.zeros(SHAPE, np.uint8)
    label[head & (r < core_r + rng.uniform(8, 12))] = 2
    label[head & (r < core_r)] = 1
    t1c = np.where(head, 100.0, 0.0) + np.where(label == 1, 120.0, 0.0)
    flair = np.where(head, 80.0, 0.0) + np.where(label == 1, 60.0, 0.0) + np.where(label == 2, 140.0, 0.0)
    image = np.stack([t1c, flair], axis=-1) + rng.normal(0, 12, (*SHAPE, 2))
    image = image * np.array(gain) + np.array(offset)
    return image.astype(np.float32), label


def write_site(folder: Path, n_labelled: int, *, seed: int, n_unlabelled: int = 0, gain=(1.0, 1.0),
               offset=(0.0, 0.0), four_d: int = 1) -> Path:
    """A datalist site in ``folder``: one file per channel per case, except the first ``four_d``
    cases, stored as one 4-D NIfTI (channels last, the Decathlon's layout)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    training, test = [], []
    for k in range(n_labelled + n_unlabelled):
        image, label = case(rng, gain, offset)
        if k < four_d:
            nib.save(nib.Nifti1Image(image, AFFINE), folder / f"case{k}.nii.gz")
            item: dict = {"image": f"case{k}.nii.gz"}
        else:
            for c, name in enumerate(CHANNELS):
                nib.save(nib.Nifti1Image(image[..., c], AFFINE), folder / f"case{k}_{name}.nii.gz")
            item = {"image": [f"case{k}_{name}.nii.gz" for name in CHANNELS]}
        if k < n_labelled:
            nib.save(nib.Nifti1Image(label, AFFINE), folder / f"case{k}_seg.nii.gz")
            training.append({**item, "label": f"case{k}_seg.nii.gz"})
        else:
            test.append(item)
    path = folder / "datalist.json"
    path.write_text(json.dumps({"training": training, "test": test}, indent=1))
    return path


def write_sites_yaml(root: Path, *, n_source: int = 6, n_target: int = 5) -> Path:
    """``sites.yaml`` of a source and a target site (other gains and offsets per channel)."""
    write_site(root / "incoming" / "src", n_source, seed=1)
    write_site(root / "incoming" / "tgt", n_target, seed=2, n_unlabelled=1, gain=(0.6, 1.4), offset=(30.0, -10.0))
    path = root / "sites.yaml"
    path.write_text(
        "task: brats-toy\n"
        f"labels: {json.dumps(LABELS)}\n"
        f"channels: {json.dumps(list(CHANNELS))}\n"
        "sites:\n"
        "  - {name: src, role: source, datalist: incoming/src/datalist.json, modality: MR, "
        "split: {n_train: 3, n_val: 1}}\n"
        "  - {name: tgt, role: target, datalist: incoming/tgt/datalist.json, modality: MR, "
        "split: {n_train: 2, n_val: 1}}\n")
    return path
