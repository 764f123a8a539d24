"""C10-C11: the dataset layout jitmodel will read, and a checkpoint's real architecture.

C10 reads the folder the way ``jitmodel.data`` (and torchvision's ImageFolder) will: ``<data_path>/train``
holds one folder per class, *every* sub-folder counts (hidden ones too) and the class index is the position
in the sorted folder list. C11 infers the architecture from the checkpoint's tensor shapes alone
(``jitmodel.checkpoint.infer_model_config``), then compares it with the config saved inside the file and
with the plan.
"""

from __future__ import annotations

from typing import Any

from jitmodel import custom
from jitmodel.checkpoint import infer_model_config
from jitmodel.scan import outside_note
from jitmodel.variants import get_variant
from jitplan.doctor.context import DoctorContext, short_path
from jitplan.doctor.finding import Finding


def _ckpt_classes(ctx: DoctorContext) -> int | None:
    ck = ctx.checkpoint
    if ck is None:
        return None
    if ck.classes:
        return len(ck.classes)
    inferred = _infer(ck.shapes)[0]
    if inferred is not None:
        return inferred.num_classes
    return (ck.saved_config or {}).get("num_classes")


def check_dataset(ctx: DoctorContext) -> Finding:
    """C10: layout (train/ class folders), hidden/empty folders, class names and counts."""
    title = "dataset layout"
    rep = ctx.data
    if ctx.data_error:
        return Finding(id="C10", level="fail", title=title, found=ctx.data_error,
                       fix="check the folder's permissions and links (jitplan data inspect PATH)")
    if rep is None and ctx.data_path:
        return Finding(id="C10", level="fail", title=title,
                       found=f"data path {short_path(ctx.data_path)} does not exist here",
                       fix="copy or mount the dataset, or fix data.path in the plan")
    if rep is None:
        return Finding(id="C10", level="skip", title=title, found="no dataset given (--data or a plan's data.path)")
    p = rep.path
    if rep.layout in ("empty", "unknown"):
        return Finding(id="C10", level="fail", title=title,
                       found=f"{p}: no class folders of images found ({rep.layout}; "
                             f"{'; '.join(rep.notes) or 'nothing usable'})",
                       fix="point --data at the folder holding train/<class>/ (or the class folders themselves)")
    if rep.layout == "flat":
        return Finding(id="C10", level="fail", title=title,
                       found=f"{rep.classes} class folders directly under {p} (flat, no train/ or val/ split, "
                             f"{rep.images:,} images, {rep.wnid_fraction:.0%} wnid names); jitmodel reads {p}/train",
                       fix=f"jitplan data prepare {p} <DST> (train/ + val/ with symlinks), then data.path=<DST>; "
                           f"or ln -s . {p}/train to train on everything")
    fails, warns = [], []
    if rep.problems:
        more = f" (and {len(rep.problems) - 3} more)" if len(rep.problems) > 3 else ""
        fails.append("; ".join(rep.problems[:3]) + more)
    if rep.links_outside:
        warns.append(f"{outside_note(rep.links_outside)}; the trainer and jitplan data verify skip them too")
    if rep.links_skipped:
        warns.append(f"{len(rep.links_skipped)} folder link(s) not followed (loops or repeats, e.g. "
                     f"{rep.links_skipped[0]}); the trainer skips them too")
    if rep.hidden_dirs:
        fails.append(f"hidden folders {', '.join(rep.hidden_dirs)} in {rep.train_dir} count as classes and shift "
                     "every label after them")
    if rep.empty_classes:
        fails.append(f"{len(rep.empty_classes)} empty class folder(s) ({', '.join(rep.empty_classes[:3])}): "
                     "ImageFolder refuses them")
    expected = ctx.plan.train.model.num_classes if ctx.plan is not None else None
    if expected is not None and rep.classes > expected:
        fails.append(f"{rep.classes} classes but the plan's model has num_classes={expected} (labels >= "
                     f"{expected} crash the embedding with a device-side assert)")
    if ctx.bad_images:
        fails.append(f"{len(ctx.bad_images)} image(s) fail to decode, e.g. {ctx.bad_images[0]}")
    ck_classes = _ckpt_classes(ctx)
    if ck_classes is not None and ck_classes != rep.classes:
        fails.append(f"{rep.classes} classes but the checkpoint was trained with {ck_classes}")
    if 0 < rep.wnid_fraction < 1.0 or (rep.classes == 1000 and rep.wnid_fraction == 0):
        warns.append(f"only {rep.wnid_fraction:.0%} of class folders are wnids: class indices will not follow the "
                     "standard ImageNet order (pretrained labels will not match)")
    if rep.layout == "ilsvrc":
        warns.append(f"val/ is flat ({rep.val_images:,} images){'' if rep.val_labels else ' without ground truth'}; "
                     "training reads train/ only")
    found = (f"{rep.layout}: {rep.classes} classes, {rep.images:,} images in {rep.train_dir} "
             f"(per class {rep.per_class_min}-{rep.per_class_max})")
    if fails:
        return Finding(id="C10", level="fail", title=title, found=found + "; " + "; ".join(fails + warns),
                       fix="remove hidden/empty folders (e.g. rm -r .ipynb_checkpoints), or rebuild with "
                           "jitplan data prepare; make model.num_classes match the dataset")
    if warns:
        fix = ("map folder names to wnids (LOC_synset_mapping.txt) or build val/ with "
               "jitplan data prepare --val-labels LOC_val_solution.csv")
        if rep.links_outside:
            fix = "remove the links (or copy what they point to into the dataset); " + fix
        return Finding(id="C10", level="warn", title=title, found=found + "; " + "; ".join(warns), fix=fix)
    return Finding(id="C10", level="pass", title=title, found=found)


