"""Typed, frozen configuration, validated at the edge and logged whole to MLflow.

Configuration is data: built once from YAML/CLI, never mutated, identified by a hash.

Example:
    >>> cfg = PipelineConfig.profile("tiny")
    >>> cfg.preprocess.patch_size
    (16, 16, 16)
    >>> len(cfg.config_hash())
    12
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from collections.abc import Callable
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from tl_med.catalogue import CLASSIFIERS, NETWORKS, AugmentName, ClassifierName, NetworkName, StepName, StrategyName, needs_batch_norm, patch_divisor, untrained
from tl_med.errors import ConfigError

__all__ = [
    "LoopConfig",
    "PROFILES",
    "PreprocessConfig",
    "InferenceConfig",
    "NetworkConfig",
    "TrainConfig",
    "AdaptConfig",
    "ClassifierConfig",
    "PipelineConfig",
    "FrozenModel",
    "flatten",
    "load_yaml_model",
]

Baseline = Literal["source_only", "scratch"]
# Named presets: ``demo`` (4 mm, 48³ patches: fits 10 min on 2 CPU cores), ``tiny`` (8 mm, 16³:
# tests), ``realistic`` (1.5 x 1.5 x 2 mm, 96³ patches, a deeper UNet: for a machine with a GPU).
PROFILES = ("demo", "tiny", "realistic")


class FrozenModel(BaseModel):
    """Base of every config/record model: immutable, unknown fields are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")



class PreprocessConfig(FrozenModel):
    """MONAI preprocessing: reorient to RAS, resample to ``spacing``, normalise intensity. The
    whole image is kept; training samples ``patches_per_volume`` random patches of ``patch_size``
    per image (half centred on the label's foreground, half anywhere), and inference slides a
    window of the same size over the whole image."""

    spacing: tuple[float, float, float] = (4.0, 4.0, 4.0)
    patch_size: tuple[int, int, int] = (48, 48, 48)
    patches_per_volume: int = Field(1, ge=1)
    intensity: Literal["zscore", "percentile"] = "zscore"


class InferenceConfig(FrozenModel):
    """Whole-image sliding-window inference (``monai.inferers.SlidingWindowInferer``): windows of
    the patch size, overlapping by ``overlap``, blended with ``mode`` weights."""

    overlap: float = Field(0.25, ge=0.0, lt=1.0)
    sw_batch_size: int = Field(4, ge=1)
    mode: Literal["gaussian", "constant"] = "gaussian"


