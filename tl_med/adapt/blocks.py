"""A network's layer groups, derived from its own structure: encoder blocks, decoder blocks and the
head, in order from input to output, so that every strategy (layer-wise rates, freezing,
progressive unfreezing) and step (CORAL's bottleneck) works on any MONAI network without
hand-written module paths.

How: one probe forward pass (eval mode, no gradient, a zero volume) records the order in which
the modules that own parameters first run, and the spatial size of every convolution's output.
Consecutive modules at the same resolution under the same top-level child form a block. The
encoder ends with the first block at the coarsest resolution (the bottleneck); the blocks after
it are the decoder; the module that ran last (the output convolution) is the head, together with
any parameterised module the probe never ran (e.g. deep-supervision heads).

Example:
    >>> from tl_med.config import NetworkConfig
    >>> from tl_med.models.zoo import build_network
    >>> blocks = network_blocks(build_network(NetworkConfig(channels=(4, 8, 16), strides=(2, 2), num_res_units=0)))
    >>> [b.label for b in blocks]
    ['encoder3', 'encoder2', 'decoder1', 'head0']
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch.nn.modules.conv import _ConvNd

__all__ = ["Block", "network_blocks", "bottleneck_module", "probe_pass"]

_PROBE_SIZES = (32, 64, 96, 128)


@dataclass(frozen=True)
class Block:
    """A group of parameters: ``kind`` encoder, decoder or head; ``depth`` counts blocks back from
    the output (the head is 0); ``modules`` are the owning modules in the order they ran."""

    kind: str
    depth: int
    names: tuple[str, ...]
    modules: tuple[str, ...]
    voxels: int  # spatial size of its feature maps in the probe pass

    @property
    def encoder(self) -> bool:
        return self.kind == "encoder"

    @property
    def label(self) -> str:
        return f"{self.kind}{self.depth}"


@dataclass(frozen=True)
class _Call:
    module: str
    voxels: int | None  # None: not a convolution (inherits the resolution it runs at)


def _owners(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    return {name: m for name, m in model.named_modules() if next(m.parameters(recurse=False), None) is not None}


def probe_pass(model: torch.nn.Module, before_each: Callable[[], None] = lambda: None) -> None:
    """One forward pass of zeros of the smallest size the network accepts (of 32³ … 128³), in eval
    mode and without gradients; each module's own train/eval mode is restored after. Hooks the
    caller registered see the pass; ``before_each`` runs before every size tried (to reset what
    they recorded). Raises ``ValueError`` for a module without convolutions."""
    first_conv = next((m for m in model.modules() if isinstance(m, _ConvNd)), None)
    if first_conv is None:
        raise ValueError(f"{type(model).__name__} has no convolution: not a segmentation network tl_med can adapt")
    dims = first_conv.weight.ndim - 2
    param = next(model.parameters())
    modes = {m: m.training for m in model.modules()}  # restored one by one: some may be in eval mode
    model.eval()
    try:
        for size in _PROBE_SIZES:  # the smallest volume the network accepts
            before_each()
            try:
                with torch.no_grad():
                    model(torch.zeros(1, first_conv.in_channels, *([size] * dims), device=param.device,
                                      dtype=param.dtype))
                return
            except (RuntimeError, ValueError):
                if size == _PROBE_SIZES[-1]:
                    raise
    finally:
        for m, mode in modes.items():
            m.train(mode)


def _probe(model: torch.nn.Module) -> list[_Call]:
    """Modules owning parameters in the order they first run, with their conv output sizes."""
    calls: list[_Call] = []
    seen: set[str] = set()
    sizes: dict[str, int] = {}

    def start(name: str, _module: torch.nn.Module, _inputs: object) -> None:
        # the order modules *start* in: a module owning parameters around others (a root-level
        # embedding or scale) comes before its children, not after them as its forward hook would
        if name not in seen:
            seen.add(name)
            calls.append(_Call(name, None))

    def finish(name: str, module: torch.nn.Module, _inputs: object, output: object) -> None:
        if isinstance(module, _ConvNd) and isinstance(output, torch.Tensor) and name not in sizes:
            sizes[name] = int(torch.tensor(output.shape[2:]).prod())

    def reset() -> None:
        calls.clear()
        seen.clear()
        sizes.clear()

    owners = _owners(model).items()
    handles = [m.register_forward_pre_hook(partial(start, name)) for name, m in owners] + \
        [m.register_forward_hook(partial(finish, name)) for name, m in owners]
    try:
        probe_pass(model, reset)
    finally:
        for h in handles:
            h.remove()
    return [_Call(c.module, sizes.get(c.module)) for c in calls]


def _blocks(model: torch.nn.Module) -> list[Block]:
    calls = _probe(model)
    owners = _owners(model)
    if not calls:
        raise ValueError(f"{type(model).__name__}: no parameterised module ran in a forward pass")
    head_calls = [calls[-1].module] + [n for n in owners if n not in {c.module for c in calls}]
    runs: list[tuple[int, list[str]]] = []  # (voxels, modules)
    current = None
    for call in calls[:-1]:
        voxels = call.voxels if call.voxels is not None else (current if current is not None else 0)
        top = call.module.split(".")[0]
        if not runs or voxels != runs[-1][0] or top != runs[-1][1][-1].split(".")[0]:
            runs.append((voxels, []))
        runs[-1][1].append(call.module)
        current = voxels
    coarsest = min((v for v, _ in runs if v), default=0)
    bottleneck = next((k for k, (v, _) in enumerate(runs) if v == coarsest), len(runs) - 1)
    kinds = ["encoder" if k <= bottleneck else "decoder" for k in range(len(runs))]
    groups = [(kind, v, mods) for kind, (v, mods) in zip(kinds, runs)] + [("head", current or 0, head_calls)]
    n = len(groups)

    canonical = {id(t): name for name, t in model.named_parameters()}  # a tied tensor: its first name
    taken: set[int] = set()

    def params(modules: list[str]) -> tuple[str, ...]:
        """Parameter names of ``modules``; a parameter shared by several modules (tied weights)
        belongs to the first block that uses it, under the name ``named_parameters`` gives it."""
        out = []
        for m in modules:
            for _, tensor in owners[m].named_parameters(recurse=False):
                if id(tensor) not in taken:
                    taken.add(id(tensor))
                    out.append(canonical[id(tensor)])
        return tuple(out)

    return [Block(kind, n - 1 - k, params(mods), tuple(mods), v) for k, (kind, v, mods) in enumerate(groups)]


_CACHE: "weakref.WeakKeyDictionary[torch.nn.Module, list[Block]]" = weakref.WeakKeyDictionary()


def network_blocks(model: torch.nn.Module) -> list[Block]:
    """The blocks of ``model`` from input to output (cached per model); every parameter is in
    exactly one. Raises ``ValueError`` for a module without convolutions."""
    cached = _CACHE.get(model)
    names = {n for n, _ in model.named_parameters()}
    if cached is None or {n for b in cached for n in b.names} != names:  # new, or modules added since
        _CACHE[model] = cached = _blocks(model)
    return cached


def bottleneck_module(model: torch.nn.Module) -> torch.nn.Module:
    """The module whose output is the bottleneck's feature map: the outermost module around the last
    one to run in the last encoder block that holds no parameter outside that block. What
    feature-alignment steps such as CORAL compare across domains."""
    last = [b for b in network_blocks(model) if b.encoder][-1]
    inside = set(last.names)
    parts = last.modules[-1].split(".")
    for k in range(1, len(parts) + 1):
        module = model.get_submodule(".".join(parts[:k]))
        if type(module).__name__ == "SkipConnection":
            continue  # its output concatenates the skip with the bottleneck (MONAI's UNet)
        if all(f"{'.'.join(parts[:k])}.{n}" in inside for n, _ in module.named_parameters()):
            return module
    return model.get_submodule(last.modules[-1])
