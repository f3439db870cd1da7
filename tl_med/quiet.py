"""Known-harmless third-party warnings, silenced one by one at their source.

Each filter names the exact message (or logger) it silences and why it is harmless here; anything
else still reaches the user. Front ends call :func:`silence_known_noise` once, before MONAI is
imported (the CLI does at start-up; the test suite in ``conftest.py``); process pools pass it as
their initializer.

Example:
    >>> silence_known_noise()
"""

from __future__ import annotations

import logging
import os
import warnings

__all__ = ["silence_known_noise", "KNOWN_WARNINGS", "QUIET_LOGGERS", "QUIET_ENV"]

# (category, message regex, why it is harmless); regexes avoid ':' so pytest's ini filters can carry them
KNOWN_WARNINGS: tuple[tuple[type[Warning], str, str], ...] = (
    # MONAI's LoadImage registers every reader it knows, including the GPU-only nvImageCodec
    # DICOM reader, even when told to use NibabelReader; tl_med reads NIfTI only.
    (UserWarning, r"NvImgCodecPydicomReader. nvImageCodec decoder plugin did not register",
     "GPU DICOM decoder absent; NIfTI is read with nibabel"),
    # MONAI's own HausdorffDistanceMetric passes a deprecated argument to get_mask_edges.
    (FutureWarning, r"monai\.metrics\.utils get_mask_edges.always_return_as_numpy",
     "internal to MONAI's HD95 metric"),
    # MLflow's SQL store configures SQLAlchemy mappers that use a loader strategy SQLAlchemy 2.1 deprecates.
    (DeprecationWarning, r"The ``noload`` loader strategy is deprecated", "inside MLflow's tracking store"),
    # pytorch-ignite (MONAI's engines, bundles) imports torch.distributed.optim, which scripts its optimizers.
    (DeprecationWarning, r"`torch\.jit\.(script|interface)` is deprecated", "torch.distributed.optim via ignite"),
    # Prefect's server column types, once SQLAlchemy 2.1 configures mappers in the same process.
    (DeprecationWarning, r"Type object <class 'prefect\.server\.utilities\.database\.",
     "inside Prefect's server models"),
    # NVFlare's admin client (submitting a job to a deployment) passes aiohttp a deprecated argument.
    (DeprecationWarning, r"ssl_context is deprecated, use ssl=context instead", "inside NVFlare's admin API client"),
)

# loggers whose INFO/WARNING lines are routine here: (name, level to keep, why)
QUIET_LOGGERS: tuple[tuple[str, int, str], ...] = (
    ("monai.data.nvimgcodec_pydicom_plugin", logging.ERROR, "GPU DICOM decoder absent (CPU machines)"),
    ("monai.networks.utils", logging.WARNING, "copy_model_state's per-call 'dst model updated' line; "
                                              "tl_med reports the transfer itself"),
    ("mlflow.store.db.utils", logging.WARNING, "'Creating initial MLflow database tables' on a new store"),
    ("highdicom", logging.WARNING, "INFO lines name source SOPInstanceUIDs while a SEG is built: identifiers"),
)
# MLflow draws a tqdm bar for every artifact download (weights of a pretrained source)
QUIET_ENV = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def silence_known_noise() -> None:
    """Install the filters above (idempotent; affects only the listed messages and loggers)."""
    for category, message, _ in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name, level, _ in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(level)
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
