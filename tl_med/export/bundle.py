"""Export a model package as a MONAI bundle in the model-zoo layout.

::

    <out>/configs/metadata.json    valid against MONAI's meta_schema_20240725 (a copy ships here)
    <out>/configs/inference.json   LoadImaged → [harmonise] → Orientationd(RAS) → Spacingd →
                                   intensity → SlidingWindowInferer → Activationsd(softmax) →
                                   Invertd(nearest_interp=false) → AsDiscreted(argmax) → SaveImaged
    <out>/models/model.pt          the weights (a plain state dict)
    <out>/scripts/harmonise.py     only when the model was adapted with histogram standardisation
    <out>/docs/README.md

``python -m monai.bundle run --config_file <out>/configs/inference.json --bundle_root <out>
--dataset_dir D --output_dir O`` segments every ``D/imagesTs/*.nii.gz`` into
``O/<name>_seg.nii.gz`` on the input's own grid, with the same masks as ``tl-med predict``.

Bundle configs are code: MONAI evaluates their ``$`` expressions and ``_target_`` imports. Export
only versions a person has approved, and treat a bundle from elsewhere like any program.

Example:
    >>> # export_bundle(package_folder, Path("bundle"), name="tlmed-liver-east", version="3", dice=0.74)
"""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tl_med.models.spec import WEIGHTS_FILE, ModelSpec, load_package
from tl_med.models.zoo import network_definition

__all__ = ["export_bundle", "SCHEMA_URL", "SCHEMA_FILE", "inference_config", "metadata"]

SCHEMA_URL = ("https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/"
              "meta_schema_20240725.json")
SCHEMA_FILE = Path(__file__).with_name("meta_schema_20240725.json")  # MONAI's schema, for offline checks
RAS_LABELS = [["L", "R"], ["P", "A"], ["I", "S"]]


def _network(spec: ModelSpec) -> dict[str, Any]:
    """The ``network_def``: the very constructor arguments the pipeline built the network with."""
    return network_definition(spec.network)


def _intensity(spec: ModelSpec) -> dict[str, Any]:
    if spec.preprocess.intensity == "zscore":
        return {"_target_": "NormalizeIntensityd", "keys": "image", "channel_wise": True}
    return {"_target_": "ScaleIntensityRangePercentilesd", "keys": "image", "lower": 1, "upper": 99, "b_min": 0.0,
            "b_max": 1.0, "clip": True, "channel_wise": True}


def inference_config(spec: ModelSpec) -> dict[str, Any]:
    """``configs/inference.json``: the same chain as :class:`tl_med.inference.Predictor`."""
    harmonise = ([{"_target_": "scripts.harmonise.HarmoniseToSourced", "keys": "image",
                   "landmarks": list(spec.landmarks)}] if spec.landmarks else [])
    return {
        "imports": ["$import glob", "$import os", "$import numpy as np"],
        "bundle_root": ".",
        "output_dir": "$@bundle_root + '/eval'",
        "dataset_dir": "/workspace/data",
        "datalist": "$list(sorted(glob.glob(os.path.join(@dataset_dir, 'imagesTs', '*.nii*'))))",
        "device": "$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')",
        "network_def": _network(spec),
        "network": "$@network_def.to(@device)",
        "preprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "LoadImaged", "keys": "image", "reader": "NibabelReader", "image_only": True},
            {"_target_": "EnsureChannelFirstd", "keys": "image"},
            *harmonise,
            {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS", "labels": RAS_LABELS},
            {"_target_": "Spacingd", "keys": "image", "pixdim": list(spec.preprocess.spacing), "mode": "bilinear"},
            _intensity(spec),
            {"_target_": "EnsureTyped", "keys": "image", "track_meta": True},
        ]},
        "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]", "transform": "@preprocessing"},
        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
                       "num_workers": 0},
        "inferer": {"_target_": "SlidingWindowInferer", "roi_size": list(spec.preprocess.patch_size),
                    "sw_batch_size": spec.inference.sw_batch_size, "overlap": spec.inference.overlap,
                    "mode": spec.inference.mode, "padding_mode": "replicate"},
        "postprocessing": {"_target_": "Compose", "transforms": [
            {"_target_": "Activationsd", "keys": "pred", "softmax": True},
            {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
             "nearest_interp": False, "to_tensor": True},
            {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
            {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "output_postfix": "seg",
             "output_dtype": "$np.uint8", "resample": False, "separate_folder": False,
             # MONAI 1.6's NibabelWriter fails on a squeezed mask of some 4-D (multi-channel) inputs
             # (an oblique or sagittal affine becomes 2-D): those masks keep a trailing axis of 1
             "squeeze_end_dims": spec.n_channels == 1,
             "print_log": False},
        ]},
        "handlers": [{"_target_": "CheckpointLoader", "load_path": "$@bundle_root + '/models/model.pt'",
                      "load_dict": {"model": "@network"}, "map_location": "@device"}],
        "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@dataloader",
                      "network": "@network", "inferer": "@inferer", "postprocessing": "@postprocessing",
                      "val_handlers": "@handlers", "amp": False},
        "initialize": ["$monai.utils.set_determinism(seed=0)"],
        "run": ["$@evaluator.run()"],
    }


