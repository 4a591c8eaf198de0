"""EfficientNet-style compound scaling of a searched model (``nasforge scale``).

Tan & Le (2019) scale a base network's depth by ``d = alpha**phi``, its width by
``w = beta**phi`` and its input resolution by ``r = gamma**phi``, with
``alpha * beta**2 * gamma**2 ~= 2`` so that each unit of ``phi`` about doubles the FLOPs.
The coefficients come from a small grid search at ``phi = 1``; ``phi`` then sets the size.
Here, as in the paper:

1. **Grid** (:func:`grid`): ``(alpha, beta, gamma)`` with ``alpha * beta**2 * gamma**2 = 2``
   (beta and gamma on a 0.1 grid, alpha solved for; gamma stays 1 for non-image data).
   Each point's ``phi = 1`` network is trained for the same short time on the run's
   training split and scored on its validation split (:func:`grid_search`); the best
   point's coefficients win. With no grid time the paper's (1.2, 1.1, 1.15) are used.
2. **Budget** (:func:`candidates`): ``phi = 0, step, 2 step, ...`` until a candidate
   breaks a constraint; every distinct network is built and measured (FLOPs with
   ``FlopCounterMode``, parameters, CPU latency at batch 1, as a search measures them)
   and the largest that fits is returned.
3. **Training and export** (:func:`scale_model`): the chosen network is trained with the
   run's recipe for a time budget, tested, and exported as a model directory.

Depth and width are the space's business (:meth:`SearchSpace.scale`; ``can_scale`` says
whether a space has it); resolution is an :class:`~nasforge.export.InputResize` in front
of the network, so the scaled model takes the same inputs as the base model (images of
the data's shape, the same ONNX input) and resizes them itself (bilinear); its FLOPs and
latency include that.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from nasforge.errors import NasforgeError

if TYPE_CHECKING:
    from nasforge.data import Dataset
    from nasforge.objectives import Constraint
    from nasforge.spaces.base import Arch, SearchSpace

#: the coefficients of EfficientNet-B0's grid search (used when the grid is not searched)
PAPER = (1.2, 1.1, 1.15)
#: width alone, at the same FLOPs per unit of phi (beta**2 = 2): the usual baseline
WIDTH_ONLY = (1.0, math.sqrt(2.0), 1.0)
#: the FLOPs factor per unit of phi that the grid keeps (alpha * beta**2 * gamma**2)
FLOPS_PER_PHI = 2.0
#: phi is never scanned past this (2**8 = 256 x the FLOPs)
MAX_PHI = 8.0
#: the training options of a run's estimator that make up its recipe
RECIPE_KEYS = ("batch_size", "optimizer", "lr", "weight_decay", "label_smoothing", "device",
               "augment", "warmup")


@dataclass(frozen=True)
class Coefficients:
    """``alpha`` (depth), ``beta`` (width), ``gamma`` (resolution) per unit of phi."""

    alpha: float
    beta: float
    gamma: float

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "gamma"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not (
                    math.isfinite(v) and 1.0 <= v <= 4.0):
                raise NasforgeError(f"compound scaling: {name} must be a number in [1, 4], "
                                    f"got {v!r}")

    @classmethod
    def parse(cls, text: str | Sequence[float]) -> Coefficients:
        """From ``"1.2,1.1,1.15"`` (or three numbers); ``"paper"`` and ``"width"`` name
        :data:`PAPER` and :data:`WIDTH_ONLY`."""
        if isinstance(text, str):
            named = {"paper": PAPER, "width": WIDTH_ONLY}
            if text.strip().lower() in named:
                return cls(*named[text.strip().lower()])
            parts = [p.strip() for p in text.split(",")]
            try:
                vals = [float(p) for p in parts]
            except ValueError:
                vals = []
        else:
            vals = list(text)
        if len(vals) != 3:
            raise NasforgeError(f"coefficients must be three numbers 'alpha,beta,gamma' (e.g. "
                                f"1.2,1.1,1.15), 'paper' or 'width', got {text!r:.80}")
        return cls(*vals)

    @property
    def flops_factor(self) -> float:
        """``alpha * beta**2 * gamma**2``: the FLOPs factor per unit of phi, in theory."""
        return self.alpha * self.beta**2 * self.gamma**2

    def at(self, phi: float) -> tuple[float, float, float]:
        """``(depth, width, resolution)`` multipliers at ``phi``."""
        return self.alpha**phi, self.beta**phi, self.gamma**phi

    def __str__(self) -> str:
        return f"alpha={self.alpha:.3g} beta={self.beta:.3g} gamma={self.gamma:.3g}"


def grid(image: bool = True, step: float = 0.1, max_bg: float = 1.4) -> list[Coefficients]:
    """The coefficient grid: beta and gamma from 1 to ``max_bg`` by ``step``, alpha solved
    from ``alpha * beta**2 * gamma**2 = 2`` and kept when in [1, 2]; the paper's point is
    added. Without resolution (``image=False``) gamma is 1."""
    n = int(round((max_bg - 1.0) / step))
    vals = [round(1.0 + i * step, 6) for i in range(n + 1)]
    out: list[Coefficients] = []
    for b in vals:
        for g in (vals if image else [1.0]):
            a = FLOPS_PER_PHI / (b * b * g * g)
            if 1.0 - 1e-9 <= a <= 2.0 + 1e-9:
                out.append(Coefficients(round(max(a, 1.0), 4), b, g))
    if image:
        out.append(Coefficients(*PAPER))
    return list(dict.fromkeys(out))


# ------------------------------------------------------------------------------ building
@dataclass
class Scaled:
    """One scaled network: its space (options widened), arch and input resize."""

    phi: float
    coefficients: Coefficients
    depth: float
    width: float
    resolution: float
    space: SearchSpace
    arch: Arch
    size: tuple[int, int] | None  # (H, W) the network runs at; None: no resize
    metrics: dict[str, float] = field(default_factory=dict)
    broken: list[str] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, Any]:
        """What makes two candidates the same network (phi steps that round alike)."""
        return self.arch.text, self.size

    @property
    def fits(self) -> bool:
        return not self.broken

    def row(self) -> dict[str, Any]:
        """The candidate as a JSON-able table row."""
        return {"phi": self.phi, "depth": self.depth, "width": self.width,
                "resolution": self.resolution,
                "input": None if self.size is None else list(self.size),
                "arch": self.arch.text, **self.metrics, "fits": self.fits,
                "broken": list(self.broken)}


def _side(n: int, mult: float) -> int:
    """A side ``n`` times ``mult``, rounded to the nearest pixel, never below ``n``."""
    return max(int(n), int(n * mult + 0.5)) if mult >= 1 else max(1, int(n * mult + 0.5))


def scale_arch(space: SearchSpace, arch: Arch, input_shape: Sequence[int],
               coefficients: Coefficients, phi: float) -> Scaled:
    """``arch`` scaled by ``coefficients`` at ``phi`` (see module docstring)."""
    if not space.can_scale:
        space.scale(arch, 1.0, 1.0)  # the space's own one-line refusal
    if isinstance(phi, bool) or not isinstance(phi, int | float) or not (
            math.isfinite(phi) and 0 <= phi <= MAX_PHI):
        raise NasforgeError(f"phi must be a number in [0, {MAX_PHI:g}], got {phi!r}")
    d, w, r = coefficients.at(phi)
    new_space, new_arch = space.scale(arch, d, w)
    size = None
    if len(input_shape) == 3 and coefficients.gamma != 1.0:
        h, wd = (_side(int(s), r) for s in input_shape[1:])
        if (h, wd) != tuple(int(s) for s in input_shape[1:]):
            size = (h, wd)
    return Scaled(float(phi), coefficients, d, w, r, new_space, new_arch, size)


def build(sc: Scaled, input_shape: Sequence[int], num_outputs: int) -> nn.Module:
    """The network of ``sc``, behind an input resize when it runs at another resolution
    (so it takes ``input_shape`` either way)."""
    from nasforge.export import InputResize

    if sc.size is None:
        return sc.space.build(sc.arch, input_shape, num_outputs)
    inner = sc.space.build(sc.arch, (int(input_shape[0]), *sc.size), num_outputs)
    return InputResize(inner, sc.size)


def measure(model: nn.Module, input_shape: Sequence[int], repeats: int = 20
            ) -> dict[str, float]:
    """FLOPs, parameters and CPU latency at batch 1 (median ms) of ``model``, measured as
    the train estimator measures a trial (the resize included)."""
    from nasforge import metrics as M
    from nasforge.estimators.training import latency_metrics

    model.to("cpu").eval()
    out: dict[str, float] = {"flops": float(M.count_flops(model, input_shape)),
                             "params": float(M.count_params(model))}
    out.update(latency_metrics(model, input_shape, repeats=repeats))
    return out


def candidates(space: SearchSpace, arch: Arch, input_shape: Sequence[int], num_outputs: int,
               coefficients: Coefficients, constraints: Sequence[Constraint], *,
               phi_step: float = 0.25, max_phi: float = MAX_PHI, repeats: int = 20,
               say: Callable[[str], Any] | None = None) -> list[Scaled]:
    """Every distinct network for ``phi = 0, phi_step, ...`` up to and including the first
    that breaks ``constraints`` (or cannot be built, or ``max_phi``), measured.

    FLOPs and parameters grow with phi (depth, width and resolution never shrink), so the
    scan stops at the first candidate over the budget; the unscaled network comes first.
    """
    if not constraints:
        raise NasforgeError("give a budget to scale to: --max-latency-ms, --max-flops "
                            "and/or --max-params")
    if not (math.isfinite(phi_step) and 0 < phi_step <= max_phi):
        raise NasforgeError(f"phi step must be in (0, {max_phi:g}], got {phi_step!r}")
    out: list[Scaled] = []
    seen: set[Any] = set()
    n = int(math.floor(max_phi / phi_step + 1e-9))
    for i in range(n + 1):
        phi = round(i * phi_step, 6)
        try:
            sc = scale_arch(space, arch, input_shape, coefficients, phi)
            if sc.key in seen:
                continue
            seen.add(sc.key)
            model = build(sc, input_shape, num_outputs)
        except NasforgeError as e:
            if i == 0:
                raise
            if say:
                say(f"phi {phi:g}: not built ({e}); stopping the scan")
            break
        sc.metrics = measure(model, input_shape, repeats=repeats)
        sc.broken = _broken(sc.metrics, constraints)
        out.append(sc)
        if sc.broken:
            break
    return out


def _num(v: Any) -> str:
    """A count with k/M/G (1.23M), other numbers with 4 digits, a missing one as '-'."""
    if v is None or isinstance(v, bool) or not isinstance(v, int | float):
        return "-" if v is None else str(v)
    for div, suf in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.3g}{suf}"
    return f"{v:.4g}"


def _broken(metrics: Mapping[str, Any], constraints: Sequence[Constraint]) -> list[str]:
    """The constraints ``metrics`` break, each with the measured value."""
    return [f"{c} ({c.metric} = {_num(metrics.get(c.metric))})"
            for c in constraints if not c.satisfied(metrics)]


def pick(cands: Sequence[Scaled]) -> Scaled:
    """The largest candidate within the budget (the last that fits: they grow with phi);
    a budget the unscaled model already breaks is the user's error."""
    fitting = [c for c in cands if c.fits]
    if not fitting:
        base = cands[0] if cands else None
        why = "; ".join(base.broken) if base else "no candidate"
        raise NasforgeError(f"the budget is too tight: the unscaled model (phi = 0) already "
                            f"breaks it: {why}")
    return fitting[-1]


