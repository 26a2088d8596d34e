"""The latency search's speed model (the ``fit_speed_model`` stage): measured unit latencies
(:mod:`pipeline.profiling.speed_data`) to a differentiable prediction of a student's latency.

* **Units**: a level block of feature size s and widths in -> out (``block``; ``block-const``
  for the first level's, from a constant, without upsampling; ``-short`` for a block of its
  first convolution only, as the search's block-length variables leave) and the last head
  (input width, hidden width, variant: ``head-bilinear`` / ``head-subpixel``). A student's
  latency is the per-invoke overhead plus the sum of its units' (the additivity the fit checks
  on whole students).
* **Features** (:func:`unit_features`), computed with torch ops so that a width given as a
  tensor gets a gradient (the search's channel masks): the family (one-hot), log2 of the
  feature size, the widths, the widths rounded up to 16 (XNNPACK's float32 tile on this x86-64:
  ``../shared/reference/latency_search.md``; rounded with a straight-through gradient), log MACs
  and log activation elements (:func:`unit_macs`, :func:`unit_elements`; the MAC count equals
  the FLOP counter's, tested).
* **MLP**: an ensemble of small MLPs on the standardised features, trained on log latency (a
  squared error in log space is a relative one); the prediction is the ensemble's geometric
  mean.
* **Analytic baseline**, fitted on the same split, so the README can say what the MLP buys: per
  family, latency = a MACs + b elements + c by least squares (a roofline's two terms and a
  constant).
* **Domain**: the feature sizes and widths measured per family; predicting outside them is
  refused (:meth:`SpeedModel.check_domain`), naming the unit and what to measure.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pydantic
import torch
from scipy import stats
from torch import nn

from pipeline.config import PositiveInt, StageConfig
from pipeline.errors import PipelineError
from pipeline.io import atomic_path
from pipeline.profiling.families import BLOCKS, FAMILIES, PLAIN_FAMILIES, block_family
from pipeline.snapshot import rebuild_from_snapshot, save_snapshot


def feature_names(families: Sequence[str] = PLAIN_FAMILIES) -> tuple[str, ...]:
    """The speed model's input features for a model of ``families`` (one-hot first)."""
    return (*(f"is {f}" for f in families), "log2 size", "in / 256", "out / 256",
            "in rounded to 16 / 256", "out rounded to 16 / 256", "log MACs", "log elements")


FEATURES = feature_names()  # of a speed model without short blocks
SPEED_MODEL_KIND = "speed-model"
log = logging.getLogger(__name__)

Width = float | torch.Tensor


def unit_macs(family: str, size: int, cin: Width, cout: Width, w_dim: int) -> Width:
    """Multiply-accumulates of one unit at batch 1 (what the FLOP counter counts, halved): the
    style affines on w, the depthwise and pointwise convolutions, the demodulation's matmul on
    the styles; for a head (``cout`` its hidden width, ``size`` its input's) the projection, the
    upsampling stages' convolutions and the RGB (or 12-channel subpixel) output."""
    if family in BLOCKS:
        area = size * size
        first = w_dim * cin + 9 * cin * area + cin * cout * area + cin * cout
        if family.endswith("-short"):
            return first
        return first + w_dim * cout + 9 * cout * area + cout * cout * area + cout * cout
    stages = {"head-bilinear": (2, 4), "head-subpixel": (2,)}[family]
    macs = w_dim * cin + cin * cout * size * size
    for scale in stages:
        macs = macs + (9 * cout + cout * cout) * (scale * size) ** 2
    out = 3 if family == "head-bilinear" else 12
    return macs + out * cout * (stages[-1] * size) ** 2


def unit_elements(family: str, size: int, cin: Width, cout: Width) -> Width:
    """Activation elements a unit reads and writes at batch 1: its input and each convolution's
    output (a proxy for its memory traffic)."""
    area = size * size
    if family in BLOCKS:
        input_area = area if family.startswith("block-const") else area // 4
        first = cin * input_area + (cin + cout) * area
        return first if family.endswith("-short") else first + 2 * cout * area
    stages = {"head-bilinear": (2, 4), "head-subpixel": (2,)}[family]
    elements = cin * area + cout * area
    for scale in stages:
        elements = elements + 2 * cout * (scale * size) ** 2
    out = 3 if family == "head-bilinear" else 12
    return elements + out * (stages[-1] * size) ** 2