def _infer(shapes: dict[str, tuple[int, ...]]) -> tuple[Any, str | None]:

    try:
        return infer_model_config(shapes), None
    except ValueError as e:
        return None, str(e)


def _describe(variant: Any, img: Any, classes: Any) -> str:
    return f"{variant} at {img}px ({classes} classes)"


def _check_factory_checkpoint(ck: Any, plan: Any) -> Finding:
    """C11 for a user's network (docs/models.md): the checkpoint's factory, arguments and source digest against
    the plan's model and the source as it is now (what ``jitmodel`` checks before it loads)."""
    title = "checkpoint vs model config"
    saved = ck.saved_config or {}
    n = len(ck.shapes)
    if plan is None:  # no plan: the checkpoint against its own factory's source as it is now
        try:
            custom.check_same_model(saved, custom.record(str(saved["factory"]), saved.get("factory_kwargs")))
        except custom.ModelSpecError as e:
            return Finding(id="C11", level="fail", title=title, found=f"{ck.path}: {e}",
                           fix="sample or resume with the source the checkpoint was trained from")
        return Finding(id="C11", level="pass", title=title,
                       found=f"{saved['factory']} ({n} tensors); its source is unchanged since it was saved")
    current = {"factory": plan.factory, "factory_kwargs": dict(plan.factory_kwargs),
               "source_digest": plan.source_digest}
    try:
        custom.check_same_model({"factory": saved.get("factory"), "factory_kwargs": saved.get("factory_kwargs") or {},
                                 "source_digest": saved.get("source_digest")}, current)
    except custom.ModelSpecError as e:
        return Finding(id="C11", level="fail", title=title, found=f"{ck.path}: {e}",
                       fix="resume with the plan the checkpoint was trained from, or start a new run folder")
    return Finding(id="C11", level="pass", title=title,
                   found=f"{plan.factory} ({n} tensors): factory, arguments and source digest match the plan")


def check_checkpoint(ctx: DoctorContext) -> Finding:
    """C11: the architecture the tensors say vs the checkpoint's saved config vs the plan."""
    title = "checkpoint vs model config"
    if ctx.checkpoint_error:
        return Finding(id="C11", level="fail", title=title, found=ctx.checkpoint_error,
                       fix="check the path; jitmodel and official JiT checkpoints are torch zip files")
    ck = ctx.checkpoint
    if ck is None:
        return Finding(id="C11", level="skip", title=title, found="no checkpoint given (--checkpoint)")
    if not ck.shapes:
        return Finding(id="C11", level="fail", title=title,
                       found=f"{ck.path}: no model state dict among keys {ck.keys[:8]}",
                       fix="pass a jitmodel (last.pt) or official JiT (checkpoint-last.pth) checkpoint")
    saved_factory = (ck.saved_config or {}).get("factory")
    plan_model = ctx.plan.train.model if ctx.plan is not None else None
    if saved_factory or (plan_model is not None and plan_model.factory):
        return _check_factory_checkpoint(ck, plan_model)
    mc, err = _infer(ck.shapes)
    if mc is None:
        return Finding(id="C11", level="fail", title=title, found=f"{ck.path}: {err}",
                       fix="this is not a JiT checkpoint of a known variant")
    pos = next((v for k, v in ck.shapes.items() if k.endswith("pos_embed")), None)
    depth = sum(1 for k in ck.shapes if k.endswith("attn.q_norm.weight")) or "?"
    tensors = _describe(mc.variant, mc.img_size, mc.num_classes)
    evidence = f"pos_embed {pos}, {depth} blocks"
    mismatches = []
    saved = ck.saved_config or {}
    if saved:
        for key in ("variant", "img_size", "num_classes"):
            want = saved.get(key)
            if want is None:
                continue
            have = getattr(mc, key)
            same = (want == have) if key != "variant" else _same_variant(str(want), mc.variant)
            if not same:
                mismatches.append(f"saved {ck.saved_from}.{key}={want!r} but the tensors say {have!r}")
    plan = ctx.plan.train.model if ctx.plan is not None else None
    if plan is not None:
        for key, want in (("variant", plan.variant), ("img_size", plan.img_size), ("num_classes", plan.num_classes)):
            have = getattr(mc, key)
            same = (want == have) if key != "variant" else _same_variant(str(want), mc.variant)
            if not same:
                mismatches.append(f"plan has {key}={want!r}, checkpoint has {have!r}")
    if mismatches:
        want = (_describe(plan.variant, plan.img_size, plan.num_classes) if plan is not None else "its saved config")
        return Finding(id="C11", level="fail", title=title,
                       found=f"checkpoint tensors are {tensors} ({evidence}); {'; '.join(mismatches)}. Loading it into "
                             f"{want} fails with 'size mismatch for net.pos_embed'",
                       fix=f"build the model from the checkpoint itself (variant {mc.variant}, img_size {mc.img_size}, "
                           f"num_classes {mc.num_classes}), or re-plan with --recipe {mc.variant}; a different image "
                           "size or patch cannot be loaded by resampling alone")
    integrity = {"verified": "; tensor digests verified", "unverified": "; no digests (an older checkpoint: "
                 "not verified)"}.get(ck.integrity or "", "")
    return Finding(id="C11", level="pass", title=title,
                   found=f"{tensors} ({evidence}); matches {'the saved config' if saved else 'nothing saved'}"
                         + (" and the plan" if plan is not None else "") + integrity)


def _same_variant(a: str, b: str) -> bool:

    try:
        return get_variant(a).name == get_variant(b).name
    except KeyError:
        return a == b
