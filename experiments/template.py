"""Avalanche's supervised template with the suite's fast paths.

- bf16 autocast and channels_last on CUDA (`train.amp`); outputs go back to
  float32 before the loss, so the loss, metrics and regularisers see fp32.
- nvJPEG decoding on the device (`data.decode: gpu`): the minibatch holds
  encoded files until here.
- Unreadable samples are found on the CPU, before the copy to the device, so
  no minibatch waits on the GPU to learn whether a target was NaN.
- Training batches of all an experience's epochs come from one DataLoader
  pass (`benchmarks.images.loaders`), so the workers do not stop between epochs.
- Evaluation uses one pool of workers for every evaluated dataset
  (`benchmarks.images.loaders.EvalPool`): Avalanche would build a new DataLoader,
  starting all its workers, for each experience at each evaluation.
- On CUDA the images of each minibatch are copied on a side stream
  (`benchmarks.images.loaders.ImagesAhead`), overlapping the previous minibatch's
  compute; Avalanche copies on the compute stream, after it.
- Per evaluation call, Avalanche walks the model three times (its adaptation,
  `model.to(device)`, and restoring each module's train flag with the
  recursive `train()`); here one walk finds whether any DynamicModule needs
  adapting and any tensor moving, and flags are set directly. Without a pool,
  evaluation batches come from a plain DataLoader (Avalanche's adds a
  multi-dataset sampler). Together about 2.5 ms per evaluated experience: 1%
  of a 313-image evaluation at 64 px on 2 CPU cores (`make perf`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
from avalanche.benchmarks import OnlineCLExperience
from avalanche.benchmarks.utils.data_loader import collate_from_data_or_kwargs
from avalanche.distributed import DistributedHelper
from avalanche.models.dynamic_modules import DynamicModule
from avalanche.models.utils import avalanche_model_adaptation
from avalanche.training.templates import SupervisedTemplate
from torch.utils.data import DataLoader

from benchmarks.images.gpu_decode import JpegDecoder
from benchmarks.images.loaders import EpochLoader, EvalPool, ImagesAhead
from benchmarks.metrics.plugins import unreadable_rows


class IQATemplate(SupervisedTemplate):
    def __init__(self, *, amp: bool = False, decoder: JpegDecoder | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.amp = amp and self.device.type == "cuda"
        self.decoder = decoder
        self.mb_unreadable: list[tuple[int, int]] = []
        self.eval_pools: dict[tuple, EvalPool] = {}  # by batch size, workers, pinning
        if self.amp:
            self.model.to(memory_format=torch.channels_last)
        # Encoded files (nvJPEG) are decoded on the device from the CPU batch: nothing to copy.
        self.copy_ahead = self.device.type == "cuda" and decoder is None
        self._copy_stream: torch.cuda.Stream | None = None
        # Workers write images into a pinned ring (None: where the loader pins for CUDA).
        self.pinned_ring: bool | None = None

    def _load_train_state(self, prev_state: dict) -> None:
        """Avalanche's restore after an evaluation, with each module's train/eval flag set
        directly: Avalanche calls the recursive `train()` on every module (quadratic in the
        depth), and the saved flags already are what any custom `train()` had made them."""
        for key, value in prev_state.items():  # experience, is_training, dataloader, ...
            if key != "model_training_mode":
                setattr(self, key, value)
        modes = prev_state["model_training_mode"]
        for name, layer in self.model.named_modules():
            # `training` is a plain attribute: Module.__setattr__'s checks are for tensors.
            layer.__dict__["training"] = modes.get(name, True)  # unknown: added during eval

    def model_adaptation(self, model=None):
        """Avalanche's adaptation (BatchObservation) in one walk over the modules: its own
        walk only calls DynamicModules (none in a single-head model), and its final
        `model.to(device)` walks every tensor again though they are there already."""
        model = self.model if model is None else model
        modules = list(model.modules())
        if any(isinstance(m, DynamicModule) for m in modules):
            exp = self.experience
            if isinstance(exp, OnlineCLExperience) and self.is_training and \
                    exp.access_task_boundaries:
                exp = exp.origin_experience
            avalanche_model_adaptation(model, exp)
            modules = list(model.modules())  # adaptation may add modules
        if not _all_on(modules, self.device):
            model.to(self.device)
        return model

    def make_train_dataloader(self, num_workers: int = 0, shuffle: bool = True,
                              pin_memory: bool | None = None,
                              persistent_workers: bool = False, drop_last: bool = False,
                              **kwargs) -> None:
        args = dict(num_workers=num_workers, shuffle=shuffle, pin_memory=pin_memory,
                    persistent_workers=persistent_workers, drop_last=drop_last, **kwargs)
        data = self.adapted_dataset
        # Avalanche's loader balances tasks within a batch (joint training sees several);
        # with one task per experience, one pass through all epochs keeps the workers busy.
        if num_workers == 0 or kwargs or len(data.targets_task_labels.uniques) != 1:
            return super().make_train_dataloader(**args)
        self.dataloader = EpochLoader(data, self.train_epochs, self.train_mb_size, shuffle,
                                      drop_last, **self._workers(num_workers, pin_memory))
        return None

    def eval(self, exp_list, **kwargs):
        # Every experience of the stream joins the pool before the first pass, so its
        # workers start once for the stream rather than once per new experience.
        pool = self._eval_pool(**kwargs)
        if pool is not None:
            for exp in (exp_list if isinstance(exp_list, Iterable) else [exp_list]):
                pool.add(exp.dataset, exp.dataset.eval())
        return super().eval(exp_list, **kwargs)

    def training_epoch(self, **kwargs):
        with self._images_ahead():
            return super().training_epoch(**kwargs)

    def eval_epoch(self, **kwargs):
        with self._images_ahead():
            return super().eval_epoch(**kwargs)

    @contextmanager
    def _images_ahead(self) -> Iterator[None]:
        """`self.dataloader` with its images copied on a side stream, for one epoch. Wrapped
        here rather than where it is made, so loaders that plugins swap in (replay) count."""
        if not self.copy_ahead:
            yield
            return
        if self._copy_stream is None:
            self._copy_stream = torch.cuda.Stream(self.device)
        loader = self.dataloader
        self.dataloader = ImagesAhead(loader, self._copy_stream)
        try:
            yield
        finally:
            self.dataloader = loader

    def make_eval_dataloader(self, **kwargs) -> None:
        pool = self._eval_pool(**kwargs)
        if pool is not None:
            self.dataloader = pool.batches(self.experience.dataset, self.adapted_dataset)
        elif "ffcv_args" in kwargs or DistributedHelper.is_distributed:
            super().make_eval_dataloader(**kwargs)
        else:
            # Avalanche's SingleDatasetDataLoader yields the same batches in the same order,
            # through a multi-dataset sampler and a ConcatDataset lookup per item.
            args = self._obtain_common_dataloader_parameters(batch_size=self.eval_mb_size,
                                                             **kwargs)
            collate_from_data_or_kwargs(self.adapted_dataset, args)
            self.dataloader = DataLoader(self.adapted_dataset, **args)

    def _eval_pool(self, num_workers: int = 0, shuffle: bool = False,
                   pin_memory: bool | None = None, persistent_workers: bool = False,
                   **kwargs) -> EvalPool | None:
        """The pool for these loader arguments; None where Avalanche's own loader is used."""
        if not (persistent_workers and num_workers > 0) or shuffle or kwargs:
            return None
        args = self._workers(num_workers, pin_memory)
        key = (self.eval_mb_size, *sorted(args.items()))
        if key not in self.eval_pools:
            self.eval_pools[key] = EvalPool(self.eval_mb_size, **args)
        return self.eval_pools[key]

    def _workers(self, num_workers: int, pin_memory: bool | None) -> dict:
        # Avalanche's defaults (pinned memory on CUDA), as its own loaders get them.
        args = self._obtain_common_dataloader_parameters(num_workers=num_workers,
                                                         pin_memory=pin_memory)
        return {**args, "device": self.device, "ring": self.pinned_ring}

    def _unpack_minibatch(self):
        mb = self.mbatch
        if self.decoder is not None:
            mb[0], failed = self.decoder(mb[0], train=self.is_training)
            if failed:
                mb[1] = mb[1].clone()
                mb[1][failed] = float("nan")
        self.mb_unreadable = unreadable_rows(mb)  # still on the CPU: no device sync
        super()._unpack_minibatch()
        if self.amp and self.mbatch[0].dim() == 4:
            self.mbatch[0] = self.mbatch[0].contiguous(memory_format=torch.channels_last)

    def forward(self):
        if not self.amp:
            return super().forward()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = super().forward()
        return out.float()


def _all_on(modules: list[torch.nn.Module], device: torch.device) -> bool:
    if device.type == "cuda" and device.index is None:  # "cuda": the current card
        device = torch.device("cuda", torch.cuda.current_device())
    return all(t is None or t.device == device for m in modules
               for t in (*m._parameters.values(), *m._buffers.values()))
