"""Each step's batch of dataset images, through ``torch.utils.data.DataLoader``.

A training step's images are a function of (seed, step) alone (``rank_batch_indices``), so the
batch sampler here yields exactly the indices the step would draw in-process, from the step a run
resumes at. Decoding (and the mirroring of an ``xflip`` dataset) happens in the loader's worker
processes when ``data_workers`` > 0, ahead of the step that needs it (``prefetch_factor`` batches
per worker); what travels is uint8, into pinned memory on CUDA, and the conversion to float
happens on the device. With 0 workers the same indices are read in this process: the images, and
so a resumed run, are bit-equal whatever the number of workers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence

import torch

from pipeline.data.dataset import FaceDataset, to_unit_range
from pipeline.errors import PipelineError
from pipeline.training.runtime import Distributed, rank_batch_indices

PREFETCH_BATCHES = 4  # per worker: enough to hide a slow decode behind a few fast steps


class StepBatchSampler(torch.utils.data.Sampler[list[int]]):
    """This rank's dataset indices for each of the steps ``start`` .. ``stop - 1``."""

    def __init__(self, seed: int, start: int, stop: int, pool: Sequence[int], count: int,
                 dist: Distributed):
        self.seed, self.start, self.stop = seed, start, stop
        self.pool, self.count, self.dist = pool, count, dist

    def __len__(self) -> int:
        return max(self.stop - self.start, 0)

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            indices = rank_batch_indices(self.seed, step, len(self.pool), self.count, self.dist)
            yield [self.pool[i] for i in indices]


class _Pixels(torch.utils.data.Dataset):
    """The dataset's uint8 images (what a worker sends)."""

    def __init__(self, dataset: FaceDataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.dataset.pixels(index)


class TimedBatches(Iterator[torch.Tensor]):
    """An iterator of batches that adds up the time the trainer waits on it (``wait_seconds``):
    near zero when the workers keep ahead of the steps."""

    def __init__(self, batches: Iterator[torch.Tensor]):
        self._batches, self.wait_seconds = batches, 0.0

    def __next__(self) -> torch.Tensor:
        start = time.perf_counter()
        try:
            return next(self._batches)
        except PipelineError as e:
            raise unwrapped(e) from None
        finally:
            self.wait_seconds += time.perf_counter() - start


def unwrapped(error: PipelineError) -> PipelineError:
    """A user error raised in a loader worker, as one line again: torch re-raises it in this
    process as the same type with the worker's whole traceback for its message."""
    message = str(error)
    if not message.startswith("Caught "):
        return error
    last = message.strip().splitlines()[-1]  # "pipeline.errors.DataError: <the message>"
    return type(error)(last.split(": ", 1)[1] if ": " in last else last)


def step_batches(dataset: FaceDataset, sampler: StepBatchSampler, device: torch.device,
                 workers: int) -> TimedBatches:
    """The batches of ``sampler``'s steps, in order, as float32 in [-1, 1] on ``device``. The
    workers start at once, so they decode while the trainer finishes its set-up."""
    if sampler.count == 0 or len(sampler) == 0:  # an all-synthetic batch, or no step left
        empty = torch.empty(0, 3, dataset.resolution, dataset.resolution, device=device)
        return TimedBatches(iter([empty] * len(sampler)))
    loader = torch.utils.data.DataLoader(
        _Pixels(dataset), batch_sampler=sampler, num_workers=workers,
        pin_memory=device.type == "cuda", prefetch_factor=PREFETCH_BATCHES if workers else None,
        # Its own generator: the loader's worker seed must not consume the global random stream
        # that the steps' noise draws from (it would shift at every resumption).
        generator=torch.Generator().manual_seed(0))
    return TimedBatches(to_unit_range(pixels.to(device, non_blocking=True)) for pixels in loader)
