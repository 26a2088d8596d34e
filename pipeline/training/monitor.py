"""What a training run reports: dvclive metrics and images, a progress bar, and a NaN guard."""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pipeline.errors import PipelineError

log = logging.getLogger(__name__)


def drop_torn_summary(live_dir: Path) -> None:
    """Remove dvclive's ``metrics.json`` if a killed run left it torn (dvclive rewrites it in
    place, so ``kill -9`` can leave it empty or cut short): dvclive's resumption would fail to
    parse it. The run sets the step itself, and the next log rewrites the file."""
    summary = live_dir / "metrics.json"
    try:
        json.loads(summary.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return
    except (ValueError, UnicodeDecodeError):
        log.warning("%s is torn (an interrupted write); it is rewritten at the next log", summary)
        summary.unlink()


class TrainingDiverged(PipelineError):
    """A loss became NaN or infinite; training stopped and the last good state was kept."""


def check_finite(first_step: int, last_step: int, names: list[str], totals: torch.Tensor,
                 state_hint: str, dist=None) -> None:
    """Raise :class:`TrainingDiverged` naming the first non-finite value among ``totals`` (the
    sums of ``names`` over the steps ``first_step`` .. ``last_step``: a sum is finite exactly when
    each of its terms is, short of overflow).

    Under torchrun the check is agreed across processes (a non-finite value on any rank makes the
    sum non-finite), so every rank stops at the same step with the same message.
    """
    totals = totals.to(torch.float64).cpu()
    if dist is not None and dist.enabled:
        import torch.distributed as torch_dist

        torch_dist.all_reduce(totals)
    steps = (f"step {first_step}" if first_step == last_step
             else f"steps {first_step}-{last_step}")
    for name, value in zip(names, totals.tolist()):
        if not math.isfinite(value):
            raise TrainingDiverged(f"{steps}: {name} is {value}; stopped without saving. "
                                   f"{state_hint}")


class Monitor:
    """dvclive logging plus a tqdm progress bar with ETA, on the main process only.

    Metrics are averaged over the steps between two log points. ``images_per_second`` counts the
    images of every rank.
    """

    def __init__(self, live_dir: str | Path | None, total_steps: int, start_step: int,
                 images_per_step: int, enabled: bool, progress_keys: tuple[str, ...] | None = None):
        self.enabled = enabled
        self.progress_keys = progress_keys  # metrics shown on the progress bar; None: all
        self.images_per_step = images_per_step
        self._sums: dict[str, torch.Tensor | float] = {}
        self._count = 0
        self._unchecked = 0  # steps recorded since the last NaN check
        self._data_wait = 0.0  # seconds waited on the data loader, at the last log
        self._clock = time.perf_counter()
        self._clock_step = start_step
        self.live = None
        self.bar = None
        if not enabled:
            return
        if live_dir is not None:
            from dvclive import (
                Live,  # imported here: it is slow to import and rank 0 needs it only
            )

            if start_step > 0:
                drop_torn_summary(Path(live_dir))
            self.live = Live(str(live_dir), resume=start_step > 0, save_dvc_exp=False,
                             dvcyaml=None, report=None)
            self.live.step = start_step
        self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                        file=sys.stderr, mininterval=1.0 if sys.stderr.isatty() else 30.0)

    def accumulate(self, values: dict[str, torch.Tensor | float]) -> None:
        """Add one step's values to the sums, where they are (a tensor on the GPU stays there:
        no host synchronisation)."""
        for name, value in values.items():
            value = value.detach().to(torch.float64) if torch.is_tensor(value) else float(value)
            self._sums[name] = self._sums.get(name, 0.0) + value
        self._count += 1
        self._unchecked += 1

    def _totals(self) -> tuple[list[str], torch.Tensor]:
        """The sums since the last log, as one float64 tensor on the host (one transfer)."""
        names = list(self._sums)
        device = next((v.device for v in self._sums.values() if torch.is_tensor(v)), "cpu")
        totals = [torch.as_tensor(self._sums[name], dtype=torch.float64, device=device)
                  for name in names]
        return names, (torch.stack(totals).cpu() if totals else torch.zeros(0, dtype=torch.float64))

    def check_finite(self, step: int, state_hint: str, dist=None) -> None:
        """The NaN guard over the steps recorded since the last check, ending at ``step``."""
        names, totals = self._totals()
        check_finite(step - self._unchecked + 1, step, names, totals, state_hint, dist)
        self._unchecked = 0

    def log(self, step: int, extra: dict[str, float] | None = None,
            data_wait: float | None = None) -> dict[str, float]:
        """Write the averaged metrics for the steps since the last call (at ``step``), plus
        ``extra`` values logged as they are (e.g. an evaluation made at this step).

        ``data_wait``, the seconds the run has waited on its data loader so far, gives
        ``data_wait_share``: the share of the wall time since the last log spent waiting for
        images (about 0 when the loader keeps ahead of the steps)."""
        now = time.perf_counter()
        names, totals = self._totals()
        metrics = {name: total / max(self._count, 1) for name, total in zip(names, totals.tolist())}
        metrics.update(extra or {})
        elapsed = now - self._clock
        if step > self._clock_step and elapsed > 0:
            metrics["images_per_second"] = ((step - self._clock_step) * self.images_per_step
                                            / elapsed)
            if data_wait is not None:
                metrics["data_wait_share"] = (data_wait - self._data_wait) / elapsed
        if data_wait is not None:
            self._data_wait = data_wait
        self._sums, self._count, self._clock, self._clock_step = {}, 0, now, step
        if self.live is not None:
            self.live.step = step
            for name, value in metrics.items():
                self.live.log_metric(name, value)
            self.live.next_step()
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.3g}" for k, v in metrics.items()
                                  if self.progress_keys is None or k in self.progress_keys},
                                 refresh=False)
        return metrics

    def image(self, name: str, image: np.ndarray) -> None:
        if self.live is not None:
            self.live.log_image(name, image)

    def advance(self, steps: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(steps)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.live is not None:
            self.live.end()
