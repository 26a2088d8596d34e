"""Latency-driven width (and block-length) search for the BlazeStyleGAN student (the
``search_architecture`` stage), after "Real-Time Portrait Stylization on the Edge": the student
widened into a supernet with straight-through channel masks (:mod:`pipeline.models.masked`),
distilled from the teacher with the distillation loss plus a latency penalty from the fitted
speed model (:mod:`pipeline.profiling.speed_model`), whose gradient reaches the masks.

* **Loss**: the distill stage's (Eq. 4; the ``distill`` section's weights, optimisers and run
  keys) plus ``gamma * max(0, (T_pred - T(t)) / (T_super - T))``: T_pred the speed model's
  latency of the network the masks leave, T_super the whole supernet's, T the target and T(t)
  the scheduled one, falling linearly from T_super to T over ``ramp_steps`` steps after the
  ``warmup_steps`` in which only the supernet's weights train (masks frozen, no penalty)
  (a number of steps, not a share: a run resumed with more steps follows the same schedule).
  T_pred is a function of the kept widths computed with the straight-through groups, so the
  masks get the latency gradient (the public anchor detaches it: reference note). The masks
  learn by plain SGD, so that how many milliseconds a channel costs decides how fast it goes.
* **Block length** (``depth``): optionally, one straight-through gate per level for its second
  convolution (the widths of which match: skipping it leaves an identity); a gated level
  costs ``g T(block) + (1 - g) T(short block)``, so the gates get the latency gradient too
  (the public anchor's length variables do). ``mask_step: cost`` divides a gate's gradient by
  what it costs (T(block) - T(short block)) as it does a group's; ``fit_budget`` moves groups
  only, the blocks' lengths stay as searched.
* **Latency geometry**: the units are predicted at ``latency_resolution`` (the student's levels
  with every feature size scaled by latency_resolution / resolution): at the 32 px default a
  student runs in under 0.1 ms, mostly overhead, so its widths are budgeted as the same network
  at 256 px, where the speed model was measured. At 256 (a GPU search) the scale is 1.
* **Target**: ``target_ms``, or ``target_ratio`` times the predicted latency of the un-widened
  student (``distill.student``).
* **Output**: the extracted student (a regular student snapshot, every head, the searched
  widths and lengths), its config and predicted latency, the mask trajectory in dvclive (kept
  widths per level, convolutions per level with ``depth``, predicted and scheduled latency).
"""

from __future__ import annotations

import copy
import json
import logging
import math
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import pydantic
import torch
from torch import nn

from pipeline.config import PositiveInt, StageConfig
from pipeline.data.dataset import FaceDataset
from pipeline.errors import ConfigError, PipelineError
from pipeline.io import sha256_file
from pipeline.models.blazestylegan import STUDENT_KIND, BlazeStyleGANConfig
from pipeline.models.masked import (
    GROUP,
    ChannelMasks,
    MaskedStudent,
    extract,
    share_masks,
    supernet_config,
)
from pipeline.models.stylegan2 import Discriminator, load_teacher
from pipeline.perceptual import perceptual_distance
from pipeline.profiling.speed_model import SpeedModel, load_speed_model, student_units
from pipeline.search.geometry import latency_sizes
from pipeline.training import distill as distillation
from pipeline.training.distill import DistillConfig, TeacherProbe, check_compatible
from pipeline.training.run import RunPaths, TrainingRun
from pipeline.training.runtime import (
    ema_beta,
    lazy_adam,
    local_main_first,
    module_digest,
    optimizer_step,
)

STATE_KIND = "search-state"
log = logging.getLogger(__name__)


