"""Federated pretraining across sites on NVFlare: only weights (and a few metrics) leave a site.

- :mod:`~tl_med.federated.config` — :class:`FederatedConfig` (rounds, local epochs, FedAvg/FedProx).
- :mod:`~tl_med.federated.local` — one site's round (train on its own data, plain PyTorch/MONAI).
- :mod:`~tl_med.federated.client` — the NVFlare client script that runs it, one per site.
- :mod:`~tl_med.federated.job` — the NVFlare recipe (``FedAvgRecipe``/``FedProxRecipe``) and its
  run: in the simulator (``SimEnv``), or on a provisioned deployment (``ProdEnv``).
- :mod:`~tl_med.federated.provision` — what a deployment's participants must allow (their
  ``class_allow_list``) before they run tl_med's job.
- :mod:`~tl_med.federated.stage` — the pipeline stage: run, log per-round per-site metrics,
  evaluate, register ``tlmed-<task>-federated`` (``challenger``).

NVFlare is an optional dependency (``pip install -e '.[federated]'``; :mod:`~tl_med.federated.extra`
checks for it); importing this package does not import it.
"""

from tl_med.federated.config import FederatedConfig
from tl_med.federated.extra import nvflare_available, require_nvflare
from tl_med.federated.stage import FEDERATED, FederatedResult, federated_model_name, federated_pretrain

__all__ = ["FEDERATED", "FederatedConfig", "FederatedResult", "federated_model_name", "federated_pretrain",
           "nvflare_available", "require_nvflare"]