def format_table(cands: Sequence[Scaled], chosen: Scaled | None = None) -> str:
    """The candidates as a plain-text table (one line each, the chosen one marked)."""
    head = (f"{'':2}{'phi':>5} {'depth':>6} {'width':>6} {'res':>6} {'input':>9} "
            f"{'FLOPs':>9} {'params':>9} {'lat ms':>8}  fits")
    lines = [head]
    for c in cands:
        mark = "->" if chosen is not None and c is chosen else ""
        inp = "-" if c.size is None else f"{c.size[0]}x{c.size[1]}"
        m = c.metrics
        lines.append(
            f"{mark:2}{c.phi:>5.2f} {c.depth:>6.3f} {c.width:>6.3f} {c.resolution:>6.3f} "
            f"{inp:>9} {_num(m.get('flops')):>9} {_num(m.get('params')):>9} "
            f"{m.get('latency_ms', float('nan')):>8.3f}  "
            + ("yes" if c.fits else "no: " + "; ".join(c.broken)))
    return "\n".join(lines)


# ------------------------------------------------------------------------- the base run
@dataclass
class Base:
    """What scaling starts from: the model directory's space and arch, its data and the
    training recipe of the run that found it."""

    model_dir: Path
    space: SearchSpace
    arch: Arch
    input_shape: tuple[int, ...]
    data: Dataset
    recipe: dict[str, Any]
    seed: int
    run_dir: Path | None
    doc: dict[str, Any]


