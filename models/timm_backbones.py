"""timm models as backbones (`model.backbone: timm/<name>`); timm is imported only here.

Pretrained weights never download at run time: they are read from the Hugging Face
cache (where `timm.create_model(..., pretrained=True)` or `hf download` put them on a
connected machine) or from `model.weights`.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.errors import UserError

from .backbone_base import Backbone, load_weights, sha256_of

HUB_FILES = ("model.safetensors", "pytorch_model.bin")


def _create(arch: str, **kwargs):
    import timm

    try:  # ViT-style models take any input size (multiples of the patch) this way
        return timm.create_model(arch, dynamic_img_size=True, **kwargs)
    except TypeError:
        return timm.create_model(arch, **kwargs)


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


def build_timm(name: str, pretrained: bool, weights: str | None) -> Backbone:
    from huggingface_hub.constants import HF_HUB_CACHE

    arch = name[len("timm/"):]
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
        info.update(weights_file=str(file.resolve()), sha256=sha256_of(file))
    return Backbone(net, int(net.num_features), name, "timm", tuple(cfg.get("mean")),
                    tuple(cfg.get("std")), None, classifier, info)


def timm_names(pattern: str = "") -> list[str]:
    import timm

    return [f"timm/{n}" for n in timm.list_models(f"*{pattern}*" if pattern else "")]