def _round_up_16(width: torch.Tensor) -> torch.Tensor:
    """``width`` rounded up to a multiple of 16, with the gradient of the identity."""
    return width + (torch.ceil(width / 16) * 16 - width).detach()


def unit_features(family: str, size: int, cin: Width, cout: Width, w_dim: int,
                  families: Sequence[str] = PLAIN_FAMILIES) -> torch.Tensor:
    """The input of a speed model of ``families`` for one unit (:func:`feature_names`),
    differentiable in the widths."""
    if family not in families:
        raise ValueError(f"unit family {family!r}: one of {', '.join(families)}")
    cin, cout = (torch.as_tensor(c, dtype=torch.float32) for c in (cin, cout))
    onehot = [torch.tensor(float(family == f)) for f in families]
    return torch.stack([
        *onehot, torch.tensor(math.log2(size)), cin / 256, cout / 256,
        _round_up_16(cin) / 256, _round_up_16(cout) / 256,
        torch.log(unit_macs(family, size, cin, cout, w_dim)),
        torch.log(unit_elements(family, size, cin, cout))])


class FitSpeedModelConfig(StageConfig):
    """The ``fit_speed_model`` section of params.yaml."""

    hidden: list[PositiveInt]        # the MLP's hidden widths
    ensemble: PositiveInt            # MLPs averaged (geometric mean)
    steps: PositiveInt               # full-batch Adam steps per MLP
    lr: Annotated[float, pydantic.Field(gt=0)]
    weight_decay: Annotated[float, pydantic.Field(ge=0)]
    holdout: Annotated[float, pydantic.Field(gt=0, lt=1)]  # share of the units held out
    seed: int
    floor_ms: Annotated[float, pydantic.Field(gt=0)]  # targets below are fitted as floor_ms
    min_ms: Annotated[float, pydantic.Field(ge=0)]    # the accuracy metrics' smallest unit


class SpeedModelConfig(pydantic.BaseModel):
    """What rebuilds a speed model, stored in its snapshot: the MLPs' shape, the baseline's
    coefficients, the domain and the constants measured, and where they were measured."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    w_dim: PositiveInt
    overhead_ms: float
    mapping_ms: float | None
    hidden: list[PositiveInt]
    ensemble: PositiveInt
    baseline: dict[str, list[float]]   # family: (a, b, c), see _fit_baseline
    domain: dict[str, dict[str, Any]]  # family: sizes, max_in, max_out of the training units
    machine: dict[str, Any]
    geometry: dict[str, Any]           # the student whose geometry was measured
    # the unit families one-hot encoded (snapshots older than the field: the plain four)
    families: tuple[str, ...] = PLAIN_FAMILIES
    accuracy: dict[str, Any] | None = None  # the MLP's held-out metrics (fit_speed_model)


class SpeedModel(nn.Module):
    """An ensemble of MLPs (standardised :func:`unit_features` -> log ms), the analytic
    baseline's coefficients, the overhead and the domain measured; rebuilt from its snapshot
    (:func:`load_speed_model`)."""

    def __init__(self, config: SpeedModelConfig | dict[str, Any]):
        super().__init__()
        self.config = config = SpeedModelConfig.model_validate(config)
        self.w_dim, self.overhead_ms = config.w_dim, config.overhead_ms
        inputs = len(feature_names(config.families))
        self.members = nn.ModuleList(_mlp(inputs, config.hidden) for _ in range(config.ensemble))
        self.register_buffer("mean", torch.zeros(inputs))
        self.register_buffer("std", torch.ones(inputs))

    def unit_ms(self, family: str, size: int, cin: Width, cout: Width) -> torch.Tensor:
        """Predicted latency of one unit (ms), differentiable in the widths."""
        x = (unit_features(family, size, cin, cout, self.w_dim, self.config.families)
             - self.mean) / self.std
        return torch.stack([m(x).squeeze(-1) for m in self.members]).mean().exp()

    def baseline_ms(self, family: str, size: int, cin: float, cout: float) -> float:
        a, b, c = self.config.baseline[family]
        return (a * unit_macs(family, size, cin, cout, self.w_dim) / 1e6
                + b * unit_elements(family, size, cin, cout) / 1e6 + c)

    def student_ms(self, units: Sequence[tuple[str, int, Width, Width]]) -> torch.Tensor:
        """Predicted latency of a whole inference graph: the overhead and its units'."""
        return self.overhead_ms + sum(self.unit_ms(*unit) for unit in units)

    def check_domain(self, units: Sequence[tuple[str, int, Width, Width]]) -> None:
        """Refuse units of a family never measured, or outside the feature sizes and widths
        measured for their kind (blocks of every block family together, short ones too: the
        MLP shares what it learns about sizes and widths between them; heads)."""
        domain = self.config.domain
        for family, size, cin, cout in units:
            unit = f"{family} unit (size {size}, widths {float(cin):g} -> {float(cout):g})"
            if family not in domain:
                raise PipelineError(f"speed model: no {family} units were measured; measure "
                                    f"them (measure_latency) to predict a {unit}")
            kind = [v for f, v in domain.items() if f.split("-")[0] == family.split("-")[0]]
            sizes = sorted({s for v in kind for s in v["sizes"]})
            max_in, max_out = (max(v[key] for v in kind) for key in ("max_in", "max_out"))
            if not (sizes[0] <= size <= sizes[-1] and float(cin) <= max_in
                    and float(cout) <= max_out):
                raise PipelineError(
                    f"speed model: {unit} is outside what was measured (sizes {sizes[0]} to "
                    f"{sizes[-1]}, widths up to {max_in} -> {max_out}); widen "
                    "measure_latency (preset, widen)")


