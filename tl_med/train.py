"""The training loop: MONAI loss and metric, collaborators passed in, logging through a callback.

No subclassing: a strategy decides what the optimizer sees; ``on_epoch`` receives each
:class:`EpochLog` (the tracking adapter logs it to MLflow).

Example:
    >>> # result = fit(model, train_loader, val_loader, optimizer, epochs=30, device=device,
    >>> #              on_epoch=lambda log: print(log.epoch, log.val_dice))
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import torch
from monai.losses import DiceCELoss

from tl_med.checkpoint import Checkpoint
from tl_med.config import LoopConfig
from tl_med.evaluate import Infer, dice_per_case
from tl_med.lr_schedule import EpochSchedule
from tl_med.multitask import class_loss
from tl_med.progress import note

log = logging.getLogger(__name__)

__all__ = ["EpochLog", "FitResult", "fit", "seed_everything"]


@dataclass(frozen=True)
class EpochLog:
    epoch: int
    train_loss: float
    val_dice: float | None
    seconds: float


@dataclass
class FitResult:
    history: list[EpochLog] = field(default_factory=list)
    best_epoch: int = -1
    best_val_dice: float | None = None
    best_state: dict[str, torch.Tensor] | None = None
    stopped_early: int | None = None  # the last epoch run when early stopping ended the fit


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (MONAI's ``set_determinism``)."""
    from monai.utils import set_determinism

    set_determinism(seed=seed)


def fit(model: torch.nn.Module, train_loader: Iterable[dict], val_loader: Iterable[dict] | None,
        optimizer: torch.optim.Optimizer, *, epochs: int, device: torch.device,
        before_epoch: Callable[[int], None] | None = None,
        on_epoch: Callable[[EpochLog], None] | None = None,
        extra_losses: Sequence[Callable[[torch.nn.Module], torch.Tensor]] = (),
        checkpoint: Checkpoint | None = None, infer: Infer | None = None,
        loop: LoopConfig | None = None) -> FitResult:
    """Train for ``epochs``; keep the weights of the best validation Dice (or the last epoch).

    ``loop`` sets the learning-rate schedule, early stopping, gradient accumulation and, on CUDA,
    mixed precision with channels-last memory (:class:`~tl_med.config.LoopConfig`; default: a
    constant rate, every epoch, one batch per step).

    ``extra_losses`` are added to the segmentation loss at every step, after the labelled forward
    pass (regularisers such as L2-SP/EWC, alignment losses such as CORAL). Validation predicts
    each whole validation image with ``infer`` (a sliding window of the training patch size;
    required with a ``val_loader``: whole images rarely fit a network's strides), so its Dice is
    measured on the preprocessed grid.

    With a ``checkpoint``, the state is saved after every epoch and a fit that finds one resumes
    after its last epoch (the history so far is replayed to ``on_epoch``, so a new tracking run
    gets the whole curve). On CPU the resumed result equals an uninterrupted one. The caller
    removes the checkpoint once the work that needed it is safely recorded.
    """
    if val_loader is not None and infer is None:
        raise ValueError("validation on whole images needs infer= (e.g. tl_med.inference.window_inferer)")
    loop = loop or LoopConfig()
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    result = FitResult()
    cuda = device.type == "cuda"
    amp = loop.amp and cuda
    model.to(device)
    if amp:
        model.to(memory_format=torch.channels_last_3d)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    schedule = EpochSchedule(optimizer, loop, epochs)
    first = _resume(checkpoint, model, optimizer, train_loader, result, on_epoch, epochs, schedule)
    if first and _should_stop(loop, result, first - 1):  # the checkpointed fit had already stopped
        result.stopped_early = first - 1
        first = epochs
    for epoch in range(first, epochs):
        if before_epoch is not None:
            before_epoch(epoch)
        schedule.start(epoch)
        start = time.perf_counter()
        model.train()
        total, steps = 0.0, 0
        optimizer.zero_grad(set_to_none=True)
        n_batches = _length(train_loader)
        for batch in train_loader:
            image, label = batch["image"].to(device), batch["label"].to(device).long()
            if amp:
                image = image.contiguous(memory_format=torch.channels_last_3d)
            with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
                loss = loss_fn(model(image), label)
                if loop.class_weight and "class" in batch:  # read before other passes replace the features
                    classes = class_loss(model, batch["class"].to(device))
                    if classes is not None:
                        loss = loss + loop.class_weight * classes
                for extra in extra_losses:
                    loss = loss + extra(model)
            scaler.scale(loss / _group_size(steps, n_batches, loop.grad_accumulation)).backward()
            total += float(loss.detach())
            steps += 1
            if steps % loop.grad_accumulation == 0:
                _step(optimizer, scaler)
        if steps % loop.grad_accumulation:
            _step(optimizer, scaler)  # the epoch's last, partial accumulation
        val = dice_per_case(model, val_loader, device, infer=infer) if val_loader is not None and infer else []
        val_dice = sum(val) / len(val) if val else None
        schedule.end(epoch, val_dice)
        log = EpochLog(epoch, total / max(steps, 1), val_dice, time.perf_counter() - start)
        result.history.append(log)
        if on_epoch is not None:
            on_epoch(log)
        better = val_dice is None or result.best_val_dice is None or val_dice > result.best_val_dice
        if better:
            result.best_epoch, result.best_val_dice = epoch, val_dice
            result.best_state = copy.deepcopy(model.state_dict())
        if checkpoint is not None:
            checkpoint.save(epoch=epoch, model=model, optimizer=optimizer, loader=train_loader,
                            fit_state=_fit_state(result, schedule))
        if val_dice is not None and _should_stop(loop, result, epoch):
            result.stopped_early = epoch
            note(f"early stopping after epoch {epoch + 1} of {epochs}: no better validation Dice for "
                 f"{loop.early_stopping} epochs (best {result.best_val_dice:.3f} at epoch {result.best_epoch + 1})")
            break
    if result.best_state is not None:
        model.load_state_dict(result.best_state)
    return result