class SearchSection(StageConfig):
    """The ``search_architecture`` section of params.yaml (the rest comes from ``distill``)."""

    widen: Annotated[float, pydantic.Field(ge=1)]   # supernet widths: widen x distill.student's
    steps: PositiveInt
    target_ms: Annotated[float, pydantic.Field(gt=0)] | None
    target_ratio: Annotated[float, pydantic.Field(gt=0)] | None
    latency_resolution: Annotated[int, pydantic.Field(ge=16)]
    gamma: Annotated[float, pydantic.Field(ge=0)]   # the latency penalty's weight
    ramp_steps: PositiveInt         # steps over which the target falls to its final value
    # first steps that train the supernet's weights only (masks frozen, no latency term), so
    # the masks are judged on a supernet that has learnt more (README: 400 measured, no gain)
    warmup_steps: Annotated[int, pydantic.Field(ge=0)] = 0
    mask_lr: Annotated[float, pydantic.Field(gt=0)]  # the masks' SGD learning rate
    mask_step: Literal["plain", "cost"]  # cost: each mask's gradient per millisecond (README)
    fit_budget: bool                 # at the end, drop / add groups to the budget (README)
    # the final level's weight in the search's distillation loss (None: distill's): only the
    # last head ships, and the coarse levels' terms value early channels for heads that do not
    final_level_weight: Annotated[float, pydantic.Field(gt=0)] | None = None
    # the last head's fewest hidden channels (a multiple of 8): a floor on the shipped head,
    # which every search at a tight budget cut to 8 (README: 16 measured, no gain)
    head_floor: Annotated[int, pydantic.Field(ge=GROUP)] = GROUP
    # block-length variables too: a level may drop its second convolution (the speed model
    # then needs short blocks measured: measure_latency.short_blocks)
    depth: bool = False
    seed: int

    @pydantic.model_validator(mode="after")
    def _one_target(self):
        if (self.target_ms is None) == (self.target_ratio is None):
            raise ValueError("set exactly one of target_ms and target_ratio (the other null)")
        return self


class SearchConfig(DistillConfig):
    """The distillation config of the search: ``distill``'s, with the supernet as its student
    and the search section's steps and seed; the search keys beside."""

    SECTION: ClassVar[str] = "search_architecture"

    search: SearchSection
    base_student: BlazeStyleGANConfig

    def training_identity(self) -> dict:
        identity = super().training_identity()
        # steps (a longer run resumes a shorter one) and fit_budget (it acts on the result only)
        identity["search"] = {k: v for k, v in identity["search"].items()
                              if k not in ("steps", "fit_budget")}
        return identity

    @classmethod
    def build(cls, distill: DistillConfig, search: SearchSection) -> SearchConfig:
        final_weight = search.final_level_weight or distill.final_level_weight
        supernet = supernet_config(distill.student, search.widen)
        if search.depth:  # the search decides every level's length, from two convolutions
            supernet = supernet.model_copy(update={"convs": None})
        head = supernet.head_channels[-1]
        if search.head_floor % GROUP or search.head_floor > head:
            raise ConfigError(f"search_architecture.head_floor {search.head_floor}: a multiple "
                              f"of {GROUP} up to the supernet's last head, {head} channels")
        return cls.model_validate({
            **distill.to_dict(), "student": supernet.to_dict(),
            "final_level_weight": final_weight,
            "steps": search.steps, "seed": search.seed, "search": search.to_dict(),
            "base_student": distill.student.to_dict()})


