"""The site registry (``data_manifests/sites.yaml``): which hospitals exist and where their data is.

Example ``sites.yaml``::

    task: liver
    sites:
      - name: north
        role: source                 # the hospital the model is pretrained on (exactly one)
        dicom_dir: incoming/north/dicom   # relative paths are relative to the workspace root
        labels_dir: incoming/north/labels
        split: {n_train: 28, n_val: 4}    # the rest of the labelled cases is the test split
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tl_med.config import load_yaml_model
from tl_med.errors import InputError

__all__ = ["SplitSpec", "SiteConfig", "SitesConfig", "load_sites"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SplitSpec(_Frozen):
    """How many labelled cases go to training and validation; the rest are test cases."""

    n_train: int = Field(4, ge=1)
    n_val: int = Field(2, ge=0)


class SiteConfig(_Frozen):
    """One hospital site."""

    name: str
    role: Literal["source", "target"] = "target"
    dicom_dir: Path
    labels_dir: Path
    split: SplitSpec = SplitSpec()

    @field_validator("name")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not v or not v[0].isalnum() or not all(c.isalnum() or c in "-_" for c in v):
            raise ValueError("site name must be a slug: letters, digits, '-' or '_'")
        return v.lower()

    def resolve(self, root: Path) -> "SiteConfig":
        """Return a copy whose relative paths are made absolute against ``root``."""
        return self.model_copy(update={
            "dicom_dir": (root / self.dicom_dir).resolve(),
            "labels_dir": (root / self.labels_dir).resolve(),
        })


class SitesConfig(_Frozen):
    """All sites of one task."""

    task: str = "liver"
    sites: tuple[SiteConfig, ...]

    @field_validator("sites")
    @classmethod
    def _check(cls, sites: tuple[SiteConfig, ...]) -> tuple[SiteConfig, ...]:
        names = [s.name for s in sites]
        if len(set(names)) != len(names):
            raise ValueError(f"site names must be unique, got {names}")
        n_source = sum(s.role == "source" for s in sites)
        if n_source != 1:
            raise ValueError(f"exactly one site must have role 'source', found {n_source}")
        return sites

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.sites]

    @property
    def source(self) -> SiteConfig:
        return next(s for s in self.sites if s.role == "source")

    @property
    def targets(self) -> list[SiteConfig]:
        return [s for s in self.sites if s.role == "target"]

    def get(self, name: str) -> SiteConfig:
        """The site called ``name``; an unknown name raises :class:`InputError` listing the known ones."""
        for site in self.sites:
            if site.name == name.lower():
                return site
        raise InputError(f"unknown site '{name}' (known sites: {', '.join(self.names)})")

    def resolve(self, root: Path) -> "SitesConfig":
        return self.model_copy(update={"sites": tuple(s.resolve(root) for s in self.sites)})


def load_sites(path: Path, root: Path) -> SitesConfig:
    """Load ``sites.yaml`` and resolve its relative paths against the workspace ``root``."""
    return load_yaml_model(SitesConfig, path).resolve(root)
