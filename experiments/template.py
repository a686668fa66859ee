"""Avalanche's supervised template with the suite's fast paths.

- bf16 autocast and channels_last on CUDA (`train.amp`); outputs go back to
  float32 before the loss, so the loss, metrics and regularisers see fp32.
- nvJPEG decoding on the device (`data.decode: gpu`): the minibatch holds
  encoded files until here.
- Unreadable samples are found on the CPU, before the copy to the device, so
  no minibatch waits on the GPU to learn whether a target was NaN.
"""

from __future__ import annotations

import torch
from avalanche.training.templates import SupervisedTemplate

from benchmarks.gpu_decode import JpegDecoder
from benchmarks.metric_plugins import unreadable_rows


class IQATemplate(SupervisedTemplate):
    def __init__(self, *, amp: bool = False, decoder: JpegDecoder | None = None,
                 **kwargs):
        super().__init__(**kwargs)
        self.amp = amp and self.device.type == "cuda"
        self.decoder = decoder
        self.mb_unreadable: list[tuple[int, int]] = []
        if self.amp:
            self.model.to(memory_format=torch.channels_last)

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
