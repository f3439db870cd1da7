"""Settings of a federated pretraining run (data, validated once; logged whole to MLflow).

Example:
    >>> FederatedConfig(rounds=2, local_epochs=1).algorithm
    'fedavg'
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["FederatedConfig"]


class FederatedConfig(BaseModel):
    """How the sites train together.

    ``rounds`` federated rounds; in each, every site trains ``local_epochs`` epochs on its own
    training split from the global weights and sends its weights back; the server averages them,
    weighted by the site's number of optimizer steps (FedAvg). ``algorithm="fedprox"`` adds the
    proximal term ``mu/2 · ||w - w_global||²`` to every local step (NVFlare's FedProx recipe sends
    ``mu`` with each round's model). ``lr``/``batch_size`` default to the pipeline's ``pretrain``
    settings. ``threads``: simulator client threads (default one per site, so that each site's
    client process lives for the whole job; fewer threads restart a client process per task).

    ``startup_kit``: the admin's startup kit folder of a provisioned NVFlare deployment (a server
    and one client per site, named like the sites): the job is submitted there as ``admin`` and
    waited for up to ``timeout_s``, instead of running in the simulator.

    ``privacy="percentile"``: each site sends its weight update (not its weights) through NVFlare's
    ``PercentilePrivacy`` filter (Shokri & Shmatikov, CCS '15): only the update's entries whose
    magnitude is above the ``privacy_percentile``-th percentile are shared, each clipped to
    ``±privacy_gamma``. It limits what one round reveals; it is not a formal (ε, δ) guarantee.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    rounds: int = Field(2, ge=1)
    local_epochs: int = Field(1, ge=1)
    algorithm: Literal["fedavg", "fedprox"] = "fedavg"
    mu: float = Field(0.0, ge=0)
    lr: float | None = Field(None, gt=0)
    batch_size: int | None = Field(None, ge=1)
    threads: int | None = Field(None, ge=1)
    startup_kit: str | None = None
    admin: str = "admin@nvidia.com"
    timeout_s: float = Field(6 * 3600, gt=0)
    privacy: Literal["none", "percentile"] = "none"
    privacy_percentile: float = Field(10.0, ge=0, le=100)
    privacy_gamma: float = Field(0.01, gt=0)

    @model_validator(mode="after")
    def _mu_for_fedprox(self) -> "FederatedConfig":
        if self.algorithm == "fedprox" and self.mu <= 0:
            raise ValueError("algorithm fedprox needs mu > 0 (the proximal coefficient, e.g. 0.01)")
        if self.algorithm == "fedavg" and self.mu:
            raise ValueError("mu is FedProx's coefficient: set algorithm='fedprox' to use it")
        return self