def _run_config(model_dir: Path) -> tuple[Path | None, dict[str, Any] | None]:
    """The run directory a model directory came from and its stored config (None, None
    for a model directory that is not in a run: copied elsewhere)."""
    import json

    from nasforge.store import RunStore

    where = [model_dir.parent]
    try:
        extra = json.loads((model_dir / "summary.json").read_text()).get("extra") or {}
        if isinstance(extra.get("run_dir"), str):
            where.append(Path(extra["run_dir"]))
    except (OSError, ValueError, AttributeError):
        pass
    for run in where:
        if RunStore.exists(run):
            with RunStore.open(run) as store:
                cfg = store.config
            return run, dict(cfg or {})
    return None, None


def load_base(path: str | os.PathLike[str], dataset: str | None = None) -> Base:
    """The model directory ``path`` (RUN_DIR/best, or a run directory) with its data and
    recipe: from the run's stored config when the directory is in a run, else the data set
    named in ``arch.json`` and the default recipe. ``dataset`` overrides the data."""
    from nasforge import spaces
    from nasforge.data import load_dataset
    from nasforge.export import model_dir
    from nasforge.export.modeldir import _read_arch_doc

    d = model_dir(path)
    doc = _read_arch_doc(d)
    if doc.get("input_resize") is not None:
        raise NasforgeError(f"{d} is already a scaled model (it has an input resize); scale "
                            "the run's unscaled model (RUN_DIR/best)")
    try:
        space = spaces.get(str(doc["space"]), **dict(doc.get("space_config") or {}))
        arch = space.from_json(doc["arch"])
    except (TypeError, ValueError) as e:
        raise NasforgeError(f"{d}: cannot rebuild the architecture: {e}") from None
    if not space.can_scale:
        space.scale(arch, 1.0, 1.0)  # one line: which spaces can
    run_dir, cfg = _run_config(d)
    cfg = cfg or {}
    est = (cfg.get("estimator") or {}).get("options") or {}
    recipe = {k: est[k] for k in RECIPE_KEYS if est.get(k) is not None}
    seed = int(cfg.get("seed") or 0)
    ds = cfg.get("dataset") or {}
    if dataset is not None:
        data = load_dataset(dataset, seed=seed)
    elif ds and not ds.get("in_memory"):
        data = load_dataset(ds.get("resolved") or ds["name"], data_dir=ds.get("data_dir"),
                            seed=seed, **(ds.get("options") or {}))
    else:
        name = ds.get("name") or doc.get("dataset")
        if not name or ds.get("in_memory"):
            raise NasforgeError(f"{d}: the data it was trained on cannot be loaded again "
                                f"({name or 'unknown'}, in memory); give --dataset")
        data = load_dataset(str(name), seed=seed)
    shape = tuple(int(s) for s in doc["input_shape"])
    if tuple(data.input_shape) != shape:
        raise NasforgeError(f"the data ({data.name}) have input shape "
                            f"{tuple(data.input_shape)}, the model {shape}")
    if not recipe:
        recipe = dict(space.train_defaults)
        recipe.pop("epochs", None)
    return Base(d, space, arch, shape, data, recipe, seed, run_dir, doc)


