"""What the adaptation benchmarks (``label_efficiency.py``, ``zero_label.py``) share: their data,
their training settings, the source models and one method's run.

Data is either our synthetic sites (``north`` the source; ``east``, ``west``, ``south`` and the
dcm2niix-converted ``external`` datalist site as targets) or, with ``--sites-file``, any site
registry in the pipeline's ``sites.yaml`` format: its source site and its targets, DICOM folders
or NIfTI datalists, ingested (and de-identified) by the pipeline's own ingest, split as the file
says. Relative paths in the file resolve against ``--sites-root`` (default: the file's folder).
So a hospital measures label efficiency on its own sites with the command it uses for ours.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SYNTHETIC_TARGETS = ("east", "west", "south", "midland", "external")
N_TEST, N_VAL = 12, 4  # per synthetic target site


@dataclass(frozen=True)
class Sites:
    """The ingested benchmark sites: manifests by name, the source's name and the task."""

    task: str
    source: str
    manifests: dict[str, Path]
    targets: tuple[str, ...]


def add_options(ap: argparse.ArgumentParser, *, sites: str, pretrain_epochs: int) -> None:
    """The data and training options both benchmarks take."""
    ap.add_argument("--workspace", type=Path, help="keep data, cache and MLflow here (default: a temp dir)")
    ap.add_argument("--sites", default=None,
                    help=f"target sites, comma-separated (default: {sites}; with --sites-file: its targets)")
    ap.add_argument("--sites-file", type=Path,
                    help="a sites.yaml (one source, targets; DICOM or datalist) instead of our synthetic sites")
    ap.add_argument("--sites-root", type=Path,
                    help="folder that relative paths in --sites-file resolve against (default: the file's folder)")
    ap.add_argument("--epochs", type=int, default=30, help="epochs of --epoch-cases samples per run")
    ap.add_argument("--epoch-cases", type=int, default=24, help="cases per epoch (the k cases repeated)")
    ap.add_argument("--spacing", type=float, default=6.0, help="isotropic model spacing (mm)")
    ap.add_argument("--patch", type=int, default=32, help="cubic training patch and sliding window (voxels)")
    ap.add_argument("--studies", type=int, default=40, help="studies per synthetic target site")
    ap.add_argument("--spread", type=float, default=3.0,
                    help="anatomical variation of the synthetic liver (1 = the demo's; 3 makes a fixed location "
                         "prior weak)")
    ap.add_argument("--pretrain-epochs", type=int, default=pretrain_epochs)
    ap.add_argument("--source", metavar="URI[,URI]",
                    help="start every transfer from this source model instead of pretraining one: a registered "
                         "version in the workspace's MLflow (models:/<name>@champion, models:/<name>/<version>), "
                         "a MONAI bundle or a checkpoint; several, comma-separated, run side by side like "
                         "--pretrain-augment's sources; --pretrain-augment and --pretrain-epochs are then unused")
    ap.set_defaults(default_sites=sites)


def config(args: argparse.Namespace, pretrain_augment: str = "intensity", task: str = "liver"):
    """The demo profile at the benchmark's grid, batch norm (AdaBN needs it), on the CPU."""
    from tl_med.config import PipelineConfig

    base = PipelineConfig.profile("demo").model_dump()
    base["preprocess"].update(spacing=(args.spacing,) * 3, patch_size=(args.patch,) * 3)
    base["network"].update(norm="batch")
    base["pretrain"].update(epochs=args.pretrain_epochs, augment=pretrain_augment, alternate=None)  # its own sources
    base["adapt"].update(epochs=args.epochs)
    base["device"], base["task"] = "cpu", task
    return PipelineConfig.model_validate(base)


def prepare(args: argparse.Namespace, cfg, ws) -> Sites:
    """Ingest the source and the wanted targets; exits with one line when a site cannot serve."""
    from tl_med.errors import TlMedError
    from tl_med.stages import check_trainable

    try:
        sites = _registry_sites(args, ws) if args.sites_file else _synthetic_sites(args, cfg, ws)
        for name, manifest in sites.manifests.items():
            check_trainable(manifest, name)
    except TlMedError as err:
        sys.exit(f"error: {err}")
    return sites


def _wanted(args: argparse.Namespace, known: list[str]) -> list[str]:
    wanted = [s for s in (args.sites or ",".join(known)).split(",") if s]
    if unknown := [s for s in wanted if s not in known]:
        sys.exit(f"error: unknown target site(s) {', '.join(unknown)} (known: {', '.join(known)})")
    return wanted


