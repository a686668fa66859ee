"""Configs: YAML + dotted overrides, merged onto defaults and checked before any work.

Every knob has a default here; a config file only says what differs. A key
that is not here is an error that lists the valid keys (typos never pass
silently). Strategy hyperparameters are checked against the strategy's own
signature by the strategy registry.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from benchmarks.errors import UserError

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "stream": [
        {"name": "EVA", "format": "eva", "root": "data/EVA"},
        {"name": "AVA", "format": "ava", "root": "data/AVA"},
    ],
    "data": {
        "image_size": 224,
        "test_fraction": 0.2,   # where a dataset has no official test split or lists
        "val_fraction": 0.1,    # of what the test split leaves, or of all (val_fraction_of)
        "val_fraction_of": "rest",  # "rest" (today's) or "all": 0.7 / 0.1 / 0.2 exactly
        "split": 1,             # fills {k} in split-list paths (the field's splits 1..10)
        "transform": "",        # "" = each entry's (default by format) | resize | crop
        "adaptive_resize": 0,   # crop: short side to N when both sides exceed N (0: off)
        "crop_eval": "whole",   # crop: evaluate the whole image, or "five_crop" (mean)
        "crop_scale": [0.5, 1.0],
        "num_workers": 0,       # DataLoader worker processes (also decode the image cache)
        "cache": False,         # decode + resize each image once into data.cache_dir
        "cache_dir": "",        # "" = ~/.cache/iqacl/images ($XDG_CACHE_HOME respected)
        "decode": "cpu",        # or "gpu": nvJPEG on the training device (JPEG files only)
        "max_dropped_fraction": 0.01,  # stop if more of an experience is missing/unreadable
    },
    "model": {
        "backbone": "mobilenet_v2",  # any torchvision classification model, or timm/<name>
        "pretrained": True,
        "head": "similarity",   # or "regression"
        "embed_dim": 128,
        "heads": "shared",      # or "per_task" (uses task labels at test time)
        "freeze_backbone": False,  # linear probe: backbone fixed (eval mode), head trained
        "cache_features": True,    # with a frozen backbone: run it once per image
        "weights": "",          # a weight file (state dict, weights_only) instead of a cache
        "weights_tag": "",      # torchvision weights by name (IMAGENET1K_V2); "" = default
    },
    "loss": {
        "name": "mse_ranking",  # or "fidelity": the field's loss on in-batch pairs
        "ranking_weight": 0.1,  # mse_ranking: weight of the pairwise ranking term
        "margin": 0.1,          # mse_ranking: its hinge margin
        "target": "binary",     # fidelity: binary ([mu1 > mu2]) or continuous (needs stds)
        "eps": 1.0e-8,          # fidelity: inside its square roots
    },
    "train": {
        "epochs": 5,
        "batch_size": 32,
        "lr": 3.0e-4,
        "weight_decay": 0.0,
        "optimizer": {"name": "adam", "momentum": 0.9, "nesterov": False},  # adam|adamw|sgd
        "schedule": {"name": "none", "step": 3, "gamma": 0.1},  # none | step | cosine
        "warmup_epochs": 0,     # first epochs of each experience: head(s) only
        "warmup_batch_size": 0,  # their batch size (0: train.batch_size)
        "select": "last",       # or "best_val": the epoch with the best validation SRCC
        "fresh_optimizer": False,  # clear the optimizer's state at each experience
        "device": "auto",       # auto | cpu | cuda | cuda:N
        "amp": False,           # CUDA: bf16 autocast + channels_last
    },
    "eval": {
        "batch_size": 64,
        "plcc_fit": "none",     # or "logistic" (4-parameter, as in many IQA papers)
        "validation": True,     # also evaluate the validation splits after each experience
        # Multi-head models: oracle (dataset s by head s, task-aware), newest (the last
        # head for all) or weighted (task-agnostic routing by prototypes; docs/STRATEGIES.md)
        "heads": "oracle",
        "routing": {
            "features": "initial",  # the frozen initial network's, or "current" (drifts)
            "k": 128,              # K-means prototypes per task (capped by its images)
            "tau": 32.0,           # w = softmax(-tau * distance) over the seen tasks
            "newest_blend": 0.0,   # b * newest head + (1 - b) * weighted (the field's: 0.5)
            "n_init": 20,          # K-means restarts (the field's 20)
            "max_iter": 1000,
            "levels": [],          # backbone modules whose pooled outputs route (TSN: the
                                   # last two stages); []: the backbone's pooled features
            "argmax": False,       # score by the most likely task's head alone
            "network": "initial",  # the routing network: the initial model, or a smaller
                                   # frozen backbone by name (as the field's SCNN branch)
            "image_size": None,    # the routing network sees each image resized to this
                                   # square (None: as the test transform gives); cheaper
        },
    },
    "strategy": {"name": "naive"},
    "log": {
        "progress": True,       # Avalanche's interactive progress bars and metric lines
        "plots": True,          # heatmaps and curves in RUN_DIR
        "report": True,         # RUN_DIR/report.html: one self-contained page (iqacl report)
        "csv": True,            # every metric value in RUN_DIR/metrics.csv
        "tensorboard": False,   # Avalanche's TensorboardLogger in RUN_DIR/tensorboard
        "wandb": {
            "enabled": False,
            "mode": "offline",  # "online" when you are logged in (`wandb login`)
            "project": "iqacl",
            "entity": None,
            "group": None,
            "tags": [],
            "name": None,
        },
    },
}

# Keys a stream entry may have; None means "no default" (optional).
STREAM_ENTRY: dict[str, Any] = {
    "name": "", "format": "", "root": "",
    "labels": None,          # label file, relative to root; each format has a default
    "scale": None,           # [low, high] of the scores; needed for csv and json
    "split_by": None,        # reference | image | category (EVA: one experience each);
                             # default: by reference where the dataset has references
    "splits": None,          # {train: F, val: F, test: F}: the field's split lists
    "direction": None,       # list: higher_better | lower_better
    "transform": None,       # resize | crop (default by format)
    "test_fraction": None,   # overrides data.test_fraction for this entry
    "official_split": True,  # AVA's generic_test.jpgl, KonIQ's sets file, when present
    "columns": None,         # csv: {id: ..., score: ..., path: ...}
    "delimiter": None,       # csv: default ","
}


def load_config(path: str | Path | None = None, overrides: list[str] | tuple = ()) -> dict:
    """Defaults <- YAML file <- `a.b=value` overrides, validated."""
    user: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"config file {path} not found")
        try:
            user = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(user, dict):
            raise UserError(f"{path}: the config must be a mapping of keys to values")
    config = merge(DEFAULTS, user, "")
    config["stream"] = [merge_entry(e, i) for i, e in enumerate(config["stream"])]
    for item in overrides:
        config = apply_override(config, item)
    validate(config)
    return config


def merge(base: Any, user: Any, where: str) -> Any:
    if isinstance(base, dict) and "name" in base and isinstance(user, str):
        user = {"name": user}  # train.schedule=step: the name alone, its defaults
    if isinstance(base, dict) and where != "strategy":
        if not isinstance(user, dict):
            raise UserError(f"config key '{where}' must be a mapping, got {user!r}")
        unknown = sorted(set(user) - set(base))
        if unknown:
            raise UserError(
                f"unknown config key '{_join(where, unknown[0])}'; valid keys"
                f"{' under ' + where if where else ''}: {sorted(base)}"
            )
        out = copy.deepcopy(base)
        for key, value in user.items():
            out[key] = merge(base[key], value, _join(where, key))
        return out
    if where == "strategy":
        if not isinstance(user, dict) or "name" not in {**base, **user}:
            raise UserError("config key 'strategy' must be a mapping with a 'name'")
        return {**base, **user}
    if where == "stream":
        if not isinstance(user, list):
            raise UserError("config key 'stream' must be a list of dataset entries")
        return [merge_entry(e, i) for i, e in enumerate(user)]
    return _typed(base, user, where)


def merge_entry(entry: Any, i: int) -> dict:
    if not isinstance(entry, dict):
        raise UserError(f"stream entry {i} must be a mapping, got {entry!r}")
    unknown = sorted(set(entry) - set(STREAM_ENTRY))
    if unknown:
        raise UserError(f"unknown key '{unknown[0]}' in stream entry {i}; valid keys: "
                        f"{sorted(STREAM_ENTRY)}")
    for key in ("name", "format", "root"):
        if not entry.get(key):
            raise UserError(f"stream entry {i} needs '{key}'")
    out = {**STREAM_ENTRY, **entry}
    out["name"], out["root"] = str(out["name"]), str(out["root"])
    return out


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _typed(default: Any, value: Any, where: str) -> Any:
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        if isinstance(value, str):  # YAML reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, list):
        ok = isinstance(value, list) and (not default or len(value) == len(default))
    else:
        ok = True
    if not ok:
        raise UserError(f"config key '{where}' = {value!r}: expected a value like {default!r}")
    return value


def apply_override(config: dict, item: str) -> dict:
    """`train.epochs=3`, `strategy.name=ewc`, `stream.0.root=/data/EVA` or `stream.EVA.root=...`."""
    if "=" not in item:
        raise UserError(f"override '{item}' must look like key.path=value")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise UserError(f"override '{item}': the value is not valid YAML "
                        f"({str(exc).splitlines()[0]}); quote it, e.g. "
                        f"{key}='\"...\"', or set it in the config file") from None
    parts = key.strip().split(".")
    if parts[0] == "stream" and len(parts) in (3, 4):
        entries = config["stream"]
        i = next((i for i, e in enumerate(entries) if parts[1] in (str(i), e["name"])), None)
        if i is None:
            raise UserError(f"override '{key}': no stream entry with index or name "
                            f"'{parts[1]}'; entries: {[e['name'] for e in entries]}")
        if len(parts) == 4:  # one key of a mapping in the entry: stream.LIVE.splits.test=F
            value = {**(entries[i].get(parts[2]) or {}), parts[3]: value}
        entries[i] = merge_entry({**entries[i], parts[2]: value}, i)
        return config
    nested: Any = value
    for part in reversed(parts):
        nested = {part: nested}
    return merge(config, nested, "")


def validate(config: dict) -> None:
    """Impossible values are caught here, before any data is read or model built."""
    checks = [
        (len(config["stream"]) >= 1, "stream", "needs at least one dataset entry"),
        (config["train"]["epochs"] >= 1, "train.epochs", "must be at least 1"),
        (config["train"]["batch_size"] >= 1, "train.batch_size", "must be at least 1"),
        (config["eval"]["batch_size"] >= 1, "eval.batch_size", "must be at least 1"),
        (config["train"]["lr"] > 0, "train.lr", "must be positive"),
        (0 < config["data"]["test_fraction"] < 1, "data.test_fraction", "must be in (0, 1)"),
        (0 <= config["data"]["val_fraction"] < 1, "data.val_fraction", "must be in [0, 1)"),
        (config["loss"]["name"] in ("mse_ranking", "fidelity"), "loss.name",
         "must be 'mse_ranking' or 'fidelity'"),
        (config["loss"]["target"] in ("binary", "continuous"), "loss.target",
         "must be 'binary' or 'continuous'"),
        (config["train"]["optimizer"]["name"] in ("adam", "adamw", "sgd"),
         "train.optimizer.name", "must be 'adam', 'adamw' or 'sgd'"),
        (not config["train"]["optimizer"]["nesterov"]
         or config["train"]["optimizer"]["momentum"] > 0, "train.optimizer.nesterov",
         "needs train.optimizer.momentum above 0"),
        (config["train"]["schedule"]["name"] in ("none", "step", "cosine"),
         "train.schedule.name", "must be 'none', 'step' or 'cosine'"),
        (config["train"]["schedule"]["step"] >= 1, "train.schedule.step", "must be 1 or more"),
        (0 <= config["train"]["warmup_epochs"] < config["train"]["epochs"],
         "train.warmup_epochs", "must be 0 or more and below train.epochs (the warm-up "
         "epochs are the first of train.epochs)"),
        (config["train"]["warmup_batch_size"] >= 0, "train.warmup_batch_size",
         "must be 0 (train.batch_size) or more"),
        (config["train"]["select"] in ("last", "best_val"), "train.select",
         "must be 'last' or 'best_val'"),
        (not (config["train"]["warmup_epochs"] and config["model"]["freeze_backbone"]),
         "train.warmup_epochs", "trains the head(s) alone first; with "
         "model.freeze_backbone=true every epoch does, so leave it 0"),
        (config["data"]["image_size"] >= 32, "data.image_size", "must be at least 32"),
        (config["data"]["num_workers"] >= 0, "data.num_workers", "must be 0 or more"),
        (0 <= config["data"]["max_dropped_fraction"] <= 1, "data.max_dropped_fraction",
         "must be in [0, 1]"),
        (config["data"]["decode"] in ("cpu", "gpu"), "data.decode", "must be 'cpu' or 'gpu'"),
        (not (config["data"]["decode"] == "gpu" and config["data"]["cache"]), "data.decode",
         "= 'gpu' decodes JPEG files on the device; it cannot be combined with data.cache"),
        (not (config["data"]["decode"] == "gpu" and config["model"]["freeze_backbone"]
              and config["model"]["cache_features"]), "data.decode",
         "= 'gpu' is not needed with cached features (each image is decoded once); "
         "use data.decode=cpu"),
        (config["data"]["val_fraction_of"] in ("rest", "all"), "data.val_fraction_of",
         "must be 'rest' or 'all'"),
        (config["data"]["test_fraction"] + config["data"]["val_fraction"] < 1
         or config["data"]["val_fraction_of"] == "rest", "data.val_fraction",
         "+ data.test_fraction must be below 1 with val_fraction_of=all"),
        (config["data"]["split"] >= 1, "data.split", "must be 1 or more"),
        (config["data"]["transform"] in ("", "resize", "crop"), "data.transform",
         "must be '', 'resize' or 'crop'"),
        (config["data"]["adaptive_resize"] >= 0, "data.adaptive_resize", "must be 0 or more"),
        (config["data"]["crop_eval"] in ("whole", "five_crop"), "data.crop_eval",
         "must be 'whole' or 'five_crop'"),
        (not (config["data"]["crop_eval"] == "five_crop" and config["model"]["freeze_backbone"]
              and config["model"]["cache_features"]), "data.crop_eval",
         "= 'five_crop' scores the mean over crops, which cached features cannot; use "
         "model.cache_features=false or data.crop_eval=whole"),
        (config["eval"]["plcc_fit"] in ("none", "logistic"), "eval.plcc_fit",
         "must be 'none' or 'logistic'"),
        (config["eval"]["heads"] in ("oracle", "newest", "weighted"), "eval.heads",
         "must be 'oracle', 'newest' or 'weighted'"),
        (config["eval"]["routing"]["features"] in ("initial", "current"),
         "eval.routing.features", "must be 'initial' or 'current'"),
        (config["eval"]["routing"]["k"] >= 1, "eval.routing.k", "must be 1 or more"),
        (config["eval"]["routing"]["tau"] > 0, "eval.routing.tau", "must be positive"),
        (0 <= config["eval"]["routing"]["newest_blend"] <= 1, "eval.routing.newest_blend",
         "must be in [0, 1]"),
        (config["eval"]["routing"]["n_init"] >= 1, "eval.routing.n_init", "must be 1 or more"),
        (config["eval"]["routing"]["network"] == "initial"
         or config["eval"]["routing"]["features"] == "initial", "eval.routing.network",
         "names a frozen routing network, which only eval.routing.features=initial uses; "
         "set features=initial or network=initial"),
        (config["eval"]["routing"]["image_size"] is None
         or config["eval"]["routing"]["image_size"] >= 16, "eval.routing.image_size",
         "must be null or 16 or more (pixels)"),
        (config["model"]["heads"] in ("shared", "per_task"), "model.heads",
         "must be 'shared' or 'per_task'"),
        (config["log"]["wandb"]["mode"] in ("offline", "online", "disabled"), "log.wandb.mode",
         "must be 'offline', 'online' or 'disabled'"),
    ]
    for ok, key, msg in checks:
        if not ok:
            raise UserError(f"config key '{key}' {msg}")
    for i, entry in enumerate(config["stream"]):
        tf = entry.get("test_fraction")
        if tf is not None and not 0 < tf < 1:
            raise UserError(f"stream entry {i} ('{entry['name']}'): test_fraction must be in "
                            "(0, 1)")
        if entry.get("split_by") not in (None, "category", "reference", "image"):
            raise UserError(f"stream entry {i} ('{entry['name']}'): split_by must be "
                            "'reference', 'image', 'category' or absent")
        if entry.get("transform") not in (None, "resize", "crop"):
            raise UserError(f"stream entry {i} ('{entry['name']}'): transform must be "
                            "'resize' or 'crop'")
