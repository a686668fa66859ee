"""timm models as backbones (`model.backbone: timm/<name>`); timm is imported only here.

Pretrained weights never download at run time: they are read from the Hugging Face
cache (where `timm.create_model(..., pretrained=True)` or `hf download` put them on a
connected machine) or from `model.weights`.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.errors import UserError

from .backbone_base import Backbone, load_weights, weights_record

HUB_FILES = ("model.safetensors", "pytorch_model.bin")


def _create(arch: str, **kwargs):
    import timm

    # ViT-style models take any input size this way (padded to a multiple of the patch);
    # models without the options refuse them with a TypeError.
    for dynamic in ({"dynamic_img_size": True, "dynamic_img_pad": True},
                    {"dynamic_img_size": True}):
        try:
            return timm.create_model(arch, **dynamic, **kwargs)
        except TypeError:
            pass
    return timm.create_model(arch, **kwargs)


def timm_arch(name: str, weights_tag: str | None = None) -> str:
    """`timm/<arch>[.<tag>]`, with model.weights_tag as the tag, checked against timm's
    pretrained tags (the tag also picks the normalisation: CLIP's differs)."""
    import timm

    base, _, tag = name[len("timm/"):].partition(".")
    if weights_tag:
        if tag and tag != weights_tag:
            raise UserError(f"model.backbone={name} names the tag '{tag}' and "
                            f"model.weights_tag={weights_tag} another; give one of them")
        tag = weights_tag
    if tag:
        known = [n.partition(".")[2] for n in timm.list_pretrained(f"{base}.*")]
        if tag not in known:
            raise UserError(f"timm model '{base}' has no pretrained tag '{tag}'; its tags: "
                            f"{', '.join(known) or 'none'} (`iqacl models --list {base} "
                            "--tags`)")
    return f"{base}.{tag}" if tag else base


def cached_file(arch: str) -> tuple[Path | None, str, str]:
    """The model's weight file in the Hugging Face cache (None if absent), repo and file."""
    from huggingface_hub import try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(arch)
    repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not repo:
        raise UserError(f"timm model '{arch}' has no Hugging Face weights; set model.weights: "
                        "FILE, or model.pretrained=false")
    names = [cfg.hf_hub_filename] if getattr(cfg, "hf_hub_filename", None) else list(HUB_FILES)
    for filename in names:
        found = try_to_load_from_cache(repo, filename)
        if isinstance(found, str):
            return Path(found), repo, filename
    return None, repo, names[0]


def build_timm(name: str, pretrained: bool, weights: str | None,
               weights_tag: str | None = None) -> Backbone:
    from huggingface_hub.constants import HF_HUB_CACHE

    arch = timm_arch(name, weights_tag)
    info: dict = {"weights_tag": None}
    file = None
    if weights:
        file = Path(weights)
    elif pretrained:
        file, repo, filename = cached_file(arch)
        if file is None:
            raise UserError(
                f"backbone '{name}': weights not in the Hugging Face cache {HF_HUB_CACHE}: "
                f"hub repository {repo}, file {filename}; on a connected machine run "
                f"`hf download {repo} {filename}` (or `python -c \"import timm; "
                f"timm.create_model('{arch}', pretrained=True)\"`), or set model.weights: FILE, "
                "or model.pretrained=false")
        info["weights_tag"] = repo
    net = _create(arch, pretrained=False)
    cfg = net.pretrained_cfg
    classifier = cfg.get("classifier") or ""
    classifier = ",".join(classifier) if isinstance(classifier, (list, tuple)) else classifier
    net.reset_classifier(0)  # before loading: the classifier's keys are then ignored
    if file is not None:
        load_weights(net, file, classifier, name)
        info.update(weights_record(file.resolve()))
    return Backbone(net, int(net.num_features), name, "timm", tuple(cfg.get("mean")),
                    tuple(cfg.get("std")), None, classifier, info)


def timm_names(pattern: str = "", tags: bool = False) -> list[str]:
    """timm's architectures, or with `tags` its pretrained weights as `timm/<arch>.<tag>`."""
    import timm

    listing = timm.list_pretrained if tags else timm.list_models
    return [f"timm/{n}" for n in listing(f"*{pattern}*" if pattern else "")]