def _registry_sites(args: argparse.Namespace, ws) -> Sites:
    from tl_med.ingest.site import ingest_site
    from tl_med.sites import load_sites

    if not args.sites_file.is_file():
        sys.exit(f"error: --sites-file {args.sites_file} does not exist")
    registry = load_sites(args.sites_file, (args.sites_root or args.sites_file.parent).resolve())
    wanted = _wanted(args, [t.name for t in registry.targets])
    manifests = {}
    for site in [registry.source, *(registry.get(n) for n in wanted)]:
        result = ingest_site(site, ws, **registry.task_fields())
        manifests[site.name] = result.manifest_path
    return Sites(registry.task, registry.source.name, manifests, tuple(wanted))


def _synthetic_sites(args: argparse.Namespace, cfg, ws) -> Sites:
    from tl_med.data.synthetic import SyntheticSite, generate_sites
    from tl_med.ingest.site import ingest_site
    from tl_med.sites import SiteConfig, SplitSpec

    wanted = _wanted(args, list(SYNTHETIC_TARGETS)) if args.sites else args.default_sites.split(",")
    synth = [SyntheticSite(name="north", profile="north", n_studies=40, spread=args.spread)]
    synth += [SyntheticSite(name=s, profile=s, n_studies=args.studies, spread=args.spread)
              for s in wanted if s != "external"]
    generate_sites(ws.incoming, synth, seed=cfg.seed)
    manifests = {}
    for spec in synth:
        split = SplitSpec(n_train=28, n_val=N_VAL) if spec.name == "north" else \
            SplitSpec(n_train=spec.n_studies - N_TEST - N_VAL, n_val=N_VAL)
        site = SiteConfig(name=spec.name, role="source" if spec.name == "north" else "target",
                          dicom_dir=ws.incoming / spec.name / "dicom", labels_dir=ws.incoming / spec.name / "labels",
                          split=split)
        manifests[spec.name] = ingest_site(site, ws, task="liver").manifest_path
    if "external" in wanted:
        site = SiteConfig(name="external", datalist=_external_site(ws, cfg.seed, args.studies, args.spread),
                          modality="CT", split=SplitSpec(n_train=args.studies - N_TEST - N_VAL, n_val=N_VAL))
        manifests["external"] = ingest_site(site, ws, task="liver").manifest_path
    return Sites("liver", "north", manifests, tuple(wanted))


def _external_site(ws, seed: int, n_studies: int, spread: float) -> Path:
    """Another CT population, converted by dcm2niix, as a decathlon datalist of NIfTI pairs."""
    import nibabel as nib
    import pydicom

    from tl_med.data.synthetic import SyntheticSite, generate_sites

    raw = ws.root / "external-raw"
    generate_sites(raw, [SyntheticSite(name="ext", profile="east", n_studies=n_studies, spread=spread)],
                   seed=seed + 101)
    dcm2niix = Path(sys.executable).parent / "dcm2niix"
    out = ws.root / "external"
    out.mkdir(exist_ok=True)
    items = []
    labels = {p.name.removesuffix(".nii.gz"): p for p in (raw / "ext" / "labels").iterdir()}
    for k, study in enumerate(sorted((raw / "ext" / "dicom").iterdir())):
        series = study / "series_1"
        tmp = out / f"tmp{k}"
        tmp.mkdir(exist_ok=True)
        subprocess.run([str(dcm2niix), "-z", "y", "-f", "img", "-o", str(tmp), str(series)], check=True,
                       capture_output=True)
        uid = pydicom.dcmread(next(series.iterdir()), stop_before_pixels=True).SeriesInstanceUID
        image = nib.as_closest_canonical(nib.load(tmp / "img.nii.gz"))
        label = nib.as_closest_canonical(nib.load(labels[uid]))
        nib.save(image, out / f"case{k:03d}_img.nii.gz")
        nib.save(nib.Nifti1Image(label.get_fdata().astype("uint8"), image.affine), out / f"case{k:03d}_seg.nii.gz")
        shutil.rmtree(tmp)
        items.append({"image": f"case{k:03d}_img.nii.gz", "label": f"case{k:03d}_seg.nii.gz"})
    (out / "datalist.json").write_text(json.dumps({"training": items}, indent=1))
    return out / "datalist.json"


def site_data(sites: Sites, site: str) -> dict:
    """A target's validation and test splits, the source's training split and label volumes, and
    how a model for the site is applied (task, modality, label map)."""
    from tl_med.manifests import datalist, load_manifest
    from tl_med.quality import label_volumes_ml

    manifest = load_manifest(sites.manifests[site])
    source_train = datalist(sites.manifests[sites.source], "training")
    return {"validation": datalist(sites.manifests[site], "validation"),
            "test": datalist(sites.manifests[site], "test"), "source_train": source_train,
            "source_volumes": label_volumes_ml(source_train),
            "spec": {"task": sites.task, "site": site, "modality": manifest.modality.get("0", "?"),
                     "labels": dict(manifest.labels),
                     "channels": tuple(manifest.modality.values()) if len(manifest.modality) > 1 else ()}}