def _package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("nibabel", "pytorch-ignite", "fire"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def metadata(spec: ModelSpec, *, name: str, version: str, source: str, dice: float | None) -> dict[str, Any]:
    """``configs/metadata.json`` (MONAI's 20240725 schema)."""
    import monai

    patch = list(spec.preprocess.patch_size)
    fg = ", ".join(v for k, v in sorted(spec.labels.items(), key=lambda kv: int(kv[0])) if k != "0")
    ct = "CT" in spec.modalities()
    channel_def = dict(enumerate(spec.channels)) if spec.channels else {0: "image"}
    return {
        "schema": SCHEMA_URL, "version": f"{version}.0.0",
        "changelog": {f"{version}.0.0": f"exported by tl_med from {source}"},
        "monai_version": monai.__version__, "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__, "required_packages_version": _package_versions(),
        "supported_apps": {}, "name": name,
        "task": f"{spec.task} segmentation ({fg}) at site {spec.site} ({spec.modality})",
        "description": (f"A MONAI {_network(spec)['_target_'].split('.')[-1]} adapted by tl_med to site {spec.site}: "
                        "whole-image sliding-window inference "
                        f"at {spec.preprocess.spacing} mm, masks written on each input's own grid."),
        "authors": "tl_med pipeline", "copyright": "Owned by the hospital network that trained it",
        "data_source": f"de-identified studies of site {spec.site}", "data_type": "nibabel",
        "image_classes": (f"{spec.n_channels} channel(s) ({', '.join(channel_def.values())}; a multi-channel image is "
                          "one 4-D NIfTI, channels last), resampled and intensity-normalised per channel by the "
                          "bundle's preprocessing"),
        "label_classes": f"single channel, label values {json.dumps(spec.labels)}",
        "pred_classes": f"{spec.n_classes} channels (softmax), then argmax to label values",
        "eval_metrics": {"mean_dice": round(dice, 4)} if dice is not None else {},
        "intended_use": "Research use within the hospital network; a person approved this version in tl_med.",
        "references": [],
        "network_data_format": {
            "inputs": {"image": {"type": "image", "format": "hounsfield" if ct else "magnitude",
                                 "modality": spec.modality, "num_channels": spec.n_channels, "spatial_shape": patch,
                                 "dtype": "float32", "value_range": [], "is_patch_data": True,
                                 "channel_def": {str(k): v for k, v in channel_def.items()}}},
            "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": spec.n_classes,
                                 "spatial_shape": patch, "dtype": "float32", "value_range": [0, 1],
                                 "is_patch_data": True, "channel_def": dict(spec.labels)}},
        },
    }


def _readme(spec: ModelSpec, meta: dict[str, Any]) -> str:
    return f"""# {meta['name']} (MONAI bundle exported by tl_med)

{meta['description']}

- task: {meta['task']}; labels: {json.dumps(spec.labels)}
- preprocessing: RAS, {list(spec.preprocess.spacing)} mm, {spec.preprocess.intensity} intensity
  {'+ histogram standardisation to the source site (scripts/harmonise.py)' if spec.landmarks else ''}
- inference: sliding window {list(spec.preprocess.patch_size)}, overlap {spec.inference.overlap}, {spec.inference.mode}
- test Dice on the site's held-out studies (each on its own grid): {meta['eval_metrics'].get('mean_dice', 'n/a')}
- source: {meta['changelog'][meta['version']]}

```bash
python -m monai.bundle run --config_file configs/inference.json --bundle_root . \\
    --dataset_dir /data --output_dir /out     # segments /data/imagesTs/*.nii.gz into /out/<name>_seg.nii.gz
python -m monai.bundle verify_metadata --meta_file configs/metadata.json --filepath meta_schema_20240725.json
```

(`verify_metadata` downloads the schema to `--filepath` unless a copy is there; tl_med ships one as
`tl_med/export/meta_schema_20240725.json`.)

Needs: {', '.join(f'{k} {v}' for k, v in meta['required_packages_version'].items())}, monai {meta['monai_version']},
torch {meta['pytorch_version']}. Bundle configs are executable (MONAI evaluates `$` expressions): run
bundles only from sources you trust.
"""


def export_bundle(package: Path, out: Path, *, name: str, version: str, source: str,
                  dice: float | None = None) -> Path:
    """Write the bundle of a model package into ``out`` (created; must not exist or be empty)."""
    _, spec = load_package(package)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty")
    for sub in ("configs", "models", "docs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    meta = metadata(spec, name=name, version=version, source=source, dice=dice)
    (out / "configs" / "metadata.json").write_text(json.dumps(meta, indent=4) + "\n")
    (out / "configs" / "inference.json").write_text(json.dumps(inference_config(spec), indent=4) + "\n")
    if spec.classes:  # the bundle is the segmentation network: a multi-task model's class head stays out
        from tl_med.multitask import HEAD_NAME

        weights = torch.load(package / WEIGHTS_FILE, map_location="cpu", weights_only=True)
        torch.save({k: v for k, v in weights.items() if not k.startswith(HEAD_NAME + ".")}, out / "models" / "model.pt")
    else:
        shutil.copy2(package / WEIGHTS_FILE, out / "models" / "model.pt")
    if spec.landmarks:
        from tl_med.data import harmonise

        (out / "scripts").mkdir(exist_ok=True)
        (out / "scripts" / "__init__.py").write_text("")
        (out / "scripts" / "harmonise.py").write_text(inspect.getsource(harmonise))
    (out / "docs" / "README.md").write_text(_readme(spec, meta))
    return out