class NetworkConfig(FrozenModel):
    """A ``monai.networks.nets`` network (``name``, one of :data:`tl_med.catalogue.NETWORKS`) and the
    arguments its builder (:mod:`tl_med.models.zoo`) maps onto that network's constructor:
    ``channels`` per level (SegResNet: ``channels[0]`` initial filters, one level per entry;
    SwinUNETR: ``channels[0]`` is the feature size) and ``strides`` between levels."""

    name: NetworkName = "UNet"
    bundle: Path | None = None  # name "bundle": the MONAI bundle whose network_def is built
    definition: dict[str, Any] | None = None  # name "bundle": that network_def, read once (self-contained)
    channels: tuple[int, ...] = (8, 16, 32, 64)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = Field(1, ge=0)  # UNet only
    # set from the task (sites.yaml channels and labels) by ModelSpec.from_config
    in_channels: int = Field(1, ge=1)
    out_channels: int = Field(2, ge=2)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    norm: Literal["instance", "batch"] = "instance"  # AdaBN and TENT need "batch"

    @model_validator(mode="before")
    @classmethod
    def _read_bundle(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("name") == "bundle" and not data.get("definition"):
            if not data.get("bundle"):
                raise ValueError("network.name bundle needs network.bundle: the bundle's folder")
            from tl_med.models.bundle_network import read_network_def  # monai.bundle: only when used

            data = {**data, "definition": read_network_def(Path(data["bundle"]))}
        return data

    @model_validator(mode="after")
    def _fits(self) -> "NetworkConfig":
        if self.name == "bundle":
            return self
        if self.definition is not None or self.bundle is not None:
            raise ValueError(f"network.bundle and network.definition apply to name bundle, not {self.name}")
        info = NETWORKS[self.name]
        if len(self.strides) != len(self.channels) - 1 and self.name in ("UNet", "DynUNet", "AttentionUnet"):
            raise ValueError(f"{self.name} needs one stride per level after the first: {len(self.channels)} "
                             f"channels, {len(self.strides)} strides")
        if info.batch_norm_only and self.norm != "batch":
            raise ValueError(f"{self.name} is built with batch norm only: set network.norm: batch")
        if self.channels[0] % info.feature_multiple:
            raise ValueError(f"{self.name} needs channels[0] to be a multiple of {info.feature_multiple}")
        return self


def _augment_kind(value: Any) -> Any:
    """``true``/``false`` (older configs) mean ``intensity``/``none``."""
    return {True: "intensity", False: "none"}.get(value, value) if isinstance(value, bool) else value


# the kinds are listed in tl_med.catalogue.AUGMENTATIONS (contrast: tl_med.data.contrast)
Augment = Annotated[AugmentName, BeforeValidator(_augment_kind)]


class LoopConfig(FrozenModel):
    """How a training loop runs (source pretraining and site adaptation alike).

    ``lr_schedule``: ``constant``, ``cosine`` (annealed to 0 over the epochs after the warm-up) or
    ``plateau`` (``ReduceLROnPlateau``: halved at the ``plateau_patience + 1``-th epoch in a row whose
    validation Dice is not above the best by more than 0.01 % of it); the
    first ``warmup_epochs`` ramp the rate up linearly. ``early_stopping``: stop after that many
    epochs without a better validation Dice (0: never); the best-validation weights are kept
    either way. ``grad_accumulation``: batches per optimizer step. ``amp``: mixed precision and
    channels-last memory on CUDA (ignored on the CPU, where results stay bit-for-bit reproducible).
    ``class_weight``: a network with a classification head (the ``multitask`` strategy) adds that
    weight times the cross-entropy of its case-level classes to the segmentation loss.
    """

    lr_schedule: Literal["constant", "cosine", "plateau"] = "constant"
    warmup_epochs: int = Field(0, ge=0)
    plateau_patience: int = Field(5, ge=1)
    early_stopping: int = Field(0, ge=0)
    grad_accumulation: int = Field(1, ge=1)
    amp: bool = True
    class_weight: float = Field(0.5, ge=0.0)  # multi-task: weight of the classification loss


class TrainConfig(LoopConfig):
    """Supervised training of the source model.

    ``alternate``: a second source model, trained the same way with this augmentation instead
    (``None``: none). A target site with labelled cases adapts from both and keeps the adaptation
    with the better validation Dice; source-only baselines and zero-label runs use the first.
    """

    epochs: int = Field(50, ge=1)
    batch_size: int = Field(4, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    # contrast: a source that survives another tissue contrast (README, "Contrast augmentation by default")
    augment: Augment = "contrast"
    # intensity: the better start where the contrast source fine-tunes worse (README, "Two sources")
    alternate: Augment | None = "intensity"

    @model_validator(mode="after")
    def _distinct(self) -> "TrainConfig":
        if self.alternate == self.augment:
            raise ValueError(f"pretrain.alternate is pretrain.augment ({self.augment}) again: set it to another "
                             "augmentation, or to null for one source")
        return self


Strategy = StrategyName  # names and descriptions: tl_med.catalogue
Step = StepName


class AdaptConfig(LoopConfig):
    """Adapting the pretrained model to one target site: one strategy plus optional steps.

    Strategies (how the labelled target cases train the network):

    * ``finetune``: every layer, with layer-wise learning rates ``lr * layer_decay**d`` where ``d``
      counts blocks back from the output (``layer_decay = 1``: one rate for all);
    * ``feature_extraction``: the encoder (down path and bottleneck) frozen, the decoder trained;
    * ``progressive``: blocks unfrozen from the output towards the input, one more every
      ``unfreeze_every`` epochs.

    Regularisers against forgetting: ``l2sp`` (weight of the L2-SP pull towards the pretrained
    weights) and ``ewc`` (weight of elastic weight consolidation, Fisher from the source site).

    Steps: the domain-adaptation steps of :data:`tl_med.catalogue.STEPS`, composed in that
    order; they use unlabelled target images, never the test split.

    ``n_labelled`` caps the labelled target training cases (``None``: all; ``0``: none, then only
    the steps adapt the model).

    ``min_transfer_share``: the least share of the network's parameters the pretrained weights must
    fill (same key and shape); below it the site is refused before anything is logged.
    """

    strategy: Strategy = "finetune"
    steps: tuple[Step, ...] = ()
    epochs: int = Field(40, ge=1)
    batch_size: int = Field(2, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-5, ge=0)
    n_labelled: int | None = Field(None, ge=0)
    augment: Augment = "intensity"
    layer_decay: float = Field(1.0, gt=0, le=1)
    unfreeze_every: int = Field(5, ge=1)
    l2sp: float = Field(0.0, ge=0)
    ewc: float = Field(0.0, ge=0)
    coral_weight: float = Field(1.0, ge=0)
    consistency_weight: float = Field(1.0, ge=0)  # mean_teacher
    teacher_ema: float = Field(0.99, ge=0, lt=1)
    pseudo_threshold: float = Field(0.9, gt=0.5, le=1)
    tent_steps: int = Field(10, ge=1)  # the test-time steps' (tent, consistency_tta) optimizer steps
    tent_lr: float = Field(1e-4, gt=0)  # and learning rate
    inpainting_steps: int = Field(100, ge=1)  # inpainting's optimizer steps (at adapt.lr)
    negative_transfer_margin: float = Field(0.02, ge=0)
    min_transfer_share: float = Field(0.5, ge=0, le=1)

    @field_validator("steps")
    @classmethod
    def _unique(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(v)) != len(v):
            raise ValueError(f"steps must not repeat, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _trained_after(self) -> "AdaptConfig":
        if self.n_labelled == 0 and (lonely := untrained(self.steps, 0)):
            raise ValueError(f"adapt.steps {lonely} need supervised training after them: give target labels or add "
                             "a step that trains on the source's labels (coral, mean_teacher)")
        return self


class ClassifierConfig(FrozenModel):
    """Case-level classification (``tl-med classify``): a MONAI classifier of the whole
    preprocessed image, centre-cropped or padded to ``input_size`` at the preprocessing spacing (so
    sizes stay physical).

    The source classifier trains ``epochs`` on the source site (from ``pretrained``, a local
    checkpoint such as MedicalNet's ResNet weights, when given); the target's labelled cases train
    the adapted one (``adapt.strategy`` with its layer-wise rates, from the source classifier) and the
    from-scratch baseline for ``adapt_epochs``. ``negative_transfer_margin`` is in AUC.
    """

    network: ClassifierName = "DenseNet121"
    width: int = Field(64, ge=2)  # features at the first level: 64 for the standard networks
    input_size: tuple[int, int, int] = (48, 48, 48)
    epochs: int = Field(30, ge=1)
    adapt_epochs: int = Field(30, ge=1)
    batch_size: int = Field(4, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    augment: Augment = "intensity"
    pretrained: str | None = None
    negative_transfer_margin: float = Field(0.02, ge=0)

    @model_validator(mode="after")
    def _fits_network(self) -> "ClassifierConfig":
        least = CLASSIFIERS[self.network].min_input
        if min(self.input_size) < least:
            raise ValueError(f"classifier.input_size {list(self.input_size)}: {self.network} needs at least {least} "
                             "voxels per axis")
        return self


class PipelineConfig(FrozenModel):
    """Everything that decides a pipeline's result, apart from the data."""

    task: str = "liver"
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    preprocess: PreprocessConfig = PreprocessConfig()
    inference: InferenceConfig = InferenceConfig()
    network: NetworkConfig = NetworkConfig()
    pretrain: TrainConfig = TrainConfig()
    adapt: AdaptConfig = AdaptConfig()
    classifier: ClassifierConfig = ClassifierConfig()
    baselines: tuple[Baseline, ...] = ("source_only", "scratch")

    @model_validator(mode="after")
    def _norm_for_steps(self) -> "PipelineConfig":
        needs_bn = needs_batch_norm(self.adapt.steps)
        if needs_bn and self.network.norm != "batch" and self.network.name != "bundle":
            raise ValueError(f"adapt.steps {needs_bn} need batch normalisation: set network.norm: batch")
        n = self.network
        divisor = patch_divisor(n.name, n.channels, n.strides)
        if any(p % divisor for p in self.preprocess.patch_size):
            raise ValueError(f"preprocess.patch_size {list(self.preprocess.patch_size)} must be divisible by "
                             f"{divisor} for network {n.name}")
        if n.norm == "instance" and min(self.preprocess.patch_size) < 2 * divisor:
            raise ValueError(f"preprocess.patch_size {list(self.preprocess.patch_size)} leaves one voxel at the "
                             f"bottleneck of {n.name}, where instance norm cannot work: use patches of at least "
                             f"{2 * divisor} or network.norm: batch")
        return self

    @field_validator("task")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not v or not all(c.isalnum() or c in "-_" for c in v):
            raise ValueError("task must be a non-empty slug of letters, digits, '-' or '_'")
        return v

    @classmethod
    def profile(cls, name: str, **overrides: Any) -> "PipelineConfig":
        """Named presets (see :data:`PROFILES`)."""
        if name == "demo":
            base = cls()
        elif name == "tiny":
            base = cls(
                preprocess=PreprocessConfig(spacing=(8.0, 8.0, 8.0), patch_size=(16, 16, 16), patches_per_volume=2),
                network=NetworkConfig(channels=(4, 8, 16), strides=(2, 2), num_res_units=0),
                pretrain=TrainConfig(epochs=2, batch_size=2, alternate=None),  # one source: the fastest run
                adapt=AdaptConfig(epochs=2, batch_size=2),
                classifier=ClassifierConfig(network="ResNet10", width=4, input_size=(16, 16, 16), epochs=2,
                                            adapt_epochs=2, batch_size=2),
            )
        elif name == "realistic":
            base = cls(
                preprocess=PreprocessConfig(spacing=(1.5, 1.5, 2.0), patch_size=(96, 96, 96), patches_per_volume=2),
                network=NetworkConfig(channels=(16, 32, 64, 128, 256), strides=(2, 2, 2, 2), num_res_units=2),
                pretrain=TrainConfig(epochs=300, batch_size=2, lr=1e-3),
                adapt=AdaptConfig(epochs=150, batch_size=2, lr=3e-4),
                inference=InferenceConfig(overlap=0.5, sw_batch_size=4),
            )
        else:
            raise ConfigError(f"unknown profile '{name}' (known: {', '.join(PROFILES)})")
        return base.model_copy(update=overrides) if overrides else base

    def with_network(self, name: str) -> "PipelineConfig":
        """This configuration with network ``name``, fitted to what that network needs: SwinUNETR's
        feature size (a multiple of 12, near ``channels[0]``), AttentionUnet's batch norm, and patches
        rounded up to the network's downsampling (twice it with instance norm)."""
        if name == "bundle":
            raise ValueError("network bundle needs network.bundle, the bundle's folder: set both in a --config file")
        if name not in NETWORKS:
            raise ValueError(f"unknown network '{name}' (known: {', '.join(n for n in NETWORKS if n != 'bundle')})")
        net = {**self.network.model_dump(), "name": name, "bundle": None, "definition": None}
        if name == "SwinUNETR":
            net["channels"], net["strides"] = (12 * max(1, -(-self.network.channels[0] // 12)),), ()
        if NETWORKS[name].batch_norm_only:
            net["norm"] = "batch"
        divisor = patch_divisor(name, tuple(net["channels"]), tuple(net["strides"]))
        least = 2 * divisor if net["norm"] == "instance" else divisor
        patch = tuple(max(least, -(-p // divisor) * divisor) for p in self.preprocess.patch_size)
        return PipelineConfig.model_validate({**self.model_dump(), "network": net,
                                              "preprocess": {**self.preprocess.model_dump(), "patch_size": patch}})

    def with_task(self, task: str) -> "PipelineConfig":
        """This configuration for the site registry's task (``sites.yaml`` names it; models are
        registered as ``tlmed-<task>-<site>``)."""
        return self if task == self.task else PipelineConfig.model_validate({**self.model_dump(), "task": task})

    def config_hash(self) -> str:
        """Short sha256 of the canonical JSON form: the config's identity."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    @classmethod
    def from_yaml(cls, path: Path) -> "PipelineConfig":
        """A config file; a relative ``network.bundle`` is relative to the file's folder."""
        def anchor(raw: Any) -> Any:
            net = raw.get("network") if isinstance(raw, dict) else None
            if isinstance(net, dict) and isinstance(net.get("bundle"), str) and not Path(net["bundle"]).is_absolute():
                raw = {**raw, "network": {**net, "bundle": str((Path(path).parent / net["bundle"]).resolve())}}
            return raw

        return load_yaml_model(cls, path, prepare=anchor)


def load_yaml_model(model: type[BaseModel], path: Path, prepare: Callable[[Any], Any] = lambda raw: raw) -> Any:
    """Load and validate a YAML file (``prepare`` may adjust the raw data first); errors name the
    file and the first bad field."""
    try:
        raw = prepare(yaml.safe_load(Path(path).read_text()) or {})
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "<root>"
        raise ConfigError(f"{path}: field '{field}': {err['msg']}") from None


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts to dotted keys (for MLflow params).

    Example:
        >>> flatten({"a": {"b": 1}, "c": [1, 2]})
        {'a.b': 1, 'c': '[1, 2]'}
    """
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(list(value))
        else:
            out[name] = value
    return out