def _mlp(inputs: int, hidden: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(inputs, width), nn.SiLU()]
        inputs = width
    return nn.Sequential(*layers, nn.Linear(inputs, 1))


def student_units(channels: Sequence[Width], head_hidden: Width, sizes: Sequence[int],
                  head: str, convs: Sequence[int] | None = None
                  ) -> list[tuple[str, int, Width, Width]]:
    """The units of a student whose levels' blocks run at ``sizes`` (the first from its
    constant), with ``channels`` per level (and ``convs`` convolutions: 2 each by default) and
    a last head of width ``head_hidden`` (variant ``head``) at the last size."""
    units, cin = [], channels[0]
    convs = [2] * len(channels) if convs is None else convs
    for i, (size, cout, n) in enumerate(zip(sizes, channels, convs)):
        units.append((block_family(i > 0, n), size, cin, cout))
        cin = cout
    units.append((f"head-{head}", sizes[-1], channels[-1], head_hidden))
    return units


def point_unit(point: dict) -> tuple[str, int, float, float]:
    """A dataset point's (or a unit spec's) unit tuple."""
    if point["kind"] == "block":
        family = block_family(point.get("upsample", True), point.get("convs", 2))
    else:
        family = f"head-{point.get('head', 'bilinear')}"
    return family, point["size"], point["in_channels"], point["out_channels"]


def load_speed_data(path: Path) -> dict:
    """The ``measure_latency`` dataset (``points.json`` in the directory ``path``)."""
    file = path / "points.json"
    try:
        data = json.loads(file.read_text())
    except OSError as e:
        raise PipelineError(f"{file}: cannot read the speed-model data ({e.strerror}); run "
                            "measure_latency") from None
    except ValueError as e:
        raise PipelineError(f"{file}: not JSON ({e})") from None
    if not isinstance(data, dict):
        raise PipelineError(f"{file}: not a measure_latency dataset (a JSON object)")
    missing = [key for key in ("points", "overhead_ms", "student") if key not in data]
    if missing:
        raise PipelineError(f"{file}: not a measure_latency dataset (no {', '.join(missing)})")
    if not isinstance(data["student"], dict) or "w_dim" not in data["student"]:
        raise PipelineError(f"{file}: student has no w_dim")
    if not data["points"]:
        raise PipelineError(f"{file}: no measured units")
    keys = ("kind", "size", "in_channels", "out_channels", "latency_ms", "key")
    for i, item in enumerate([*data["points"], *data.get("students", [])]):
        needed = keys if i < len(data["points"]) else ("units", "latency_ms", "key")
        if not isinstance(item, dict) or any(k not in item for k in needed):
            raise PipelineError(f"{file}: entry {i} lacks one of {', '.join(needed)}")
    return data