# ---------------------------------------------------------------------------- training
def _train_kw(base: Base, seconds: float) -> dict[str, Any]:
    """``train_model`` options: the run's recipe for ``seconds`` of wall-clock time."""
    return {**base.recipe, "epochs": 10**6, "seconds": float(seconds), "data_fraction": 1.0,
            "resolution": None, "seed": base.seed}


def grid_search(base: Base, points: Sequence[Coefficients], seconds: float, *,
                say: Callable[[str], Any] | None = None) -> list[dict[str, Any]]:
    """Each point's phi = 1 network trained ``seconds`` on the training split and scored
    on the validation split (the paper's step 1, at equal time); best first."""
    from nasforge.training import train_model

    task = base.data.make_task()
    key, sign = task.objective, (1.0 if task.mode == "max" else -1.0)
    rows: list[dict[str, Any]] = []
    for co in points:
        try:
            sc = scale_arch(base.space, base.arch, base.input_shape, co, 1.0)
            torch.manual_seed(base.seed)
            model = build(sc, base.input_shape, base.data.n_outputs)
        except NasforgeError as e:
            rows.append({"coefficients": co, "error": str(e), key: None})
            continue
        hist = train_model(model, base.data, **_train_kw(base, seconds))
        score = float(hist.get(key, math.nan))
        rows.append({"coefficients": co, "arch": sc.arch.text,
                     "input": None if sc.size is None else list(sc.size), key: score,
                     "epochs": float(hist["epochs"])})
        if say:
            say(f"grid {co}: {key} {score:.4f} after {hist['epochs']:.3g} epochs")

    def rank(r: dict[str, Any]) -> float:
        v = r.get(key)
        return -math.inf if v is None or not math.isfinite(v) else sign * v

    return sorted(rows, key=rank, reverse=True)