class LatencyPenalty:
    """The speed model's latency of the network the masks leave, at the latency geometry, and
    the scheduled penalty on it."""

    def __init__(self, speed: SpeedModel, config: SearchConfig):
        self.speed, search = speed, config.search
        student = config.student
        scale = search.latency_resolution / student.resolution
        if scale < 1 or scale != 2 ** round(math.log2(scale)):
            raise ConfigError(f"search_architecture.latency_resolution "
                              f"{search.latency_resolution}: a power-of-two multiple of the "
                              f"student's resolution {student.resolution}")
        self.sizes = latency_sizes(student, search.latency_resolution)
        self.head = student.head
        if speed.w_dim != student.w_dim:
            raise ConfigError(f"the speed model was measured with w_dim {speed.w_dim}, the "
                              f"student has {student.w_dim}: set measure_latency.w_dim to "
                              f"{student.w_dim}")
        widest = [*student.channels, student.head_channels[-1]]
        self.convs = student.level_convs  # the supernet's, where no gate moves them
        speed.check_domain(self.units(widest))
        if search.depth:
            missing = [f for f in ("block-short", "block-const-short")
                       if f not in speed.config.domain]
            if missing:
                raise ConfigError(
                    f"search_architecture.depth: the speed model has no {' or '.join(missing)} "
                    "units; measure blocks of one convolution (measure_latency.short_blocks, "
                    "log_short_blocks, with const_share > 0 for the first level's) and refit")
            speed.check_domain(self.units(widest, [1] * len(student.channels)))
        heldout = (speed.config.accuracy or {}).get("heldout") or {}
        if not heldout.get("count") or heldout["count"] < 10 or heldout["mape_pct"] > 10:
            log.warning("the speed model's held-out accuracy is poor or unknown (%s): the "
                        "latencies this search budgets are rough (README, 'The latency "
                        "search')", heldout or "no held-out units")
        self.supernet_ms = self.predict([*student.channels, student.head_channels[-1]])
        base = config.base_student
        self.base_ms = self.predict([*base.channels, base.head_channels[-1]], base.level_convs)
        self.target_ms = (search.target_ms if search.target_ms is not None
                          else search.target_ratio * self.base_ms)
        if self.target_ms >= self.supernet_ms:
            raise ConfigError(f"search_architecture: target {self.target_ms:.3f} ms is not below "
                              f"the supernet's predicted {self.supernet_ms:.3f} ms: nothing to "
                              "search (lower the target or raise widen)")
        self.ramp, self.warmup = search.ramp_steps, search.warmup_steps
        self.gamma = search.gamma

    def units(self, widths, convs=None):
        *channels, head = widths
        return student_units(channels, head, self.sizes, self.head,
                             self.convs if convs is None else convs)

    def predict(self, widths, convs=None) -> float:
        """The predicted latency (ms) of the student of ``widths`` (levels, then the head) and
        ``convs`` per level (default: the supernet's)."""
        with torch.no_grad():
            return float(self.speed.student_ms(self.units(widths, convs)))

    def latency(self, widths, gates: torch.Tensor | None = None) -> torch.Tensor:
        """The predicted latency, differentiable in the widths and the block-length ``gates``
        (1: the level's second convolution runs): a gated level costs g T(block) + (1 - g)
        T(short block), exactly one of them at g 0 or 1."""
        units = self.units(widths)
        if gates is None:
            return self.speed.student_ms(units)
        short = self.units(widths, [1] * len(gates))
        ms = self.speed.overhead_ms + self.speed.unit_ms(*units[-1])  # the head
        for g, full, one in zip(gates, units, short):
            ms = ms + g * self.speed.unit_ms(*full) + (1 - g) * self.speed.unit_ms(*one)
        return ms

    def costs(self, widths: list[torch.Tensor], gates: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The speed model's milliseconds per channel of each mask (levels, then the head) and
        per block-length gate (what a level's second convolution costs) at ``widths`` and
        ``gates``: the slopes of the predicted latency, each floored at 1% of its steepest."""
        leaf = torch.stack([torch.as_tensor(w, dtype=torch.float32).detach()
                            for w in widths]).requires_grad_()
        gate_leaf = None if gates is None else gates.detach().clone().requires_grad_()
        with torch.enable_grad():
            slopes = torch.autograd.grad(self.latency(list(leaf), gate_leaf),
                                         [leaf] if gate_leaf is None else [leaf, gate_leaf])
        channel_ms = slopes[0].clamp_min(max(0.01 * float(slopes[0].max()), 1e-9))
        if gate_leaf is None:
            return channel_ms, None
        # a gate the speed model prices at nothing (or less) costs at least 1% of a group
        return channel_ms, slopes[1].clamp_min(0.01 * GROUP * float(channel_ms.mean()))

    def frozen(self, step: int) -> bool:
        """Whether ``step`` is a warm-up step: the masks stay (and the scheduled target is the
        supernet's latency, so the penalty is 0)."""
        return step < self.warmup

    def scheduled(self, step: int) -> float:
        done = min(1.0, max(0.0, (step + 1 - self.warmup) / self.ramp))
        return self.supernet_ms + done * (self.target_ms - self.supernet_ms)

    def __call__(self, widths: list[torch.Tensor], step: int,
                 gates: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
        predicted = self.latency(widths, gates)
        target = self.scheduled(step)
        penalty = self.gamma * torch.clamp_min(
            (predicted - target) / (self.supernet_ms - self.target_ms), 0.0)
        return penalty, {"latency/predicted_ms": predicted.detach(),
                         "latency/target_ms": target, "latency/penalty": penalty.detach()}


def search_architecture(config: SearchConfig, *, teacher_path: str | Path,
                        dataset_dir: str | Path, speed_model_path: str | Path, paths: RunPaths,
                        device: str = "auto", vgg19_weights: str | Path | None = None) -> dict:
    """Search the student's widths; write the extracted student's snapshot to
    ``paths.snapshot``. Resumable like the distill stage (``paths.state``).

    Returns:
        the searched config, its predicted latency (and the supernet's, the un-widened
        student's, the target), the student-vs-teacher evaluation of the masked supernet at the
        end, and the last logged training values.
    """
    run = TrainingRun(config, paths, device, STATE_KIND)
    speed = load_speed_model(speed_model_path)
    penalty = LatencyPenalty(speed, config)
    teacher = load_teacher(teacher_path, run.device)
    dataset = FaceDataset(dataset_dir, xflip=config.xflip, in_memory="auto")
    check_compatible(config, teacher.config, dataset.resolution)
    with local_main_first(run.dist):
        distance = perceptual_distance(config.perceptual, vgg19_weights,
                                       config.allow_download).to(run.device)
    identity = {"teacher": {"config": teacher.config.to_dict(),
                            "weights_sha256": module_digest(teacher)},
                "dataset_sha256": dataset.manifest_sha256,
                "speed_model_sha256": sha256_file(speed_model_path)}
    torch.manual_seed(config.seed)
    student = distillation.build_student(config, teacher)
    masks = ChannelMasks(student.config, config.seed, config.search.head_floor,
                         config.search.depth)
    masked = MaskedStudent(student, masks).to(run.device)
    D = Discriminator(teacher.config.model_copy(update=config.discriminator.to_dict()))
    D = D.to(run.device)
    ema = share_masks(copy.deepcopy(masked).eval().requires_grad_(False), masked)
    opt_G = torch.optim.Adam([p for p in masked.student.parameters() if p.requires_grad],
                             lr=config.g_lr, betas=tuple(config.g_betas), eps=1e-8)
    # SGD on the scores: a step in proportion to the gradient (per millisecond with
    # mask_step: cost); Adam would move every score alike, whatever its gradient.
    opt_M = torch.optim.SGD(masked.masks.parameters(), lr=config.search.mask_lr)
    opt_D = lazy_adam(D.parameters(), config.d_lr, config.r1_interval, config.r1_gamma > 0)
    probe = TeacherProbe(config, teacher, run.device)
    state = run.resume(identity, {"student": masked, "student_ema": ema, "D": D,
                                  "opt_G": opt_G, "opt_M": opt_M, "opt_D": opt_D},
                       progress_keys=("loss/g", "latency/predicted_ms", "latency/target_ms",
                                      "eval/psnr"))
    beta = ema_beta(config.batch_size, config.ema_kimg)
    batches = run.real_batches(dataset)
    evaluation: dict[str, float] = {}

    def update(g_loss: torch.Tensor, step: int) -> dict:
        widths, gates = masked.masks.widths(), masked.masks.gates()
        latency, values = penalty(widths, step, gates)
        opt_M.zero_grad(set_to_none=True)
        optimizer_step(g_loss + latency, masked, opt_G, run.dist)  # averages the masks' too
        if penalty.frozen(step):  # warm-up: the supernet's weights only
            return {**values, **_widths_logged(masked, config.student)}
        if config.search.mask_step == "cost":
            per_ms(masked.masks, *penalty.costs(widths, gates))
        opt_M.step()
        masked.masks.clamp_()
        return {**values, **_widths_logged(masked, config.student)}

    for step in run.steps():
        values = distillation.distill_step(config, teacher, masked, ema, D, opt_D, next(batches),
                                           distance, run, step, beta, update)
        run.record(step, values)
        evaluated = run.due(step, config.eval_every)
        if evaluated:
            evaluation = probe.evaluate(ema)
        run.report(step, samples=lambda: probe.grid(ema),
                   log_extra={f"eval/{k}": v for k, v in evaluation.items()} if evaluated else None)
    if not evaluation:  # nothing left to train: evaluate what the state holds
        evaluation = probe.evaluate(ema)
    return _finish(run, config, ema, penalty, probe, evaluation, state, teacher_path, identity)


def per_ms(masks: ChannelMasks, channel_ms: torch.Tensor,
           gate_ms: torch.Tensor | None = None) -> None:
    """Divide each score's gradient by what its score costs (a group: its 8 channels' ms; a
    block-length gate: its level's second convolution's), in units of the groups' mean cost,
    in place: the latency term then moves every score alike, and which groups (and
    convolutions) go is decided by the distillation gradient per millisecond (a greedy
    knapsack's criterion), not by which unit is the most expensive."""
    group_ms = GROUP * channel_ms
    reference = group_ms.mean()
    for vector, cost in zip(masks.vectors(), group_ms):
        if vector.grad is not None:
            vector.grad.mul_((reference / cost).to(vector.grad))
    if gate_ms is not None and masks.second is not None and masks.second.grad is not None:
        masks.second.grad.mul_((reference / gate_ms).to(masks.second.grad))


@torch.no_grad()
def fit_to_budget(masks: ChannelMasks, penalty: LatencyPenalty) -> dict[str, int]:
    """Fit the kept groups to the target, in place: while the predicted latency is above it,
    drop the lowest-scored kept group (not a mask's floors); then add back the best-scored
    dropped groups that keep it within the target, best first.

    Returns:
        the groups dropped and added.
    """
    vectors = masks.vectors()

    def kept() -> list[torch.Tensor]:
        return [g.detach() > 0.5 for g in masks.groups()]

    convs = masks.convs()  # the blocks' lengths stay as searched

    def predicted() -> float:
        return penalty.predict([GROUP * int(k.sum()) for k in kept()], convs)

    for vector, k in zip(vectors, kept()):  # a floor kept below 0.5 stays kept beside others
        vector[k] = vector[k].clamp_min(0.5 + 1e-3)
    dropped = added = 0
    while predicted() > penalty.target_ms:
        candidates = [(float(v[j]), i, j) for i, (v, k, floor)
                      in enumerate(zip(vectors, kept(), masks.floors))
                      for j in torch.nonzero(k).flatten().tolist()
                      if int(k.sum()) > floor]
        if not candidates:
            break
        _, i, j = min(candidates)
        vectors[i][j] = 0.5  # not above 0.5: dropped
        dropped += 1
    candidates = sorted(((float(v[j]), i, j) for i, (v, k) in enumerate(zip(vectors, kept()))
                         for j in torch.nonzero(~k).flatten().tolist()), reverse=True)
    for score, i, j in candidates:
        vectors[i][j] = 0.5 + 1e-3
        if predicted() > penalty.target_ms:
            vectors[i][j] = score
        else:
            added += 1
    return {"dropped_groups": dropped, "added_groups": added}


def _check_extraction(masked: MaskedStudent, student: nn.Module, ws: torch.Tensor,
                      tolerance: float = 1e-4) -> None:
    """The extracted student computes the masked supernet's pyramid (float32 rounding apart)."""
    with torch.no_grad():
        for chunk in ws[:16].split(8):
            for level, (a, b) in enumerate(zip(masked.synthesis(chunk)[1],
                                               student.synthesis(chunk)[1])):
                error = float((a - b).abs().max())
                if not error <= tolerance:
                    raise PipelineError(f"search_architecture: the extracted student differs "
                                        f"from the masked supernet at level {level} by {error:.3g}"
                                        f" (beyond {tolerance:g})")


def _compact(values: list[int]) -> str:
    return json.dumps(values, separators=(",", ":"))


def _widths_logged(masked: MaskedStudent, supernet: BlazeStyleGANConfig) -> dict[str, Any]:
    *levels, head = (w.detach() for w in masked.masks.widths())
    values = {f"width/level_{r}": w for r, w in zip(supernet.levels, levels)}
    values["width/head"] = head
    for r, convs in zip(supernet.levels, masked.masks.convs() or ()):
        values[f"depth/level_{r}"] = convs
    return values


def _finish(run: TrainingRun, config: SearchConfig, ema: MaskedStudent, penalty: LatencyPenalty,
            probe: TeacherProbe, evaluation: dict, state: dict | None, teacher_path: str | Path,
            identity: dict) -> dict:
    searched_widths = [int(w) for w in ema.masks.widths()]
    fitted = None
    if config.search.fit_budget:  # on a copy: the state keeps the masks the search left
        ema = copy.deepcopy(ema)
        fitted = {"searched_widths": searched_widths,
                  "searched_ms": penalty.predict(searched_widths, ema.masks.convs()),
                  **fit_to_budget(ema.masks, penalty)}
    searched = ema.searched_config()
    student = extract(ema)
    _check_extraction(ema, student, probe.eval_ws)
    widths = [*searched.channels, searched.head_channels[-1]]
    # the lengths whenever they may differ from distill.student's (null: two everywhere)
    lengths = config.search.depth or searched.convs != config.base_student.convs
    keys = ("channels", "head_channels", *(("convs",) if lengths else ()))
    result = {"searched": {key: getattr(searched, key) for key in keys},
              "predicted_ms": penalty.predict(widths, searched.level_convs),
              "target_ms": penalty.target_ms,
              "fit_budget": fitted,
              "supernet_ms": penalty.supernet_ms, "base_ms": penalty.base_ms,
              "latency_resolution": config.search.latency_resolution,
              "supernet": {"channels": config.student.channels,
                           "head_channels": config.student.head_channels},
              "steps": config.steps, "final": evaluation, "training": run.last_metrics,
              "resumed": state is not None,
              # what distils the searched widths through the whole chain: `dvc exp run -S ...`
              "distill_overrides": [f"distill.student.{key}={_compact(getattr(searched, key))}"
                                    for key in keys]}
    run.finish(student, STUDENT_KIND, searched.to_dict(), samples=lambda: probe.grid(ema),
               meta={"steps": config.steps, "search": result,
                     "teacher_sha256": sha256_file(teacher_path), **identity})
    return result