def fit_speed_model(config: FitSpeedModelConfig, data: dict) -> tuple[SpeedModel, dict, list]:
    """Fit the MLP ensemble and the baseline on a seeded split of the units; return the model,
    its metrics (held-out units, the additivity on whole students, for both) and the rows of
    the predicted-vs-measured plot."""
    points = data["points"]
    train, test = split(points, config.holdout, config.seed)
    w_dim = data["student"]["w_dim"]
    # the plain families, and the short blocks' where the data has them
    present = {point_unit(p)[0] for p in points}
    families = tuple(f for f in FAMILIES if f in PLAIN_FAMILIES or f in present)
    model = SpeedModel({"w_dim": w_dim, "families": families, "overhead_ms": data["overhead_ms"],
                        "mapping_ms": data.get("mapping_ms"), "hidden": config.hidden,
                        "ensemble": config.ensemble, "baseline": _fit_baseline(train, w_dim),
                        "domain": _domain(train), "machine": data.get("machine", {}),
                        "geometry": data["student"]})
    x = torch.stack([unit_features(*point_unit(p), w_dim, families) for p in train])
    y = torch.tensor([math.log(max(p["latency_ms"], config.floor_ms)) for p in train])
    model.mean.copy_(x.mean(0))
    model.std.copy_(torch.where(x.std(0) > 1e-6, x.std(0), torch.ones(())) if len(train) > 1
                    else torch.ones(len(feature_names(families))))
    losses = [_train_member(member, (x - model.mean) / model.std, y, config, config.seed + k)
              for k, member in enumerate(model.members)]
    model.eval().requires_grad_(False)
    rows = _rows(model, test, "unit") + _rows(model, data.get("students", []), "student")
    metrics: dict[str, Any] = {
               "units": len(points), "train_units": len(train), "heldout_units": len(test),
               "students": len(data.get("students", [])),
               "train_log_rmse": float(np.sqrt(np.mean(losses)))}
    for predictor in ("mlp", "baseline"):
        metrics[predictor] = {
            "heldout": accuracy([r for r in rows if r["set"] == "unit"], predictor,
                                config.min_ms),
            "students": accuracy([r for r in rows if r["set"] == "student"], predictor, 0.0)}
    model.config = model.config.model_copy(update={"accuracy": metrics["mlp"]})
    return model, metrics, rows