@dataclass
class ScaleResult:
    """What :func:`scale_model` did: the coefficients, the table, the chosen candidate,
    its final metrics and where it was exported (None for a dry run)."""

    coefficients: Coefficients
    grid: list[dict[str, Any]]
    candidates: list[Scaled]
    chosen: Scaled
    metrics: dict[str, Any]
    out: Path | None


def scale_model(
    path: str | os.PathLike[str],
    *,
    max_latency_ms: float | None = None,
    max_flops: Any = None,
    max_params: Any = None,
    constraints: Any = None,
    time_budget: float = 60.0,
    coefficients: Coefficients | str | None = None,
    grid_time: float = 10.0,
    phi_step: float = 0.25,
    out: str | os.PathLike[str] | None = None,
    dataset: str | None = None,
    train: bool = True,
    seed: int | None = None,
    onnx: bool = True,
    repeats: int = 20,
    say: Callable[[str], Any] | None = None,
) -> ScaleResult:
    """Compound-scale the model in ``path`` to the largest size within the budget, train
    it for ``time_budget`` seconds with its run's recipe and export it to ``out``
    (default: ``scaled`` beside the model directory, i.e. ``RUN_DIR/scaled``).

    ``coefficients`` (``Coefficients``, ``"1.2,1.1,1.15"``, ``"paper"``, ``"width"``)
    skips the grid search; else each grid point is trained ``grid_time`` seconds (0: the
    paper's coefficients, no search). ``train=False`` stops after choosing (nothing is
    written). ``seed``: of the initialization and the training (default: the run's).
    ``onnx=False`` leaves ``model.onnx`` out (benchmarks).
    """
    from nasforge.objectives import parse_constraints
    from nasforge.run.finalize import finish_model, served_tta

    say = say or (lambda _m: None)
    cons = parse_constraints(constraints, max_latency_ms=max_latency_ms, max_flops=max_flops,
                             max_params=max_params)
    if not cons:
        raise NasforgeError("give a budget to scale to: --max-latency-ms, --max-flops "
                            "and/or --max-params")
    for name, v in (("time budget", time_budget), ("grid time", grid_time)):
        if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
            raise NasforgeError(f"the {name} must be a non-negative number of seconds")
    if train and time_budget <= 0:
        raise NasforgeError("the time budget of the scaled model's training must be positive")
    base = load_base(path, dataset)
    from nasforge.tasks.base import Task

    task = base.data.make_task()
    if type(task).build_network is not Task.build_network:  # the task owns its head
        raise NasforgeError(f"compound scaling scales the space's own network; a "
                            f"{task.name} model puts the task's neck and head on it, which "
                            "nasforge scale does not scale yet")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise NasforgeError(f"seed must be a non-negative integer, got {seed!r}")
        base.seed = seed
    target = Path(out) if out is not None else base.model_dir.parent / "scaled"
    if target.resolve() == base.model_dir.resolve():
        raise NasforgeError(f"--out {target} is the model being scaled; choose another folder")
    image = len(base.input_shape) == 3
    # the base network must fit before anything is trained
    base_sc = scale_arch(base.space, base.arch, base.input_shape, Coefficients(1, 1, 1), 0.0)
    base_sc.metrics = measure(build(base_sc, base.input_shape, base.data.n_outputs),
                              base.input_shape, repeats=repeats)
    base_sc.broken = _broken(base_sc.metrics, cons)
    pick([base_sc])
    grid_rows: list[dict[str, Any]] = []
    if coefficients is not None:
        co = coefficients if isinstance(coefficients, Coefficients) else \
            Coefficients.parse(coefficients)
    elif grid_time > 0:
        points = grid(image=image)
        say(f"grid search: {len(points)} coefficient sets at phi = 1, {grid_time:g} s each")
        grid_rows = grid_search(base, points, grid_time, say=say)
        ok = [r for r in grid_rows if "error" not in r]
        if not ok:
            raise NasforgeError("no point of the grid could be built: " +
                                "; ".join(str(r.get("error")) for r in grid_rows[:3]))
        co = ok[0]["coefficients"]
    else:
        co = Coefficients(*PAPER) if image else Coefficients(1.2, math.sqrt(2 / 1.2), 1.0)
    if not image and co.gamma != 1.0:
        raise NasforgeError(f"gamma must be 1 for {base.data.input_kind} data (resolution "
                            "scaling applies to images)")
    say(f"coefficients: {co} (alpha*beta^2*gamma^2 = {co.flops_factor:.3g})")
    cands = candidates(base.space, base.arch, base.input_shape, base.data.n_outputs, co, cons,
                       phi_step=phi_step, repeats=repeats, say=say)
    chosen = pick(cands)
    say(format_table(cands, chosen))
    if not train:
        return ScaleResult(co, grid_rows, cands, chosen, dict(chosen.metrics), None)
    torch.manual_seed(base.seed)
    model = build(chosen, base.input_shape, base.data.n_outputs)
    say(f"training phi = {chosen.phi:g} ({chosen.arch.text}"
        + (f", {chosen.size[0]}x{chosen.size[1]} inputs" if chosen.size else "")
        + f") for {time_budget:.0f} s on all training and validation examples")
    info = {
        "base": str(base.model_dir), "base_arch": base.arch.text, "phi": chosen.phi,
        "coefficients": {"alpha": co.alpha, "beta": co.beta, "gamma": co.gamma},
        "depth": chosen.depth, "width": chosen.width, "resolution": chosen.resolution,
        "input_resize": None if chosen.size is None else list(chosen.size),
        "constraints": [str(c) for c in cons],
        "candidates": [c.row() for c in cands],
        "grid": [{**r, "coefficients": str(r["coefficients"])} for r in grid_rows],
    }
    t0 = time.perf_counter()
    final, where = finish_model(
        model, chosen.arch, chosen.space, base.data, target,
        train={**_train_kw(base, time_budget), "include_val": True},
        tta=served_tta(base.recipe.get("augment"), base.data),
        extra={"scaling": info, "run_dir": None if base.run_dir is None else str(base.run_dir)},
        summary={"scaling": info, "constraints": [str(c) for c in cons]},
        onnx=onnx, device=str(base.recipe.get("device", "cpu")), say=say,
    )
    final["scale_time_s"] = time.perf_counter() - t0
    again = _broken(final, cons)
    if again:  # latency is re-measured on the trained model: noise near the bound
        say(f"warning: measured again after training, the model breaks the budget: "
            f"{'; '.join(again)} (it fitted when chosen; latency varies between runs)")
    return ScaleResult(co, grid_rows, cands, chosen, final, where)

