"""Scoring a multi-head model without task labels (`eval.heads`).

- `oracle`: dataset s by head s (task-aware; the model's own forward).
- `newest`: every image by the last trained head.
- `weighted`: the continual-BIQA paper's routing (models.routing): after each
  experience, K-means prototypes of its training images' routing features;
  at test, a softmax over the seen tasks of minus tau times the distance to
  each task's prototypes weights the heads' scores.

Routing features come from a frozen copy of the initial network (`initial`:
they never drift, so each image's are computed once per run and cached) or
from the model being trained (`current`: old prototypes go stale). A smaller
frozen network (`network`: a backbone name, as the field's SCNN branch is)
or a smaller input (`image_size`: each image resized to that square, one batch)
makes routing cheaper; every training image passes it once. Features are the
backbone's pooled output, or (`levels`, TSN's routing) the globally pooled
outputs of named backbone modules, each with its own prototypes, the weights
averaged over levels. `argmax` scores by the most likely task's head alone. Only the
test rows after each experience are routed; the best-epoch selection inside
an experience scores its own dataset by its own head.
"""

from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F
from avalanche.core import SupervisedPlugin
from avalanche.evaluation.metric_utils import stream_type
from torch.utils.data import DataLoader

from benchmarks.errors import UserError
from benchmarks.images.crops import ImageList, map_images
from models.routing import combine, fit_prototypes, pooled, routing_weights

HEAD_USAGE = ("oracle", "newest", "weighted")
LAST_TWO = "last_two_stages"  # eval.routing.levels: [last_two_stages], TSN's routing
TASK_AWARE = {"oracle": True, "newest": False, "weighted": False}