def split(points: list[dict], holdout: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, held out): a seeded ``holdout`` share of each family's units held out, at least
    one unit of each family kept for training (so the baseline and the domain cover it)."""
    rng = np.random.default_rng(seed)
    held: set[int] = set()
    for family in FAMILIES:
        members = [i for i, p in enumerate(points) if point_unit(p)[0] == family]
        count = min(int(round(holdout * len(members))), len(members) - 1)
        held.update(int(i) for i in rng.permutation(members)[:max(count, 0)])
    return ([p for i, p in enumerate(points) if i not in held],
            [p for i, p in enumerate(points) if i in held])


def _train_member(member: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  config: FitSpeedModelConfig, seed: int) -> float:
    torch.manual_seed(seed)
    for layer in member:
        if isinstance(layer, nn.Linear):
            layer.reset_parameters()
    optimizer = torch.optim.AdamW(member.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.steps)
    for _ in range(config.steps):
        loss = (member(x).squeeze(-1) - y).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    with torch.no_grad():
        return float((member(x).squeeze(-1) - y).pow(2).mean())


def _fit_baseline(train: list[dict], w_dim: int) -> dict[str, list[float]]:
    """Per family, least-squares (a, b, c) of ms = a MACs / 1e6 + b elements / 1e6 + c."""
    coefficients = {}
    for family in FAMILIES:
        units = [(point_unit(p), p["latency_ms"]) for p in train if point_unit(p)[0] == family]
        if not units:
            continue
        design = np.array([[unit_macs(*u, w_dim) / 1e6, unit_elements(*u) / 1e6, 1.0]
                           for u, _ in units])
        solution, *_ = np.linalg.lstsq(design, np.array([ms for _, ms in units]), rcond=None)
        coefficients[family] = [float(v) for v in solution]
    return coefficients


def _domain(points: list[dict]) -> dict[str, dict]:
    domain: dict[str, dict] = {}
    for p in points:
        family, size, cin, cout = point_unit(p)
        entry = domain.setdefault(family, {"sizes": [], "max_in": 0, "max_out": 0})
        entry["sizes"] = sorted(set(entry["sizes"]) | {size})
        entry["max_in"], entry["max_out"] = max(entry["max_in"], cin), max(entry["max_out"], cout)
    return domain


def _rows(model: SpeedModel, items: list[dict], kind: str) -> list[dict]:
    """Measured and predicted (MLP, baseline) latency of held-out units or whole students."""
    rows = []
    for item in items:
        if kind == "unit":
            units, overhead = [point_unit(item)], 0.0
        else:
            units, overhead = [point_unit(u) for u in item["units"]], model.overhead_ms
        with torch.no_grad():
            mlp = float(sum(model.unit_ms(*u) for u in units)) + overhead
        baseline = sum(model.baseline_ms(*u) for u in units) + overhead
        rows.append({"set": kind, "key": item["key"], "measured_ms": item["latency_ms"],
                     "mlp_ms": mlp, "baseline_ms": float(baseline)})
    return rows


def accuracy(rows: list[dict], predictor: str, min_ms: float) -> dict[str, Any]:
    """MAPE (%) and share within +-10% over the rows measured at ``min_ms`` or more; Spearman's
    rank correlation over all rows (None where there are too few)."""
    kept = [r for r in rows if r["measured_ms"] >= min_ms]
    errors = np.array([abs(r[f"{predictor}_ms"] / r["measured_ms"] - 1) for r in kept])
    rho = (float(stats.spearmanr([r["measured_ms"] for r in rows],
                                 [r[f"{predictor}_ms"] for r in rows]).statistic)
           if len(rows) >= 3 else None)
    rho = None if rho is None or not math.isfinite(rho) else rho  # constant input: undefined
    return {"count": len(kept), "mape_pct": float(100 * errors.mean()) if kept else None,
            "within_10pct": float((errors <= 0.1).mean()) if kept else None,
            "spearman": rho}


def save_speed_model(model: SpeedModel, path: Path) -> None:
    save_snapshot(path, SPEED_MODEL_KIND, model, model.config.model_dump())


def load_speed_model(path: str | Path) -> SpeedModel:
    """The fitted speed model, rebuilt from its snapshot alone (no pickled code)."""
    return rebuild_from_snapshot(path, SPEED_MODEL_KIND, SpeedModel)


def write_rows(rows: list[dict], path: Path) -> None:
    """The predicted-vs-measured rows as CSV, for ``dvc plots``."""
    columns = ("set", "key", "measured_ms", "mlp_ms", "baseline_ms")
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(",".join(columns) + "\n")
            for r in rows:
                f.write(",".join(str(r[c]) for c in columns) + "\n")


def run_fit_speed_model(config: FitSpeedModelConfig, *, data: Path, out: Path,
                        predictions: Path) -> dict:
    """The ``fit_speed_model`` stage: fit on the dataset in ``data``, write the speed model's
    snapshot to ``out`` and the predicted-vs-measured rows to ``predictions``; its metrics."""
    dataset = load_speed_data(data)
    if dataset.get("machine", {}).get("threads") is None:
        raise PipelineError(f"{data / 'points.json'}: records no machine (threads)")
    torch.set_num_threads(1)  # the same fit, to the bit, on any machine
    model, metrics, rows = fit_speed_model(config, dataset)
    if metrics["heldout_units"] < 10:
        log.warning("%d held-out units: the accuracy figures mean little (the full dataset: "
                    "README, 'The latency search')", metrics["heldout_units"])
    save_speed_model(model, out)
    write_rows(rows, predictions)
    return {**metrics, "machine": dataset["machine"], "overhead_ms": dataset["overhead_ms"]}
