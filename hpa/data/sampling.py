"""Rare-class oversampling: repeat samples of rare classes a bounded number of times.

A sample is repeated ceil(target / n_c) times for the rarest class c it carries, where n_c is
the class's count in the training set and target = `target_fraction` x the number of training
samples, and never more than `max_repeat` times: the paper oversamples minority classes "a few
times" only, because repeating a handful of images many times overfits them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hpa.data.labels import CLASS_NAMES


def oversample_plan(y: np.ndarray, target_fraction: float, max_repeat: int) -> np.ndarray:
    """Repeat count (>= 1) of every sample."""
    if max_repeat < 1 or target_fraction < 0:
        raise ValueError(f"oversampling: max_repeat >= 1 and target_fraction >= 0 needed, got "
                         f"{max_repeat}, {target_fraction}")
    t = y > 0.5
    counts = t.sum(0)
    target = target_fraction * len(y)
    need = np.where(counts > 0, np.ceil(target / np.maximum(counts, 1)), 1)  # per class
    per_sample = np.where(t, need[None, :], 1).max(1)
    return np.clip(per_sample, 1, max_repeat).astype(int)


def class_counts_table(y: np.ndarray, repeats: np.ndarray) -> pd.DataFrame:
    t = y > 0.5
    return pd.DataFrame({"class": range(len(CLASS_NAMES)), "name": CLASS_NAMES, "count": t.sum(0).astype(int),
                         "oversampled": (t * repeats[:, None]).sum(0).astype(int)})


class SideBatchSampler:
    """Batches whose samples share one stored side (768 and 1024 px images never mix), for one
    process or many. `batch_size` is the global batch: the samples of one optimizer step over all
    processes. The order depends only on (seed, epoch): each side's indices are shuffled and cut
    into global batches, the global batches are shuffled, and rank r takes positions r, r + world,
    ... of each (shares differ by at most one sample when world does not divide the batch). So a
    resumed run replays the same order, and N processes see exactly the batches of one process.
    Without shuffling (validation, prediction) the order is the index order within each side, and
    the last, incomplete batch of a side is kept (it may then be uneven across ranks)."""

    def __init__(self, sides: list[int], batch_size: int, world: int = 1, rank: int = 0, shuffle: bool = True,
                 drop_last: bool = True, seed: int = 0):
        self.sides = np.asarray(sides)
        self.batch_size, self.world, self.rank = batch_size, world, rank
        self.shuffle, self.drop_last, self.seed, self.epoch, self.skip = shuffle, drop_last, seed, 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """The epoch whose order to give, leaving out its first `skip` batches (a run resumed inside it)."""
        self.epoch, self.skip = epoch, skip

    def global_batches(self) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch])
        span = self.batch_size
        out = []
        for side in np.unique(self.sides):
            idx = np.flatnonzero(self.sides == side)
            if self.shuffle:
                idx = rng.permutation(idx)
            full = len(idx) // span * span
            out += [idx[k:k + span] for k in range(0, full, span)]
            rest = len(idx) - full
            # a side smaller than one batch still trains if every rank gets 2 samples (BatchNorm needs 2)
            if rest and (not self.drop_last or (not full and rest >= 2 * self.world)):
                out.append(idx[full:])
        if self.shuffle:
            out = [out[k] for k in rng.permutation(len(out))]
        return out

    def __iter__(self):
        mine = [b[self.rank::self.world] for b in self.global_batches()]
        for batch in [b for b in mine if len(b)][self.skip:]:
            yield batch.tolist()

    def __len__(self) -> int:
        return max(0, sum(1 for b in self.global_batches() if len(b[self.rank::self.world])) - self.skip)