class HeadRouting(SupervisedPlugin):
    """Prototypes after each experience; `score` replaces the eval forward."""

    scores_eval = True  # the template asks it for the eval minibatch's scores
    reads_dataset = True  # the training images' routing features, by the test transform

    def __init__(self, heads: str = "weighted", features: str = "initial", k: int = 128,
                 tau: float = 32.0, newest_blend: float = 0.0, n_init: int = 20,
                 max_iter: int = 1000, levels: list | None = None, argmax: bool = False,
                 network: str = "initial", image_size: int | None = None,
                 pretrained: bool = False, seed: int = 0):
        super().__init__()
        self.heads, self.source = heads, features
        self.network, self.image_size, self.pretrained = network, image_size, pretrained
        self.levels, self.argmax = list(levels or []), argmax
        self._dims: list[int] = []  # feature size per level
        self.k, self.tau, self.newest_blend = k, tau, newest_blend
        self.n_init, self.max_iter, self.seed = n_init, max_iter, seed
        self.net: torch.nn.Module | None = None  # the frozen initial network
        self.seen: list[int] = []  # task labels, in training order
        self.prototypes: dict[int, list[torch.Tensor]] = {}  # task -> per level
        # (stream, experience) -> (features (N, D), computed (N,)): `initial` features only
        self._cache: dict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = {}
        # where routing's time goes (perf): all features, those of training images, K-means
        self.seconds = {"features": 0.0, "training": 0.0, "kmeans": 0.0}

    def see_initial_model(self, model: torch.nn.Module) -> None:
        """The routing network, frozen: a copy of the model before any training, or the
        backbone `network` names."""
        if self.heads == "weighted" and self.source == "initial":
            if self.network == "initial":
                self.net = copy.deepcopy(model)
            else:
                from models import build_model
                try:
                    self.net = build_model(self.network, pretrained=self.pretrained)
                except UserError as err:
                    raise UserError(f"eval.routing.network: {err}") from None
            self.net.eval()
            for p in self.net.parameters():
                p.requires_grad_(False)
        router = self.net if self.net is not None else model
        names = dict(router.backbone.named_modules())
        if self.levels == [LAST_TWO]:
            self.levels = last_two_stages(router)
        unknown = [n for n in self.levels if n not in names]
        if unknown:
            raise UserError(f"eval.routing.levels: the backbone has no module '{unknown[0]}'; "
                            f"its top-level modules: {[n for n in names if n and '.' not in n]}")

    # -- features ---------------------------------------------------------------------------
    def _embed(self, strategy, x) -> torch.Tensor:
        net = self.net if self.net is not None else strategy.model
        if self.net is not None:
            self.net.to(strategy.device)
        started = time.perf_counter()
        with torch.no_grad():
            if k := net.crops_of(x):  # five crops: their mean feature
                out = self._levels(net, x.flatten(0, 1)).view(len(x), k, -1).mean(1)
            else:
                out = self._levels(net, x)
        self.seconds["features"] += time.perf_counter() - started
        return out

    def _levels(self, net, x) -> torch.Tensor:
        """(B, sum of the levels' sizes): each level's pooled, L2-normalised features."""
        own = self.net is None or self.network == "initial"  # the model's own backbone
        if own and not self.levels and not self.image_size:
            return pooled(net.features(x))  # cached backbone features too
        if x.dim() == 2:
            raise UserError("eval.routing.levels, network and image_size need images, not "
                            "cached backbone features; set model.cache_features=false")
        if self.image_size:  # one square batch, whatever the images' sizes
            x = self._resized(net, x)
        if not self.levels:
            return map_images(lambda batch: pooled(net.backbone(net.as_input(batch))), x)
        return map_images(lambda batch: self._level_batch(net, batch), x)

    def _resized(self, net, x) -> torch.Tensor:
        """(B, 3, S, S) floats in [0, 1], S = `image_size`: each image resized (bilinear,
        antialiased); routing needs only a global feature, so the aspect ratio may go."""
        images = x.images if isinstance(x, ImageList) else [x]
        out = [F.interpolate(as_unit(im if im.dim() == 4 else im[None]),
                             size=(self.image_size,) * 2, mode="bilinear", antialias=True,
                             align_corners=False) for im in images]
        return torch.cat(out)

    def _level_batch(self, net, x: torch.Tensor) -> torch.Tensor:
        outputs = []
        hooks = [net.backbone.get_submodule(n).register_forward_hook(
            lambda m, i, o: outputs.append(o)) for n in self.levels]
        try:
            net.backbone(net.as_input(x))
        finally:
            for h in hooks:
                h.remove()
        feats = [pooled(o.flatten(2).mean(2) if o.dim() > 2 else o) for o in outputs]
        self._dims = [f.shape[1] for f in feats]
        return torch.cat(feats, dim=1)

    def split(self, features: torch.Tensor) -> list[torch.Tensor]:
        """Per level (one without `levels`)."""
        return list(features.split(self._dims, dim=1)) if self.levels else [features]

    def features(self, strategy) -> torch.Tensor:
        """The eval minibatch's routing features, from the cache where they are there."""
        if self.net is None:
            return self._embed(strategy, strategy.mb_x)
        rows = strategy.mbatch[2].long().cpu()
        key = (stream_type(strategy.experience), strategy.experience.current_experience)
        if key not in self._cache:
            n = len(strategy.experience.dataset)
            self._cache[key] = (torch.empty(0), torch.zeros(n, dtype=torch.bool))
        feats, done = self._cache[key]
        if not bool(done[rows].all()):
            new = self._embed(strategy, strategy.mb_x).cpu()
            if feats.numel() == 0:
                feats = torch.zeros(len(done), new.shape[1])
            feats[rows], done[rows] = new, True
            self._cache[key] = (feats, done)
        return feats[rows].to(strategy.device)

    def training_features(self, strategy) -> torch.Tensor:
        """Routing features of the experience's training images, by the test transform."""
        before = self.seconds["features"]
        data = strategy.experience.dataset.eval()
        loader = DataLoader(data, batch_size=strategy.eval_mb_size,
                            collate_fn=getattr(data, "collate_fn", None))
        out = []
        for batch in loader:
            x = batch[0]
            x = x.to(strategy.device) if hasattr(x, "to") else x
            out.append(self._embed(strategy, x).cpu())
        self.seconds["training"] += self.seconds["features"] - before
        return torch.cat(out)

    # -- hooks ------------------------------------------------------------------------------
    def after_training_exp(self, strategy, **kwargs) -> None:
        task = strategy.experience.task_label
        if self.heads == "weighted":
            features = self.training_features(strategy)
            started = time.perf_counter()
            self.prototypes[task] = [
                fit_prototypes(f, self.k, self.n_init, self.max_iter, self.seed + task)
                for f in self.split(features)]
            self.seconds["kmeans"] += time.perf_counter() - started
        if task not in self.seen:
            self.seen.append(task)

    def score(self, strategy) -> torch.Tensor | None:
        """The eval minibatch's scores; None before any experience (every head the same)."""
        if not self.seen:
            return None
        scores = strategy.model.head_scores(strategy.mb_x, self.seen)
        if self.heads == "newest":
            return scores[:, -1]
        levels = self.split(self.features(strategy))
        weights = sum(routing_weights(f, [self.prototypes[t][i] for t in self.seen], self.tau)
                      for i, f in enumerate(levels)) / len(levels)
        strategy.mb_route = weights
        if self.argmax:  # the most likely task's head alone
            return scores.gather(1, weights.argmax(1, keepdim=True)).squeeze(1)
        return combine(scores, weights, self.newest_blend)

    # -- the state contract -----------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"seen": list(self.seen), "dims": list(self._dims),
                "prototypes": {t: [p.clone() for p in ps] for t, ps in self.prototypes.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.seen, self._dims = list(state["seen"]), list(state["dims"])
        self.prototypes = {t: list(ps) for t, ps in state["prototypes"].items()}

    def record(self) -> dict:
        """results.json's description of how heads were used."""
        out = {"heads": self.heads, "task_aware": TASK_AWARE[self.heads]}
        if self.heads == "weighted":
            out.update(features=self.source, network=self.network,
                       image_size=self.image_size, k=self.k, tau=self.tau,
                       newest_blend=self.newest_blend, n_init=self.n_init,
                       max_iter=self.max_iter, levels=self.levels, argmax=self.argmax,
                       prototypes={str(t): len(ps[0]) for t, ps in self.prototypes.items()})
        return out


def check_heads(heads: str, strategy: str, protocol: str, model: torch.nn.Module) -> None:
    """eval.heads other than oracle chooses among one head per task, through a stream."""
    from models.iqa import MultiHeadIQAModel

    if heads == "oracle":
        return
    if protocol != "stream":
        raise UserError(f"eval.heads = {heads}: strategy '{strategy}' trains one model on "
                        "everything (one head); use eval.heads=oracle")
    if not isinstance(model, MultiHeadIQAModel):
        raise UserError(f"eval.heads = {heads} chooses among one head per task; set "
                        "model.heads=per_task (or use a per-task strategy such as packnet)")


def as_unit(x: torch.Tensor) -> torch.Tensor:
    """Images as floats in [0, 1] (uint8 ones divided by 255)."""
    return x.float().div(255) if x.dtype == torch.uint8 else x


def last_two_stages(model: torch.nn.Module, size: int = 224) -> list[str]:
    """The last module of each of the backbone's two last resolutions (ResNet: layer3,
    layer4; MobileNetV2: features.13, features.18), found by one probe image."""
    backbone = model.backbone
    candidates = [(n, m) for n, m in backbone.named_children() if n != "features"]
    if hasattr(backbone, "features"):
        candidates += [(f"features.{n}", m) for n, m in backbone.features.named_children()]
    seen: list[tuple[str, tuple]] = []
    hooks = [m.register_forward_hook(
        lambda mod, i, o, n=n: seen.append((n, tuple(o.shape[-2:])))
        if isinstance(o, torch.Tensor) and o.dim() == 4 and o.shape[-1] * o.shape[-2] > 1
        else None) for n, m in candidates]
    was = backbone.training
    try:
        backbone.eval()
        with torch.no_grad():
            backbone(torch.zeros(1, 3, size, size))
    finally:
        backbone.train(was)
        for h in hooks:
            h.remove()
    last: dict[tuple, str] = {}
    for name, res in seen:
        last[res] = name
    if len(last) < 2:
        raise UserError("eval.routing.levels=[last_two_stages]: the backbone has no two "
                        "feature resolutions to route on; name the modules instead")
    return list(last.values())[-2:]
