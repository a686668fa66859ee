"""Cached features for a frozen backbone: each image goes through the backbone once.

With `model.freeze_backbone` the backbone is a fixed function and training
sees eval-transformed images, so its output for an image never changes:
training the head for every epoch and evaluating the whole forgetting matrix
can reuse one pass. The stream keeps its experiences, splits, targets, row
indices and task labels; only the images become feature vectors.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from avalanche.benchmarks.scenarios.dataset_scenario import benchmark_from_datasets
from avalanche.benchmarks.scenarios.task_aware import with_task_labels
from torch.utils.data import DataLoader

from .stream import Stream, score_dataset


class FeatureRows(torch.utils.data.Dataset):
    """item = (features, target, row), like the image datasets."""

    def __init__(self, features: torch.Tensor, targets: torch.Tensor):
        self.features, self.targets = features, targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return self.features[i], self.targets[i], i


@torch.no_grad()
def extract(embed: Callable[[torch.Tensor], torch.Tensor], dataset, batch_size: int,
            device: torch.device, num_workers: int = 0) -> FeatureRows:
    """Features of every item of `dataset` (its eval transform), in order, on the CPU."""
    loader = DataLoader(dataset.eval(), batch_size=batch_size, num_workers=num_workers,
                        collate_fn=getattr(dataset, "collate_fn", None),
                        pin_memory=device.type == "cuda")
    feats, targets = [], []
    for batch in loader:
        feats.append(embed(batch[0].to(device, non_blocking=True)).float().cpu())
        targets.append(batch[1])
    if not feats:
        return FeatureRows(torch.empty(0, 0), torch.empty(0))
    return FeatureRows(torch.cat(feats), torch.cat(targets))


def feature_stream(stream: Stream, embed: Callable[[torch.Tensor], torch.Tensor],
                   batch_size: int, device: torch.device, num_workers: int = 0) -> Stream:
    """The same stream with every image replaced by `embed(image)`, computed once.

    The global random state is left as it was, so shuffling and initialisation
    draw the same numbers as a run without the cache.
    """
    with torch.random.fork_rng(devices=[]):
        parts = {}
        for part in ("train", "valid", "test"):
            # Task labels from the experiences: an empty part (no validation) shows none.
            parts[part] = [
                score_dataset(extract(embed, exp.dataset, batch_size, device, num_workers),
                              data.task_label)
                for exp, data in zip(getattr(stream.benchmark, f"{part}_stream"),
                                     stream.experiences, strict=True)
            ]
    return Stream(stream.experiences, with_task_labels(benchmark_from_datasets(**parts)))
