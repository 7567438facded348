"""Which prompts each PPO iteration sees: a pure function of (seed, iteration, rank), so runs resume exactly.

Lightning replays a mid-epoch resume from the start of the data loader unless the loader is
resumable, and a whole pama_lit run is one epoch. :class:`IterationBatchSampler` makes the batch of
iteration t computable from t alone, and :class:`ResumableLoader` tells Lightning (through
``state_dict`` / ``load_state_dict``, which it stores in the checkpoint) where to continue.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler


class IterationBatchSampler(Sampler[list[int]]):
    """Batches of prompt indices, one per iteration, the same for every restart.

    The prompts are read as an endless stream: pass e over them is the permutation seeded by
    (seed, e). Iteration t takes stream positions [t * G, (t + 1) * G) with G = batch_size x
    world_size, and rank r takes the r-th block of batch_size of those. Hence a run with
    ``devices=2, batch_size=4`` samples, at every iteration, the same 8 prompts as a one-process run
    with ``batch_size=8``.

    Args:
        num_prompts: size of the prompt list the indices point into.
        batch_size: prompts per iteration on this rank.
        num_iterations: batches in a full run (``len`` of the sampler, also after a resume).
        seed: seed of the permutations.
        rank: this process's rank.
        world_size: number of processes sharing each iteration.

    Attributes:
        start: the first iteration ``__iter__`` yields (set on resume).
    """

    def __init__(
        self,
        num_prompts: int,
        batch_size: int,
        num_iterations: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if num_prompts < 1:
            raise ValueError("IterationBatchSampler needs at least one prompt")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.num_prompts = num_prompts
        self.batch_size = batch_size
        self.num_iterations = num_iterations
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.start = 0
        self._perm_cache: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.num_iterations

    def __iter__(self) -> Iterator[list[int]]:
        for t in range(self.start, self.num_iterations):
            yield self.batch(t)

    def batch(self, iteration: int) -> list[int]:
        """The prompt indices of ``iteration`` on this rank."""
        first = iteration * self.batch_size * self.world_size + self.rank * self.batch_size
        return [self._index(p) for p in range(first, first + self.batch_size)]

    def _index(self, position: int) -> int:
        epoch, offset = divmod(position, self.num_prompts)
        if self._perm_cache is None or self._perm_cache[0] != epoch:
            self._perm_cache = (
                epoch,
                np.random.default_rng([self.seed, epoch]).permutation(self.num_prompts),
            )
        return int(self._perm_cache[1][offset])


class ResumableLoader(DataLoader):
    """A DataLoader over an :class:`IterationBatchSampler` that Lightning checkpoints and restores.

    Args:
        dataset: the prompt strings.
        batch_sampler: the iteration sampler.
        completed: returns how many iterations have finished (read when a checkpoint is written).
        collate_fn: turns a list of prompts into a batch.
        seed: seeds the loader's own generator, so creating an iterator never draws from the global
            torch generator (a resumed run would otherwise sample differently).
    """

    def __init__(
        self,
        dataset: Sequence[str],
        batch_sampler: IterationBatchSampler,
        completed: Callable[[], int],
        collate_fn: Callable,
        seed: int = 0,
    ) -> None:
        super().__init__(
            dataset,
            batch_sampler=batch_sampler,
            collate_fn=collate_fn,
            generator=torch.Generator().manual_seed(seed),
        )
        self._completed = completed

    def state_dict(self) -> dict[str, int]:
        return {"next_iteration": int(self._completed())}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.batch_sampler.start = int(state["next_iteration"])
