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
- The training recipe (`experiments.recipe`, docs/TRAINING.md): each experience
  runs in stages (a heads-only warm-up at its own batch size, then the whole
  network); pair losses get each sample's task label and row; with
  `train.select: best_val` the selection scores every epoch and puts the best
  epoch's weights back before any plugin's `after_training_exp`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext

import torch
from avalanche.benchmarks import OnlineCLExperience
from avalanche.benchmarks.utils.data_loader import collate_from_data_or_kwargs
from avalanche.core import SupervisedPlugin
from avalanche.distributed import DistributedHelper
from avalanche.models.dynamic_modules import DynamicModule
from avalanche.models.utils import avalanche_model_adaptation
from avalanche.training.templates import SupervisedTemplate
from avalanche.training.utils import trigger_plugins
from torch.utils.data import DataLoader

from benchmarks.images.gpu_decode import JpegDecoder
from benchmarks.images.loaders import EpochLoader, EvalPool, ImagesAhead
from benchmarks.metrics.plugins import unreadable_rows

from .recipe import Stage, heads_only, training_stages
from .selection import BestValidation


class IQAPlugin(SupervisedPlugin):
    """Avalanche's plugin callbacks plus the recipe's: `before_training_stage` runs when
    an experience's next stage (after a warm-up) starts, its loader remade."""

    def before_training_stage(self, strategy, **kwargs) -> None:
        pass


class IQATemplate(SupervisedTemplate):
    PLUGIN_CLASS = IQAPlugin  # Avalanche checks plugins' callbacks against this class

    def __init__(self, *, amp: bool = False, decoder: JpegDecoder | None = None,
                 warmup_epochs: int = 0, warmup_mb_size: int = 0,
                 selection: BestValidation | None = None, **kwargs):
        super().__init__(**kwargs)
        self.full_mb_size = self.train_mb_size
        self.warmup_epochs, self.warmup_mb_size = warmup_epochs, warmup_mb_size
        self.selection = selection
        self.stages: list[Stage] = []
        self.stage: Stage | None = None
        self.heads_only = False  # plugins may ask (LwF distils in the full stage only)
        # A plugin that scores evaluation minibatches itself (eval.heads: newest, weighted);
        # not inside an experience's training, whose selection scores by the task's head.
        self.scorer = next((p for p in self.plugins if getattr(p, "scores_eval", False)), None)
        self.training_exp = False
        self.mb_route: torch.Tensor | None = None  # the scorer's weights over heads
        self._loader_epochs: int | None = None
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
        epochs = self._loader_epochs or self.train_epochs
        self.dataloader = EpochLoader(data, epochs, self.train_mb_size, shuffle,
                                      drop_last, **self._workers(num_workers, pin_memory))
        return None

    def criterion(self):
        if not getattr(self._criterion, "takes_pairs", False):
            return super().criterion()
        if not self.is_training:  # pairs (and stds) are the training sets': no eval loss
            return self._make_empty_loss()
        return self._criterion(self.mb_output, self.mb_y, self.mb_task_id, self.mbatch[2])

    def _enter(self, stage: Stage) -> None:
        self.stage, self.heads_only = stage, stage.heads_only
        self.train_mb_size, self._loader_epochs = stage.batch_size, stage.epochs

    def _before_training_exp(self, **kwargs):
        self.stages = training_stages(self.train_epochs, self.full_mb_size,
                                      self.warmup_epochs, self.warmup_mb_size)
        self._enter(self.stages[0])
        super()._before_training_exp(**kwargs)

    def _train_exp(self, experience, eval_streams=None, **kwargs):
        """The experience's stages, epoch by epoch; then the selected epoch's weights."""
        if self.selection is not None:
            self.selection.start(self.clock.train_exp_counter)
        self.training_exp = True
        try:
            self._train_stages(**kwargs)
        finally:
            self.training_exp = False
        if self.selection is not None:
            self.selection.finish(self)
        # after_training_exp's bookkeeping (EWC's importance, replay) sees the full batch size
        self._enter(Stage("full", self.train_epochs, self.full_mb_size, False))

    def _train_stages(self, **kwargs) -> None:
        stop = False
        for k, stage in enumerate(self.stages):
            if stop:
                break
            if k:  # a new batch size: a new loader (replay's too, by its stage hook)
                self._enter(stage)
                self.make_train_dataloader(**kwargs)
                trigger_plugins(self, "before_training_stage", **kwargs)
            with heads_only(self.model) if stage.heads_only else nullcontext():
                for _ in range(stage.epochs):
                    self._before_training_epoch(**kwargs)
                    if self._stop_training:  # early stopping (a plugin asked)
                        self._stop_training, stop = False, True
                        break
                    self.training_epoch(**kwargs)
                    self._after_training_epoch(**kwargs)

    def _after_training_epoch(self, **kwargs):
        if self.selection is not None:  # before the metrics, which report its value
            self.selection.after_epoch(self, self.stage.name)
        super()._after_training_epoch(**kwargs)

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
        self.mb_route = None
        with torch.autocast("cuda", dtype=torch.bfloat16) if self.amp else nullcontext():
            out = None
            if self.scorer is not None and not self.is_training and not self.training_exp:
                out = self.scorer.score(self)
            if out is None:
                out = super().forward()
        return out.float() if self.amp else out


def _all_on(modules: list[torch.nn.Module], device: torch.device) -> bool:
    if device.type == "cuda" and device.index is None:  # "cuda": the current card
        device = torch.device("cuda", torch.cuda.current_device())
    return all(t is None or t.device == device for m in modules
               for t in (*m._parameters.values(), *m._buffers.values()))