def _should_stop(loop: LoopConfig, result: FitResult, epoch: int) -> bool:
    """Early stopping: ``loop.early_stopping`` epochs since the best validation Dice."""
    return bool(loop.early_stopping) and result.best_val_dice is not None and \
        epoch - result.best_epoch >= loop.early_stopping


def _length(loader: Iterable[dict]) -> int | None:
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None


def _group_size(step: int, n_batches: int | None, every: int) -> int:
    """How many batches share the optimizer step that batch ``step`` (0-based) belongs to: ``every``,
    or fewer for the epoch's last, partial group, so that each step averages its own batches."""
    if n_batches is None:
        return every
    start = step - step % every
    return max(1, min(every, n_batches - start))


def _step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler) -> None:
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)


def _fit_state(result: FitResult, schedule: EpochSchedule) -> dict:
    return {"history": [dataclasses.asdict(h) for h in result.history], "best_epoch": result.best_epoch,
            "best_val_dice": result.best_val_dice, "best_state": result.best_state,
            "schedule": schedule.state_dict()}


def _resume(checkpoint: Checkpoint | None, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
            loader: Iterable[dict], result: FitResult, on_epoch: Callable[[EpochLog], None] | None,
            epochs: int, schedule: EpochSchedule) -> int:
    """Load ``checkpoint`` into the model, optimizer, random states and ``result``; the first epoch to run."""
    restored = checkpoint.load(model=model, optimizer=optimizer, loader=loader) if checkpoint else None
    if restored is None:
        return 0
    last, state = restored
    if last >= epochs:
        raise ValueError(f"checkpoint {checkpoint.path} is at epoch {last}, beyond this fit's {epochs} epochs")
    result.history = [EpochLog(**h) for h in state["history"]]
    result.best_epoch, result.best_val_dice = state["best_epoch"], state["best_val_dice"]
    result.best_state = state["best_state"]
    schedule.load_state_dict(state.get("schedule") or {})
    log.info("resumed training from checkpoint after epoch %d of %d", last + 1, epochs)
    note(f"resumed training from checkpoint after epoch {last + 1} of {epochs}")
    if on_epoch is not None:
        for h in result.history:
            on_epoch(h)
    return last + 1
