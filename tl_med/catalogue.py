"""One place for every adaptation name a user can pick: strategies, domain-adaptation steps and
training augmentations, each with its one-line description and the facts other code needs.

Config validation (:mod:`tl_med.config`), ``sites.yaml`` (:mod:`tl_med.sites`), the CLI's help,
the ``site-retrain`` flow's parameters and the pipeline stages all derive from these tables, so
adding a step is an entry here, its code in ``tl_med/adapt`` and its test. This module imports
nothing heavy (no torch): configuration loads it.

Example:
    >>> "self_training" in STEPS and STEPS["adabn"].needs_batch_norm
    True
    >>> describe(STRATEGIES)[:24]
    'finetune (every layer, w'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["StepInfo", "STEPS", "ZERO_LABEL_STEPS", "STRATEGIES", "AUGMENTATIONS", "NetworkInfo", "NETWORKS", "ClassifierInfo", "CLASSIFIERS", "CLASSIFIER_STRATEGIES", "StepName",
           "StrategyName", "AugmentName", "NetworkName", "ClassifierName", "describe", "patch_divisor", "needs_source", "needs_batch_norm", "untrained", "adapt_epochs"]


@dataclass(frozen=True)
class StepInfo:
    """A domain-adaptation step: what it does and what it needs.

    ``needs_source``: reads the source site's labelled training split; ``needs_batch_norm``: acts
    on batch-norm layers; ``trains_on_source``: supervised training runs even without target labels
    (on the source's); ``extra_round``: adds a training round of ``epochs // 2`` after the first;
    ``needs_training``: moves weights that only a supervised round after it fits the head to again
    (target labels, or a ``trains_on_source`` step).
    """

    summary: str
    needs_source: bool = False
    needs_batch_norm: bool = False
    trains_on_source: bool = False
    extra_round: bool = False
    needs_training: bool = False


# in the order they compose (tl_med.adapt.run): harmonise → inpainting → train (+ coral, mean teacher) → self-training
# → adabn → tent → consistency_tta (the test-time steps share adapt.tent_steps and adapt.tent_lr)
STEPS: dict[str, StepInfo] = {
    "harmonise": StepInfo("histogram standardisation of target intensities to the source's landmarks",
                          needs_source=True),
    "inpainting": StepInfo("self-supervised continued pretraining of the encoder on target images (masked-volume "
                           "inpainting) before supervised training", needs_training=True),
    "coral": StepInfo("Deep CORAL: train on source and target labels while aligning bottleneck features "
                      "to target images", needs_source=True, trains_on_source=True),
    "mean_teacher": StepInfo("mean teacher: consistency with an EMA teacher on perturbed target images while "
                             "training on source and target labels", needs_source=True, trains_on_source=True),
    "self_training": StepInfo("confident pseudo-labels of unlabelled target cases join a second training round",
                              extra_round=True),
    "adabn": StepInfo("batch-norm statistics re-estimated on target images", needs_batch_norm=True),
    "tent": StepInfo("entropy minimisation of the norm layers' affine parameters on target images",
                     needs_batch_norm=True),
    "consistency_tta": StepInfo("test-time consistency: the norm layers' affine parameters trained so that a "
                                "perturbed view of target images predicts the flip ensemble", needs_batch_norm=True),
}

# what `tl-med adapt --labels 0` runs when no steps are given (README, "Zero target labels")
ZERO_LABEL_STEPS: tuple[str, ...] = ("self_training",)

STRATEGIES: dict[str, str] = {
    "finetune": "every layer, with layer-wise learning rates lr * layer_decay**depth",
    "feature_extraction": "the encoder frozen, the decoder trained",
    "progressive": "blocks unfrozen from the output towards the input, one more every unfreeze_every epochs",
    "multitask": "fine-tuning with a case-level classification head on the shared encoder (joint loss; "
                 "needs the task's classes)",
}

# the strategies a case-level classifier can use (multitask needs a segmentation network)
CLASSIFIER_STRATEGIES: tuple[str, ...] = tuple(s for s in STRATEGIES if s != "multitask")

AUGMENTATIONS: dict[str, str] = {
    "none": "no augmentation",
    "intensity": "light intensity scale, shift and noise",
    "contrast": "intensity plus contrast randomisation (GIN, histogram shift, gamma, inversion)",
}



@dataclass(frozen=True)
class NetworkInfo:
    """A ``monai.networks.nets`` segmentation network (its builder: :mod:`tl_med.models.zoo`).

    ``network.channels`` and ``network.strides`` mean what the summary says; ``batch_norm_only``:
    MONAI builds it with batch norm whatever ``network.norm`` says; ``fixed_divisor``: patches must
    be divisible by it (otherwise by the product of the strides)."""

    summary: str
    batch_norm_only: bool = False
    fixed_divisor: int | None = None
    feature_multiple: int = 1  # network.channels[0] must be a multiple of it


# the layer groups every strategy and step uses are derived from each network's own structure
# (tl_med.adapt.blocks), so a network needs no hand-written module paths
NETWORKS: dict[str, NetworkInfo] = {
    "UNet": NetworkInfo("MONAI UNet: channels and strides per level, network.num_res_units residual units"),
    "DynUNet": NetworkInfo("nnU-Net-style dynamic UNet: filters = channels, 3³ kernels, strides per level"),
    "SegResNet": NetworkInfo("residual encoder-decoder (Myronenko): channels[0] initial filters, one level per "
                             "channel"),
    "AttentionUnet": NetworkInfo("UNet with attention gates on its skip connections (batch norm)",
                                 batch_norm_only=True),
    "SwinUNETR": NetworkInfo("Swin transformer encoder and CNN decoder: feature size channels[0] (a multiple of "
                             "12); patches divisible by 32", fixed_divisor=32, feature_multiple=12),
    "bundle": NetworkInfo("the network_def of a MONAI bundle (network.bundle: its folder), any nn.Module with "
                          "convolutions; channels, strides and norm do not apply", fixed_divisor=1),
}


@dataclass(frozen=True)
class ClassifierInfo:
    """A ``monai.networks.nets`` case-level classifier (its builder: :mod:`tl_med.models.classifiers`);
    ``min_input``: the least input size per axis its pooling stages allow."""

    summary: str
    min_input: int = 1


# case-level classifiers (classifier.width sets their size; 64 is the published network)
CLASSIFIERS: dict[str, ClassifierInfo] = {
    "DenseNet121": ClassifierInfo("MONAI DenseNet121 (blocks 6-12-24-16): width = initial features, growth rate "
                                  "width/2", min_input=32),
    "ResNet10": ClassifierInfo("MONAI ResNet, 1-1-1-1 basic blocks of width, 2, 4, 8 x width features (MedicalNet "
                               "layout)"),
    "ResNet18": ClassifierInfo("MONAI ResNet, 2-2-2-2 basic blocks (MedicalNet layout: its checkpoints load "
                               "unchanged)"),
    "ResNet34": ClassifierInfo("MONAI ResNet, 3-4-6-3 basic blocks (MedicalNet layout)"),
}



def patch_divisor(name: str, channels: tuple[int, ...], strides: tuple[int, ...]) -> int:
    """What every patch dimension must be divisible by for network ``name``."""
    info = NETWORKS[name]
    if info.fixed_divisor:
        return info.fixed_divisor
    if name == "SegResNet":
        return 2 ** (len(channels) - 1)
    product = 1
    for s in strides:
        product *= s
    return product


StepName = Literal[tuple(STEPS)]  # type: ignore[valid-type]
StrategyName = Literal[tuple(STRATEGIES)]  # type: ignore[valid-type]
AugmentName = Literal[tuple(AUGMENTATIONS)]  # type: ignore[valid-type]
NetworkName = Literal[tuple(NETWORKS)]  # type: ignore[valid-type]
ClassifierName = Literal[tuple(CLASSIFIERS)]  # type: ignore[valid-type]


def describe(table: dict[str, StepInfo] | dict[str, str]) -> str:
    """``name (summary), ...`` for help texts."""
    return ", ".join(f"{name} ({getattr(v, 'summary', v)})" for name, v in table.items())


def needs_source(steps: tuple[str, ...] | list[str]) -> list[str]:
    """The steps that read the source site's training split."""
    return [s for s in steps if STEPS[s].needs_source]


def needs_batch_norm(steps: tuple[str, ...] | list[str]) -> list[str]:
    """The steps that only work on a batch-norm network."""
    return [s for s in steps if STEPS[s].needs_batch_norm]


def untrained(steps: tuple[str, ...] | list[str], n_labelled: int) -> list[str]:
    """The steps that need a supervised round after them and would get none: no target label and no
    step that trains on the source's labels."""
    if n_labelled or any(STEPS[s].trains_on_source for s in steps):
        return []
    return [s for s in steps if STEPS[s].needs_training]


def adapt_epochs(epochs: int, steps: tuple[str, ...] | list[str], n_labelled: int) -> int:
    """Epochs an adaptation trains for: the supervised round (when there are target labels or a
    step trains on the source's), then any extra rounds."""
    supervised = epochs if n_labelled or any(STEPS[s].trains_on_source for s in steps) else 0
    return supervised + sum(max(1, epochs // 2) for s in steps if STEPS[s].extra_round)
