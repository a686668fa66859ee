"""Avalanche's supervised template with the suite's fast paths.

- bf16 autocast and channels_last on CUDA (`train.amp`); outputs go back to
  float32 before the loss, so the loss, metrics and regularisers see fp32.
- nvJPEG decoding on the device (`data.decode: gpu`): the minibatch holds
  encoded files until here.
- Unreadable samples are found on the CPU, before the copy to the device, so
  no minibatch waits on the GPU to learn whether a target was NaN.
- Training batches of all an experience's epochs come from one DataLoader
  pass (`benchmarks.loaders`), so the workers do not stop between epochs.
- Evaluation uses one pool of workers for every evaluated dataset
  (`benchmarks.loaders.EvalPool`): Avalanche would build a new DataLoader,
  starting all its workers, for each experience at each evaluation.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from avalanche.training.templates import SupervisedTemplate

from benchmarks.gpu_decode import JpegDecoder
from benchmarks.loaders import EpochLoader, EvalPool
from benchmarks.metric_plugins import unreadable_rows


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

    def _load_train_state(self, prev_state: dict) -> None:
        """Avalanche's restore of each module's train/eval flag after an evaluation, in one
        pass: it calls the recursive `train()` on every module, a cost that grows with
        the depth of the network. Only modules that override `train()` still get the call."""
        for key, value in prev_state.items():  # experience, is_training, dataloader, ...
            if key != "model_training_mode":
                setattr(self, key, value)
        modes = prev_state["model_training_mode"]
        for name, layer in self.model.named_modules():
            mode = modes.get(name, True)  # unknown: added during eval, as Avalanche does
            if type(layer).train is torch.nn.Module.train:
                layer.training = mode
            else:
                layer.train(mode)

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
        self.dataloader = EpochLoader(
            data, self.train_epochs, self.train_mb_size, shuffle, drop_last,
            num_workers=num_workers,
            pin_memory=self.device.type == "cuda" if pin_memory is None else pin_memory)
        return None

    def eval(self, exp_list, **kwargs):
        # Every experience of the stream joins the pool before the first pass, so its
        # workers start once for the stream rather than once per new experience.
        if kwargs.get("persistent_workers") and kwargs.get("num_workers", 0) > 0:
            pool = self._eval_pool(kwargs)
            for exp in (exp_list if isinstance(exp_list, Iterable) else [exp_list]):
                pool.add(exp.dataset, exp.dataset.eval())
        return super().eval(exp_list, **kwargs)

    def make_eval_dataloader(self, num_workers: int = 0, shuffle: bool = False,
                             pin_memory: bool | None = None, persistent_workers: bool = False,
                             **kwargs) -> None:
        args = dict(num_workers=num_workers, shuffle=shuffle, pin_memory=pin_memory,
                    persistent_workers=persistent_workers, **kwargs)
        if not (persistent_workers and num_workers > 0) or shuffle:
            return super().make_eval_dataloader(**args)
        self.dataloader = self._eval_pool(args).batches(self.experience.dataset,
                                                        self.adapted_dataset)
        return None

    def _eval_pool(self, args: dict) -> EvalPool:
        key = (self.eval_mb_size, args["num_workers"], args.get("pin_memory"))
        if key not in self.eval_pools:  # other arguments: another pool (not in this suite)
            pin = args.get("pin_memory")
            self.eval_pools[key] = EvalPool(
                self.eval_mb_size, num_workers=args["num_workers"],
                pin_memory=self.device.type == "cuda" if pin is None else pin)
        return self.eval_pools[key]

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
