"""``jitplan plan`` inputs beyond the GPUs: the rented machine's figures (--offer FILE, --pcie-*, --disk-mbs,
--download-mbps) and the real dataset (--data DIR: images and classes counted by jitmodel's scanner)."""

from __future__ import annotations

import json
from pathlib import Path

from jitplan.errors import UsageError
from jitplan.hardware.figures import HostFigures, figures_from_offer
from jitplan.hardware.schema import HardwareSpec


def read_offer(path: str) -> dict:
    """A saved offer (JSON object: neutral keys or Vast's search fields); one line on bad input."""
    p = Path(path)
    try:
        raw = json.loads(p.read_text())
    except FileNotFoundError:
        raise UsageError(f"--offer {path}: no such file") from None
    except (OSError, ValueError) as e:
        raise UsageError(f"--offer {path}: cannot read it as JSON ({type(e).__name__})") from None
    if isinstance(raw, dict) and isinstance(raw.get("offers"), list) and raw["offers"]:
        raw = raw["offers"][0]
    if not isinstance(raw, dict):
        raise UsageError(f"--offer {path}: expected a JSON object (one offer)")
    return raw


def offer_gpus(offer: dict) -> str | None:
    """``--gpus`` from an offer's GPU name and count ("2xRTX 3060"), or None when it has neither."""
    name, n = offer.get("gpu_name"), offer.get("num_gpus")
    if isinstance(name, str) and isinstance(n, int) and n > 0:
        return f"{n}x{name}"
    return None


def with_figures(hw: HardwareSpec, offer: dict | None, *, pcie_gbs: float | None, pcie_lanes: int | None,
                 pcie_gen: int | None, disk_mbs: float | None, download_mbps: float | None) -> tuple[HardwareSpec,
                                                                                                   float | None]:
    """(the hardware with the machine's figures, the offer's price per hour or None). Flags win over the offer."""
    price = None
    host = hw.host
    if offer is not None:
        figs: HostFigures = figures_from_offer(offer, offer_id=offer.get("id"), base=host)
        host, price = figs.host, figs.price_usd_hour
    flags = {"pcie_gbs": pcie_gbs, "pcie_lanes": pcie_lanes, "pcie_gen": pcie_gen, "disk_read_mbs": disk_mbs,
             "download_mbps": download_mbps}
    given = {k: v for k, v in flags.items() if v is not None}
    if given:
        host = host.model_copy(update={**given, "figures_source": host.figures_source or "flags"})
    return hw.model_copy(update={"host": type(host).model_validate(host.model_dump())}), price


def count_dataset(data: str) -> tuple[int | None, int | None, str]:
    """(images, classes, how) of a dataset root holding train/ (or a class folder root), read-only; (None, None,
    why) when there is nothing to count here (the path may be the training machine's, not this one's)."""
    from jitmodel.scan import (
        scan_classes,  # the one scanner (the trainer's own ImageFolder reads through it)  # lazy: CLI start-up
    )

    root = Path(data).expanduser()
    if not root.is_dir():
        return None, None, f"--data {data} is not a folder here: planned as the recipe's dataset"
    class_root = root / "train" if (root / "train").is_dir() else root
    scan = scan_classes(class_root)
    if not scan.class_list or scan.images == 0:
        return None, None, (f"--data {data}: no class folders with images under {class_root} here: planned as "
                            "the recipe's dataset (a dataset root holds train/<class>/<image>.jpg)")
    return scan.images, len(scan.class_list), f"counted in {class_root} by jitmodel.scan"
