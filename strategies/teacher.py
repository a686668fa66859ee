"""The frozen teacher of distillation strategies (lwf, lwf_heads, lwf_replay).

The model as it was at the end of the last experience, its parameters frozen. A
checkpoint keeps only its state_dict; after `--resume` it is rebuilt in the student's
architecture at the next experience.
"""

from __future__ import annotations

import copy

import torch


class FrozenTeacher:
    """Mixin for a plugin: `prev_model`, kept after each experience, part of its state."""

    prev_model: torch.nn.Module | None = None
    _pending_state: dict | None = None  # a resumed teacher, rebuilt at the next experience

    def keep_teacher(self, model: torch.nn.Module) -> None:
        self.prev_model = freeze(copy.deepcopy(model).eval())

    def restore_teacher(self, model: torch.nn.Module, grown: str | None = None) -> None:
        """Rebuild a resumed teacher from the student. `grown`: the prefix of modules the
        student has grown this experience (a new head), which the teacher did not have."""
        if self._pending_state is None:
            return
        teacher = copy.deepcopy(model).eval()
        missing, unexpected = teacher.load_state_dict(self._pending_state, strict=grown is None)
        if unexpected or any(not k.startswith(grown or "") for k in missing):
            raise RuntimeError(f"the checkpointed teacher does not fit the model: missing "
                               f"{missing[:3]}, unexpected {unexpected[:3]}")
        self.prev_model, self._pending_state = freeze(teacher), None

    def state_dict(self) -> dict:
        return {"prev_model": None if self.prev_model is None else
                {k: v.detach().clone() for k, v in self.prev_model.state_dict().items()}}

    def load_state_dict(self, state: dict) -> None:
        self._pending_state = state["prev_model"]


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    for p in model.parameters():
        p.requires_grad_(False)
    return model
