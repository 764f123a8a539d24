"""``DataConfig``: where the training data comes from and how it is loaded (per rank). Pure (no torch).

Re-exported by ``jitmodel.config`` (the one schema the planner writes and the trainer reads). Three kinds:
``imagefolder`` (``<path>/train/<class>/*``), ``digits`` (scikit-learn's 8x8 scans) and ``latents``
(a folder ``jitplan data encode`` wrote; ``jitmodel.latents``). A ``latents`` config records which
autoencoder encoded the folder (``vae``: its source, ``vae_digest``: what identifies its weights), read from
the folder's manifest when the config does not say: the checkpoint keeps them, and ``jitmodel sample`` decodes
through that autoencoder.

    >>> DataConfig(kind="latents", path="/nonexistent").vae is None  # no manifest to read: the loader will say so
    True
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from jitmodel.bounded_io import read_regular
from jitmodel.fieldtypes import int_in

IMAGENET_TRAIN_IMAGES = 1_281_167  # ImageNet-1k train split; what planning assumes when data.num_images is unset
LATENTS_MANIFEST = "latents.json"  # jitmodel.latents.MANIFEST (that module needs numpy and torch)


class _Strict(BaseModel):  # jitmodel.config's settings (that module imports this one)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False, str_max_length=4096)


def _latents_manifest(path: str) -> dict:
    """A latents folder's manifest as JSON, no numpy (the planner reads it); {} when it cannot be read."""
    try:
        man = json.loads(read_regular(Path(path).expanduser() / LATENTS_MANIFEST, 2**28, "latents manifest"))
    except (OSError, ValueError):
        return {}
    return man if isinstance(man, dict) else {}


def _latents_vae(path: str) -> dict[str, str]:
    """``vae`` and ``vae_digest`` from a latents folder's manifest; {} when it cannot be read (the loader says why)."""
    try:
        vae = _latents_manifest(path)["vae"]
        return {"vae": str(vae["source"]), "vae_digest": str(vae["digest"])}
    except (KeyError, TypeError):
        return {}


def latents_count(path: str) -> int | None:
    """Images in an encoded folder (its manifest's ``num_images``), or None when it is not one here."""
    n = _latents_manifest(path).get("num_images")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None


class DataConfig(_Strict):
    """Where images come from and how they are loaded (per rank)."""

    kind: Literal["imagefolder", "digits", "latents"] = "imagefolder"  # digits: scikit-learn's 8x8 digits
    path: str | None = None  # dataset root holding train/ (imagefolder); the encoded folder (latents)
    num_images: Annotated[int, int_in(1, 10**10)] | None = None  # known size (ImageNet-1k train: 1,281,167)
    num_workers: Annotated[int, int_in(0, 1024)] = 12
    prefetch_factor: Annotated[int, int_in(1, 1024)] | None = 2  # only used when num_workers > 0
    pin_memory: bool = True
    persistent_workers: bool = True
    hflip: bool = True  # latents: only when they were encoded with --hflip (the mirror's latent is stored)
    manifest: str | None = None  # verified manifest (jitplan data verify); default <path>/jitmodel-manifest.json
    skip_bad: bool = False  # train without the images that do not decode (else: refuse to start)
    # latents: the autoencoder that encoded them ("random" or its folder) and its digest (jitmodel.autoencoder)
    vae: str | None = Field(None, exclude_if=lambda v: v is None)
    vae_digest: str | None = Field(None, exclude_if=lambda v: v is None)

    @model_validator(mode="before")
    @classmethod
    def _no_workers_no_prefetch(cls, raw: object) -> object:
        """Worker normalisation, the one place it lives: 0 workers load in the main process, so there is
        nothing to prefetch and no worker to keep alive (DataLoader refuses those settings then)."""
        if isinstance(raw, dict) and raw.get("num_workers") == 0:
            raw = {**raw, "prefetch_factor": None, "persistent_workers": False}
        return raw

    @model_validator(mode="before")
    @classmethod
    def _latents_name_their_vae(cls, raw: object) -> object:
        """A latents config without ``vae_digest`` takes its folder's (what the run was started from)."""
        if isinstance(raw, dict) and raw.get("kind") == "latents" and raw.get("path") and not raw.get("vae_digest"):
            found = _latents_vae(str(raw["path"]))
            if found and raw.get("vae") is None:
                raw = {**raw, **found}
            elif found:
                raw = {**raw, "vae_digest": found["vae_digest"]}
        return raw

    @model_validator(mode="after")
    def _path_for_folders(self) -> DataConfig:
        if self.kind == "imagefolder" and not self.path:
            raise ValueError("data.path is required for an imagefolder dataset (a folder holding train/)")
        if self.kind == "latents" and not self.path:
            raise ValueError("data.path is required for latents (the folder `jitplan data encode` wrote)")
        return self

    def with_workers(self, num_workers: int) -> DataConfig:
        """The same data settings with ``num_workers`` per rank, normalised (validated, unlike model_copy).

            >>> d = DataConfig(kind="digits").with_workers(0)
            >>> d.num_workers, d.prefetch_factor, d.persistent_workers
            (0, None, False)
        """
        return DataConfig.model_validate({**self.model_dump(), "num_workers": num_workers})

    @property
    def planned_images(self) -> int:
        """Images per epoch for planning: ``num_images``, else the ImageNet-1k train split."""
        return self.num_images or IMAGENET_TRAIN_IMAGES
