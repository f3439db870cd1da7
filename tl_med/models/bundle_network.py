"""A MONAI bundle's own network as the network to adapt (``network.name: bundle``).

:func:`read_network_def` reads ``network_def`` from the bundle's ``configs/inference.*`` (or
``train.*``) with MONAI's ``ConfigParser``, replacing references to the bundle's plain top-level
values (``"@num_classes"``) by those values, so that the definition stands alone: it is stored in
the configuration, the run's parameters and every registered package, and building the network
never needs the bundle folder again. :func:`build_definition` instantiates it through
``ConfigParser``, the way MONAI's own bundle runner does. Layer groups for the strategies come from
the network's structure (:mod:`tl_med.adapt.blocks`), so any ``nn.Module`` with convolutions works.

Example:
    >>> net = build_definition({"_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 2,
    ...                         "channels": [4, 8], "strides": [2]})
    >>> type(net).__name__
    'UNet'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tl_med.errors import ConfigError

__all__ = ["read_network_def", "build_definition"]

_CONFIGS = ("inference.json", "inference.yaml", "inference.yml", "train.json", "train.yaml", "train.yml")


def _resolve(value: Any, config: dict[str, Any], where: Path) -> Any:
    if isinstance(value, dict):
        return {k: _resolve(v, config, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, config, where) for v in value]
    if isinstance(value, str) and value.startswith("@"):
        key = value[1:]
        target = config.get(key)
        if key not in config or isinstance(target, (dict, list)) or (isinstance(target, str) and
                                                                     target[:1] in "@$%"):
            raise ConfigError(f"{where}: network_def refers to {value}, which is not a plain value of the bundle's "
                              "config; write the value into network_def")
        return target
    if isinstance(value, str) and value.startswith(("$", "%")):
        raise ConfigError(f"{where}: network_def holds the expression {value[:40]!r}; write its value instead")
    return value


def read_network_def(bundle: Path) -> dict[str, Any]:
    """The bundle's ``network_def``, standing alone; :class:`ConfigError` naming the file otherwise."""
    from monai.bundle import ConfigParser

    folder = Path(bundle)
    found = next((folder / "configs" / n for n in _CONFIGS if (folder / "configs" / n).is_file()), None)
    if found is None:
        raise ConfigError(f"network.bundle {folder}: no configs/inference.json (or .yaml, or train.*) with a "
                          "network_def")
    config = ConfigParser.load_config_files(str(found))
    if not isinstance(config.get("network_def"), dict):
        raise ConfigError(f"{found}: no network_def")
    definition = _resolve(config["network_def"], config, found)
    if "_target_" not in definition:
        raise ConfigError(f"{found}: network_def has no _target_")
    return definition


def build_definition(definition: dict[str, Any]) -> torch.nn.Module:
    """Instantiate a MONAI config dict (``_target_`` and its arguments) as a module."""
    from monai.bundle import ConfigParser

    network = ConfigParser({"network_def": definition}).get_parsed_content("network_def")
    if not isinstance(network, torch.nn.Module):
        raise ConfigError(f"network_def {definition['_target_']} did not build an nn.Module")
    return network
