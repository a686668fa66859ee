"""Task-agnostic scoring with several heads: prototypes per task, weights from distances.

The continual-BIQA paper's rule (docs/STRATEGIES.md): after task i, K-means
centroids of its training images' routing features are task i's prototypes;
a test image's distance to task i is the smallest distance to those, and
w = softmax(-tau * d) over the seen tasks weights the heads' scores.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.cluster import KMeans


def fit_prototypes(features: torch.Tensor, k: int = 128, n_init: int = 20,
                   max_iter: int = 1000, seed: int = 0) -> torch.Tensor:
    """K-means centroids (min(k, images) of them) of one task's routing features."""
    x = features.detach().cpu().double().numpy()
    n_clusters = max(1, min(k, len(np.unique(x, axis=0))))
    km = KMeans(n_clusters=n_clusters, n_init=n_init, max_iter=max_iter, random_state=seed)
    km.fit(x)
    return torch.from_numpy(km.cluster_centers_).float()


def task_distances(features: torch.Tensor, prototypes: list[torch.Tensor]) -> torch.Tensor:
    """(B, T): the smallest Euclidean distance of each image to each task's prototypes."""
    return torch.stack([torch.cdist(features, p.to(features.device)).min(1).values
                        for p in prototypes], dim=1)


def routing_weights(features: torch.Tensor, prototypes: list[torch.Tensor],
                    tau: float = 32.0) -> torch.Tensor:
    """(B, T) weights over the seen tasks, each row summing to 1: softmax(-tau * d)."""
    return torch.softmax(-tau * task_distances(features, prototypes), dim=1)


def combine(scores: torch.Tensor, weights: torch.Tensor, newest_blend: float = 0.0
            ) -> torch.Tensor:
    """sum_i w_i y_i; with `newest_blend` b, b * y_newest + (1 - b) * that (the field's
    code: b = 0.5)."""
    q = (weights * scores).sum(1)
    return q if not newest_blend else newest_blend * scores[:, -1] + (1 - newest_blend) * q


def pooled(features: torch.Tensor) -> torch.Tensor:
    """Routing features are L2-normalised (pooled by the backbone)."""
    return F.normalize(features.float(), p=2, dim=1)