def sources(args: argparse.Namespace, ws, tracker, sites: Sites, variants: list[str],
            start: float) -> dict[str, dict]:
    """The source models' weights, by name: with ``--source``, those models (each named by the
    augmentation its registered version records, else ``given``); otherwise one per pretraining
    augmentation in ``variants``, trained by the pipeline's own stage."""
    from tl_med.stages import StageContext, pretrain_source

    if args.source:
        states = {}
        for uri in (u for u in args.source.split(",") if u):
            name, state = _given_source(uri, ws, tracker)
            if name in states:
                name = f"{name}-{len(states) + 1}"
            states[name] = state
        return states
    states = {}
    for variant in variants:
        source = pretrain_source(StageContext(ws=ws, cfg=config(args, variant, sites.task),
                                              tracker=tracker, trigger="benchmark"),
                                 sites.source, sites.manifests[sites.source])
        states[variant] = tracker.load_state_dict(source.weights_uri)
        print(f"source model ({variant} augmentation): test Dice {source.test_dice:.3f} at {sites.source} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    return states


def _given_source(source: str, ws, tracker) -> tuple[str, dict]:
    """One ``--source``: its name (the augmentation its registered version records, else
    ``given``) and weights; a bad source is one ``error:`` line."""
    from tl_med.errors import InputError
    from tl_med.models.pretrained import load_state
    from tl_med.zero_label import source_augmentation

    try:
        state = load_state(source, tracker, ws)
    except InputError as exc:
        sys.exit(f"error: --source: {exc}")
    name = source_augmentation(source, tracker.client) or "given"
    print(f"source model: {source} ({name if name != 'given' else 'unrecorded'} augmentation), not retrained",
          flush=True)
    return name, state


def window(cfg):
    from tl_med.inference import window_inferer

    return window_inferer(cfg.preprocess.patch_size, cfg.inference)


def train_scratch(cfg, make, labelled, validation, seed, device, network=None):
    """A fresh ``network`` (default: the config's) trained on ``labelled``, and its fit."""
    import torch

    from tl_med.models.zoo import build_network
    from tl_med.train import fit, seed_everything

    seed_everything(seed)
    model = build_network(network or cfg.network)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.pretrain.lr, weight_decay=cfg.adapt.weight_decay)
    result = fit(model, make(labelled, train=True, batch_size=cfg.adapt.batch_size),
                 make(validation, train=False) if validation else None, opt, epochs=cfg.adapt.epochs, device=device,
                 infer=window(cfg), loop=cfg.adapt)
    return model, result


def run_method(cfg, make, method, k_items, data, state, seed, device, da_steps) -> tuple[float, float, float]:
    """Train (or not) one method on ``k_items`` and return its test Dice on the images' own grids,
    the label-free estimate on the same images, and the best validation Dice that chose its
    checkpoint (NaN when nothing was validated): what a site with these labels could see.

    ``scratch``: a fresh network; ``source_only``: the source model as it is; ``da``: fine-tuning
    plus ``da_steps``; any other name is an adaptation strategy from the source model."""
    from tl_med.adapt.run import AdaptData, adapt_model
    from tl_med.inference import Predictor, evaluate_native
    from tl_med.models.pretrained import transfer_weights
    from tl_med.models.spec import ModelSpec
    from tl_med.models.zoo import build_network
    from tl_med.quality import estimate_quality
    from tl_med.train import seed_everything

    landmarks, fitted = None, None
    network = ModelSpec.from_config(cfg, **data["spec"]).network  # fitted to the task's channels and labels
    if method == "scratch":
        model, fitted = train_scratch(cfg, make, k_items, data["validation"], seed, device, network)
    else:
        seed_everything(seed)
        model = build_network(network)
        transfer_weights(model, state)
        if method != "source_only":
            strategy = "finetune" if method == "da" else method
            steps = da_steps if method == "da" else ()
            acfg = cfg.adapt.model_copy(update={"strategy": strategy, "steps": steps})
            outcome = adapt_model(model, state, acfg, AdaptData(
                labelled=k_items, validation=data["validation"] if k_items else [],
                unlabelled=data["unlabelled"], source_train=data["source_train"]), make, device,
                infer=window(cfg))
            landmarks, fitted = outcome.landmarks, outcome.fit
    spec = ModelSpec.from_config(cfg, **data["spec"], landmarks=landmarks)
    predictor = Predictor(model, spec, device)
    metrics, _ = evaluate_native(predictor, data["test"])
    images = [{k: v for k, v in it.items() if k != "label"} for it in data["test"]]
    estimate = estimate_quality(predictor, images, data["source_volumes"]).summary()
    val = fitted.best_val_dice if fitted is not None and fitted.best_val_dice is not None else float("nan")
    return metrics.summary()["dice"], estimate["estimated_dice"], val


def code() -> str:
    from tl_med.tracking import code_version

    return code_version()
