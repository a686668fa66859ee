"""Rehearsal: Avalanche's ReplayPlugin with an experience-balanced buffer, and Cumulative."""

from __future__ import annotations

import torch
from avalanche.core import SupervisedPlugin
from avalanche.training.plugins import ReplayPlugin
from avalanche.training.storage_policy import ExperienceBalancedBuffer, ReservoirSamplingBuffer

from .passes import bookkeeping
from .registry import StrategyParts, register_strategy


class IndexedBalancedBuffer(ExperienceBalancedBuffer):
    """Equal room per experience seen; remembers *which rows* it keeps.

    The kept rows (a random subset, from torch's seeded RNG) are the whole
    state: the buffer can be rebuilt from them and the experiences' datasets.
    """

    def __init__(self, max_size: int):
        super().__init__(max_size=max_size, adaptive_size=True)
        self.rows: dict[int, torch.Tensor] = {}
        self._sources: dict[int, object] = {}

    def post_adapt(self, agent, exp) -> None:
        self._num_exps += 1
        lens = self.get_group_lengths(self._num_exps)
        group = self._num_exps - 1
        self.rows[group] = torch.randperm(len(exp.dataset))[: lens[-1]]
        self._sources[group] = exp.dataset
        for g, size in enumerate(lens):
            self.rows[g] = self.rows[g][:size]
            self.buffer_groups[g] = self._group(g)

    def _group(self, g: int) -> ReservoirSamplingBuffer:
        buf = ReservoirSamplingBuffer(len(self.rows[g]))
        buf.buffer = self._sources[g].subset(self.rows[g].tolist())
        return buf

    def state_dict(self) -> dict:
        return {"num_exps": self._num_exps, "rows": {g: r.clone() for g, r in self.rows.items()}}

    def load_state_dict(self, state: dict, sources: dict[int, object]) -> None:
        """Restore from saved rows and the experiences' training datasets."""
        self._num_exps = state["num_exps"]
        self.rows = dict(state["rows"])
        self._sources = dict(sources)
        self.buffer_groups = {g: self._group(g) for g in sorted(self.rows)}


def _past_datasets(strategy, groups) -> dict[int, object]:
    """Training datasets of earlier experiences, from the current experience's stream."""
    stream = strategy.experience.origin_stream
    return {g: stream[g].dataset for g in groups}


class Replay(ReplayPlugin):
    """Avalanche's ReplayPlugin with the state contract (the buffer's rows).

    A loaded state is applied at the next experience, when the stream that
    holds the earlier experiences' data is at hand.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._pending: dict | None = None

    def state_dict(self) -> dict:
        return self.storage_policy.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self._pending = state

    def before_training_exp(self, strategy, *args, **kwargs):
        if self._pending is not None:
            rows = self._pending["rows"]
            self.storage_policy.load_state_dict(self._pending, _past_datasets(strategy, rows))
            self._pending = None
        return super().before_training_exp(strategy, *args, **kwargs)

    def before_training_stage(self, strategy, **kwargs) -> None:
        """A warm-up's next stage has its own batch size: the replay loader again."""
        ReplayPlugin.before_training_exp(self, strategy, **kwargs)

    def after_training_exp(self, strategy, **kwargs):
        # The buffer's selection: random here, but Avalanche's storage policies may score
        # samples with the model (herding, feature-based selection).
        # ReplayPlugin's own hook calls the deprecated update(), whose warning Avalanche
        # forces on past any filter; post_adapt is what update() does.
        with bookkeeping(strategy.model):
            self.storage_policy.post_adapt(strategy, strategy.experience)

    def stored_images(self) -> int:
        return len(self.storage_policy.buffer)


# mem_size is a memory budget, not tuned.
@register_strategy("replay")
def replay(mem_size: int = 200) -> StrategyParts:
    """Experience replay with an experience-balanced buffer of `mem_size` images."""
    return StrategyParts([Replay(mem_size, storage_policy=IndexedBalancedBuffer(mem_size))])


class CumulativePlugin(SupervisedPlugin):
    """Train each step on the union of all training data seen so far."""

    mixes_experiences = True  # minibatches draw from every experience seen: batch >= their number

    def __init__(self) -> None:
        super().__init__()
        self.seen = None
        self.seen_experiences: list[int] = []

    def after_train_dataset_adaptation(self, strategy, **kwargs) -> None:
        if self.seen is None and self.seen_experiences:  # restored from a state_dict
            data = list(_past_datasets(strategy, self.seen_experiences).values())
            self.seen = data[0].train()
            for more in data[1:]:
                self.seen = self.seen.concat(more.train())
        if self.seen is not None:
            strategy.adapted_dataset = self.seen.concat(strategy.adapted_dataset)

    def after_training_exp(self, strategy, **kwargs) -> None:
        self.seen = strategy.adapted_dataset
        self.seen_experiences.append(strategy.experience.current_experience)

    def state_dict(self) -> dict:
        return {"seen_experiences": list(self.seen_experiences)}

    def load_state_dict(self, state: dict) -> None:
        self.seen, self.seen_experiences = None, list(state["seen_experiences"])

    def stored_images(self) -> int:
        return 0 if self.seen is None else len(self.seen)


@register_strategy("cumulative")
def cumulative() -> StrategyParts:
    """At each step, retrain on all training data seen so far (a stream upper reference)."""
    return StrategyParts([CumulativePlugin()])
