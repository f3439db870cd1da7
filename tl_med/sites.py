"""The site registry (``data_manifests/sites.yaml``): which hospitals exist and where their data is.

Example ``sites.yaml``::

    task: liver
    sites:
      - name: north
        role: source                 # the hospital the model is pretrained on (exactly one)
        dicom_dir: incoming/north/dicom   # relative paths are relative to the workspace root
        labels_dir: incoming/north/labels
        classes_csv: incoming/north/classes.csv  # optional case-level classes (key,class rows)
        split: {n_train: 28, n_val: 4}    # the rest of the labelled cases is the test split
        schedule: {cron: "0 2 * * *", timezone: Europe/Amsterdam}  # optional: nightly retrain
        inbox: inbox/north                # optional: new deliveries land here (see tl_med.inbox)
        retrain: {strategy: finetune, steps: [self_training], n_labelled: 4}  # optional defaults
        pacs:                             # optional: pull studies from an Orthanc PACS (tl_med.pacs)
          url: http://orthanc:8042
          username_env: TL_MED_PACS_USER  # credentials from the environment (or credentials_file:)
          password_env: TL_MED_PACS_PASSWORD
          query: {modality: CT, study_date: "20240101-", tags: {InstitutionName: "North*"}}
        ingest:                           # optional; these are the defaults
          geometry: refuse                # gaps/uneven spacing/tilt: refuse | resample (flagged)
          dates: remove                   # de-identified DICOM dates: remove | shift (per patient)
          keep_dicom: false               # also keep de-identified DICOM for re-export
          compresslevel: 1                # gzip level of the NIfTI output (0: uncompressed .nii)
          workers: 0                      # processes for header reads and conversion (0: all cores)
      - name: lakeside                    # a site defined by existing NIfTI data instead of DICOM
        datalist: incoming/lakeside/datalist.json  # decathlon-style {"training": [{image, label}]}

A ``datalist`` site's images and labels are validated like converted DICOM (finite affine, 3-D,
label grid and values) and copied into the workspace with clean headers under keyed case ids.

The task's label map and input channels are shared by every site (one model fits them all)::

    labels: {"0": background, "1": tumour core, "2": oedema}  # values 0..N-1; 0 is background
    channels: [T1c, FLAIR]    # co-registered sequences per case, in this order (datalist sites:
                              # an item's "image" lists one file per channel, or is one 4-D file)

Without ``channels`` a case is one image; without ``labels`` the map is ``{0: background, 1: liver}``.

A task may also have case-level classes (``classes: [normal, fatty]``): a DICOM site gives them in
``classes_csv`` (columns ``key`` and ``class``; the key is a SeriesInstanceUID, StudyInstanceUID or
AccessionNumber, matched like label file names), a datalist item in its ``"class"`` field. See
:mod:`tl_med.ingest.classes`.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from pydantic import Field, field_validator, model_validator

from tl_med.catalogue import untrained
from tl_med.config import FrozenModel, Step, Strategy, load_yaml_model
from tl_med.errors import ConfigError, InputError

GeometryPolicy = Literal["refuse", "resample"]
DatePolicy = Literal["remove", "shift"]

DEFAULT_LABELS = {"0": "background", "1": "liver"}

__all__ = ["DEFAULT_LABELS", "SplitSpec", "IngestOptions", "ScheduleSpec", "RetrainSpec", "PacsQuery", "PacsSource", "SiteConfig",
           "SitesConfig", "load_sites"]


class SplitSpec(FrozenModel):
    """How many labelled cases go to training and validation; the rest are test cases."""

    n_train: int = Field(4, ge=1)
    n_val: int = Field(2, ge=0)


class IngestOptions(FrozenModel):
    """How a site's data are ingested (data-governance and geometry policies)."""

    geometry: GeometryPolicy = "refuse"
    dates: DatePolicy = "remove"
    keep_dicom: bool = False
    compresslevel: int = Field(1, ge=0, le=9)
    workers: int = Field(0, ge=0)

    def result_hash(self) -> str:
        """Identity of the options that change the output (not ``workers``)."""
        blob = json.dumps(self.model_dump(mode="json", exclude={"workers"}), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def n_workers(self) -> int:
        if self.workers:
            return self.workers
        affinity = getattr(os, "sched_getaffinity", None)
        return max(1, len(affinity(0)) if affinity else (os.cpu_count() or 1))


class ScheduleSpec(FrozenModel):
    """When a site retrains unattended: a five-field cron expression in an IANA time zone."""

    cron: str
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        if len(v.split()) != 5:
            raise ValueError(f"cron {v!r} must have five fields (minute hour day month weekday)")
        try:
            CronSim(v, datetime(2026, 1, 1))
        except CronSimError as exc:
            raise ValueError(f"cron {v!r} is not valid: {exc}") from None
        return v

    @field_validator("timezone")
    @classmethod
    def _zone(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r} (use an IANA name such as Europe/Amsterdam)") from None
        return v


class RetrainSpec(FrozenModel):
    """Defaults for a site's unattended retraining (schedule and new-data runs); ``None`` keeps the
    pipeline config's value."""

    strategy: Strategy | None = None
    steps: tuple[Step, ...] | None = None
    n_labelled: int | None = Field(None, ge=0)
    pretrained: str | None = None

    @model_validator(mode="after")
    def _trained_after(self) -> "RetrainSpec":
        if self.n_labelled == 0 and (lonely := untrained(self.steps or (), 0)):
            raise ValueError(f"steps {list(lonely)} need supervised training after them: give target labels or add "
                             "coral or mean_teacher")
        return self

    def parameters(self) -> dict[str, object]:
        """The non-default values, as ``site-retrain`` flow parameters."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.model_dump().items() if v is not None}


class PacsQuery(FrozenModel):
    """Which of the PACS's studies belong to the site (Orthanc ``/tools/find`` at study level; ``*``
    and ``?`` are wildcards, dates are DICOM ranges such as ``20240101-``)."""

    modality: str | None = Field(None, description="ModalitiesInStudy, e.g. CT")
    study_description: str | None = None
    study_date: str | None = Field(None, pattern=r"^(\d{8})?-?(\d{8})?$")
    tags: dict[str, str] = Field(default_factory=dict, description="more study-level DICOM keywords")

    def orthanc(self) -> dict[str, str]:
        query = {"ModalitiesInStudy": self.modality, "StudyDescription": self.study_description,
                 "StudyDate": self.study_date, **self.tags}
        return {k: v for k, v in query.items() if v}


class PacsSource(FrozenModel):
    """An Orthanc PACS the site's studies are pulled from. Credentials come from environment
    variables or a secrets file (``user:password``), never from this file."""

    url: str = Field(pattern=r"^https?://")
    username_env: str | None = None
    password_env: str | None = None
    credentials_file: Path | None = None
    query: PacsQuery = PacsQuery()
    timeout: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _one_credential_source(self) -> "PacsSource":
        if self.credentials_file is not None and (self.username_env or self.password_env):
            raise ValueError("give username_env/password_env or credentials_file, not both")
        if bool(self.username_env) != bool(self.password_env):
            raise ValueError("username_env and password_env go together")
        return self


class SiteConfig(FrozenModel):
    """One hospital site: DICOM (``dicom_dir`` + ``labels_dir``) or NIfTI (``datalist``)."""

    name: str
    role: Literal["source", "target"] = "target"
    dicom_dir: Path | None = None
    labels_dir: Path | None = None
    classes_csv: Path | None = Field(None, description="case-level classes of a DICOM site: key,class rows")
    datalist: Path | None = None
    modality: str = Field("unknown", description="modality of a datalist site's images (DICOM sites read it)")
    split: SplitSpec = SplitSpec()
    ingest: IngestOptions = IngestOptions()
    schedule: ScheduleSpec | None = None
    inbox: Path | None = Field(None, description="folder the inbox watcher moves new deliveries from")
    retrain: RetrainSpec = RetrainSpec()
    pacs: PacsSource | None = None

    @field_validator("inbox")
    @classmethod
    def _inbox(cls, v: Path | None) -> Path | None:
        if v is not None and str(v) in ("", "."):
            raise ValueError("inbox must name a folder")
        return v

    @model_validator(mode="after")
    def _one_source_of_data(self) -> "SiteConfig":
        if (self.dicom_dir is None) == (self.datalist is None):
            raise ValueError(f"site '{self.name}': give either dicom_dir (with labels_dir) or datalist")
        if self.pacs is not None and self.dicom_dir is None:
            raise ValueError(f"site '{self.name}': a pacs source needs dicom_dir (where pulled studies land)")
        return self

    @field_validator("name")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not v or not v[0].isalnum() or not all(c.isalnum() or c in "-_" for c in v):
            raise ValueError("site name must be a slug: letters, digits, '-' or '_'")
        return v.lower()

    def resolve(self, root: Path) -> "SiteConfig":
        """Return a copy whose relative paths are made absolute against ``root``."""
        update: dict[str, object] = {
            k: (root / getattr(self, k)).resolve()
            for k in ("dicom_dir", "labels_dir", "classes_csv", "datalist", "inbox") if getattr(self, k) is not None
        }
        if self.pacs is not None and self.pacs.credentials_file is not None:
            update["pacs"] = self.pacs.model_copy(update={"credentials_file": (root / self.pacs.credentials_file).resolve()})
        return self.model_copy(update=update)


class SitesConfig(FrozenModel):
    """All sites of one task."""

    task: str = "liver"
    labels: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_LABELS))
    channels: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()  # case-level classes of the task (e.g. normal, fatty), in index order
    sites: tuple[SiteConfig, ...]

    @field_validator("labels", mode="before")
    @classmethod
    def _yaml_keys(cls, v: object) -> object:
        return {str(k): v2 for k, v2 in v.items()} if isinstance(v, dict) else v  # YAML reads 0: as an int

    @field_validator("labels")
    @classmethod
    def _label_map(cls, v: dict[str, str]) -> dict[str, str]:
        if not all(k.isdigit() for k in v):
            raise ValueError(f"label values must be integers, got {sorted(v)}")
        values = sorted(int(k) for k in v)
        if values != list(range(len(values))) or len(values) < 2:
            raise ValueError(f"label values must be 0..N-1 with N >= 2 (0 is background), got {values}: "
                             "remap the masks' values")
        if len(set(v.values())) != len(v) or not all(v.values()):
            raise ValueError("label names must be non-empty and unique")
        return {str(k): v[str(k)] for k in values}

    @field_validator("channels", "classes")
    @classmethod
    def _names(cls, v: tuple[str, ...], info) -> tuple[str, ...]:
        if len(set(v)) != len(v) or not all(v):
            what = {"channels": "channel", "classes": "class"}[info.field_name]
            raise ValueError(f"{what} names must be non-empty and unique, got {list(v)}")
        if info.field_name == "classes" and len(v) == 1:
            raise ValueError("a classification task needs at least two classes")
        return v

    @model_validator(mode="after")
    def _classes_need_a_task(self) -> "SitesConfig":
        given = [s.name for s in self.sites if s.classes_csv is not None]
        if given and not self.classes:
            raise ValueError(f"site(s) {', '.join(given)} give classes_csv but the task has no classes: "
                             "list them under classes:")
        return self

    @model_validator(mode="after")
    def _channels_fit_sites(self) -> "SitesConfig":
        dicom = [s.name for s in self.sites if s.dicom_dir is not None]
        if len(self.channels) > 1 and dicom:
            raise ValueError(f"{len(self.channels)} channels: multi-channel cases come from datalist sites; "
                             f"DICOM site(s) {', '.join(dicom)} cannot pair series into channels yet")
        return self

    @property
    def n_channels(self) -> int:
        return max(1, len(self.channels))

    def task_fields(self) -> dict[str, object]:
        """What ingest needs to know of the task: ``task``, ``labels``, ``channels``, ``classes``
        (keyword arguments of :func:`tl_med.ingest.site.ingest_site` and ``plan_ingest``)."""
        return {"task": self.task, "labels": dict(self.labels), "channels": self.channels, "classes": self.classes}

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

    def check_inboxes(self, path: Path) -> None:
        """Refuse (:class:`ConfigError`, naming ``path`` and the field) an inbox folder that is
        missing, or one on a site that cannot take deliveries; called before watching starts."""
        for i, site in enumerate(self.sites):
            if site.inbox is None:
                continue
            where = f"{path}: field 'sites.{i}.inbox' (site '{site.name}')"
            if not site.inbox.is_dir():
                raise ConfigError(f"{where}: folder {site.inbox} does not exist")
            if site.dicom_dir is None:
                raise ConfigError(f"{where}: only DICOM sites (dicom_dir) take inbox deliveries")


def load_sites(path: Path, root: Path) -> SitesConfig:
    """Load ``sites.yaml`` and resolve its relative paths against the workspace ``root``."""
    return load_yaml_model(SitesConfig, path).resolve(root)
