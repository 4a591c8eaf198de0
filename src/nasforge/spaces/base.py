"""Search-space interface and the architecture value type.

Every space in nasforge describes an architecture as a fixed, ordered list of
categorical *choices* (edge ops, kernel sizes, widths, ...). That one convention gives
every space sampling, mutation, crossover, neighbourhoods, one-hot encodings and an
Optuna mapping for free; a space only has to say how to *build* a network, and may
override the string form or the canonicalization of inactive choices.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn as nn

from nasforge.errors import ArchParseError

Value = str | int | float | bool


@dataclass(frozen=True)
class Choice:
    """One categorical decision of a space: its name and the options it can take."""

    name: str
    options: tuple[Value, ...]

    def __post_init__(self) -> None:
        if len(self.options) < 1:
            raise ValueError(f"choice {self.name!r} has no options")
        if len(set(self.options)) != len(self.options):
            raise ValueError(f"choice {self.name!r} has duplicate options")


@dataclass(frozen=True)
class Arch:
    """An immutable, hashable architecture of one space.

    ``items`` are the (choice name, value) pairs in the space's order, already
    canonical (so two equal networks compare equal); ``text`` is the canonical string.
    Create them with :meth:`SearchSpace.make` or :meth:`SearchSpace.parse`.
    """

    space: str
    items: tuple[tuple[str, Value], ...]
    text: str = field(compare=False, hash=False)

    def __str__(self) -> str:
        return self.text

    def __getitem__(self, name: str) -> Value:
        for k, v in self.items:
            if k == name:
                return v
        raise KeyError(name)

    @property
    def values(self) -> tuple[Value, ...]:
        return tuple(v for _, v in self.items)

    def as_dict(self) -> dict[str, Value]:
        return dict(self.items)

    def to_json(self) -> dict[str, Any]:
        """JSON form: ``{"space", "arch" (canonical string), "choices" (name -> value)}``."""
        return {"space": self.space, "arch": self.text, "choices": dict(self.items)}


@dataclass(frozen=True)
class Level:
    """One feature level a backbone exposes: its channels and its stride (input side /
    feature side, rounded up), what a task's head or a detection neck sizes itself by."""

    channels: int
    stride: int


class Backbone(nn.Module):
    """A network that maps an input to feature maps at several levels (timm style).

    ``levels`` declares them before any forward, so a head can be built from the
    declaration alone; :meth:`forward_features` returns one tensor per level, finest first
    and coarsest last (``(N, level.channels, ceil(H / level.stride), ...)``). A built
    classifier is a backbone that also has a head (``forward_head``); what
    :meth:`SearchSpace.build_backbone` returns has none, and its ``forward`` is
    :meth:`forward_features`.
    """

    levels: list[Level]

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """One feature tensor per entry of ``levels``, coarsest last."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> Any:
        return self.forward_features(x)


def last_level(features: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """The coarsest feature map: what a classification head pools (a head is given
    either the whole list from ``forward_features`` or that one tensor)."""
    return features if isinstance(features, torch.Tensor) else features[-1]


def no_head(net: nn.Module) -> Any:
    """The error ``forward_head`` of a head-less backbone raises."""
    from nasforge.errors import NasforgeError

    return NasforgeError(f"{type(net).__name__} was built as a backbone, without a head: "
                         "attach the task's head to forward_features instead")


#: what any network nasforge builds may cost, checked before its weights are allocated
#: (environment variables ``NASFORGE_MAX_PARAMS`` and ``NASFORGE_MAX_ACTIVATION_MB``
#: raise or lower them); inputs are bounded too
MAX_PARAMS = 300_000_000
MAX_ACTIVATION_MB = 4096.0  # summed layer outputs of one example
MAX_INPUT_SIDE = 8192
MAX_INPUT_CHANNELS = 64
MAX_FEATURES = 100_000  # of a feature vector (tables)
MAX_SEQUENCE_LENGTH = 100_000
MAX_CLASSES = 1_000_000

_guard = threading.local()


def _limit(env: str, default: float) -> float:
    try:
        v = float(os.environ.get(env, default))
    except ValueError:
        return default
    return v if math.isfinite(v) and v > 0 else default


def check_input_shape(input_shape: Any, num_classes: Any = 2) -> tuple[int, ...]:
    """``input_shape`` as (C, H, W) (images), (C, L) (sequences) or (F,) (feature vectors)
    integers within nasforge's bounds, else a clear error (a stored ``[1, 100000, 100000]``
    or ``1e400`` is refused, not allocated)."""
    from nasforge.errors import NasforgeError

    try:
        shape = tuple(input_shape)
    except TypeError:
        raise NasforgeError(f"input_shape must be (C, H, W), got {input_shape!r}") from None
    ok = len(shape) in (1, 2, 3) and all(isinstance(v, int | np.integer) and
                                         not isinstance(v, bool) for v in shape)
    if not ok:
        raise NasforgeError(f"input_shape must be 3 integers (C, H, W), 2 (C, L) for a "
                            f"sequence or one (F,) for features, got {shape!r:.200}")
    if len(shape) == 1:
        if not 1 <= int(shape[0]) <= MAX_FEATURES:
            raise NasforgeError(f"input_shape {shape} is out of bounds: 1-{MAX_FEATURES:,} "
                                "features")
    elif len(shape) == 2:  # a sequence: (channels, length)
        c, n = (int(v) for v in shape)
        if not (1 <= c <= MAX_INPUT_CHANNELS and 1 <= n <= MAX_SEQUENCE_LENGTH):
            raise NasforgeError(f"input_shape {shape} is out of bounds: 1-{MAX_INPUT_CHANNELS} "
                                f"channels and 1-{MAX_SEQUENCE_LENGTH} steps")
    else:
        c, h, w = (int(v) for v in shape)
        if not (1 <= c <= MAX_INPUT_CHANNELS and 1 <= h <= MAX_INPUT_SIDE
                and 1 <= w <= MAX_INPUT_SIDE):
            raise NasforgeError(
                f"input_shape {shape} is out of bounds: 1-{MAX_INPUT_CHANNELS} channels and "
                f"sides of 1-{MAX_INPUT_SIDE} pixels")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer) or not (
            1 <= num_classes <= MAX_CLASSES):
        raise NasforgeError(f"num_classes must be an integer from 1 to {MAX_CLASSES:,}, "
                            f"got {num_classes!r:.100}")
    return tuple(int(v) for v in shape)


def check_network_size(build: Any, space: Any, arch: Any, input_shape: Sequence[int],
                       num_classes: int) -> None:
    """Build ``arch`` on PyTorch's ``meta`` device (shapes only, no memory) and refuse it
    if its parameters or one example's activations pass the limits. A space whose build
    or forward cannot run on ``meta`` is checked on its parameters, or not at all."""
    import torch

    from nasforge.errors import NasforgeError

    try:
        with torch.device("meta"):
            net = build(space, arch, input_shape, num_classes)
    except NasforgeError:
        raise
    except Exception:  # noqa: BLE001 - not meta-friendly: the real build says what is wrong
        return
    n_params = sum(p.numel() for p in net.parameters())
    max_params = _limit("NASFORGE_MAX_PARAMS", MAX_PARAMS)
    if n_params > max_params:
        raise NasforgeError(
            f"{space.name}: the network has {n_params:,} parameters, over the limit of "
            f"{int(max_params):,} (set NASFORGE_MAX_PARAMS to change it); refused before "
            f"allocating it")
    total = 0

    def hook(_m: Any, _i: Any, out: Any) -> None:
        nonlocal total
        if isinstance(out, torch.Tensor):
            total += out.numel() * out.element_size()

    leaves = [m for m in net.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            net(torch.empty((1, *input_shape), device="meta"))
    except Exception:  # noqa: BLE001 - see docstring
        return
    finally:
        for h in handles:
            h.remove()
    max_mb = _limit("NASFORGE_MAX_ACTIVATION_MB", MAX_ACTIVATION_MB)
    if total / 2**20 > max_mb:
        raise NasforgeError(
            f"{space.name}: one example's activations take {total / 2**20:,.0f} MB, over the "
            f"limit of {max_mb:,.0f} MB (set NASFORGE_MAX_ACTIVATION_MB to change it); "
            f"refused before allocating it")


def _guarded(build: Any) -> Any:
    """``build`` with :func:`check_input_shape` and :func:`check_network_size` first."""

    @functools.wraps(build)
    def checked(self: Any, arch: Any, input_shape: Sequence[int], num_classes: int,
                *args: Any, **kw: Any) -> Any:
        if getattr(_guard, "active", False):  # inside a check: build as asked
            return build(self, arch, input_shape, num_classes, *args, **kw)
        shape = check_input_shape(input_shape, num_classes)
        _guard.active = True
        try:
            check_network_size(lambda sp, a, i, n: build(sp, a, i, n, *args, **kw), self,
                               arch, shape, int(num_classes))
        finally:
            _guard.active = False
        return build(self, arch, input_shape, num_classes, *args, **kw)

    checked.__nasforge_guarded__ = True  # type: ignore[attr-defined]
    return checked


def _guarded_backbone(build_backbone: Any) -> Any:
    """``build_backbone`` bounded like ``build`` (a backbone is a network too: a hostile
    arch must not allocate one either)."""

    @functools.wraps(build_backbone)
    def checked(self: Any, arch: Any, input_shape: Sequence[int], *args: Any,
                **kw: Any) -> Any:
        if getattr(_guard, "active", False):
            return build_backbone(self, arch, input_shape, *args, **kw)
        shape = check_input_shape(input_shape)
        _guard.active = True
        try:
            check_network_size(lambda sp, a, i, _n: build_backbone(sp, a, i, *args, **kw),
                               self, arch, shape, 1)
        finally:
            _guard.active = False
        return build_backbone(self, arch, input_shape, *args, **kw)

    checked.__nasforge_guarded__ = True  # type: ignore[attr-defined]
    return checked


#: channels of a scaled network are multiples of this (EfficientNet's ``round_filters``)
SCALE_DIVISOR = 8


def scale_channels(width: int, mult: float, divisor: int = SCALE_DIVISOR) -> int:
    """``width * mult`` rounded to a multiple of ``divisor`` as EfficientNet's
    ``round_filters`` does (nearest, never more than 10 % below the exact value), and
    never below ``width`` when ``mult >= 1``; ``mult == 1`` keeps ``width`` exactly, so
    phi = 0 is the unscaled network. Non-decreasing in ``mult``."""
    if mult == 1:
        return int(width)
    exact = width * mult
    new = max(divisor, int(exact + divisor / 2) // divisor * divisor)
    if new < 0.9 * exact:
        new += divisor
    return max(new, int(width)) if mult >= 1 else new


def scale_repeats(n: int, mult: float) -> int:
    """``n * mult`` layers, rounded to the nearest (half up), at least 1 (and at least ``n``
    when ``mult >= 1``). EfficientNet rounds up (``ceil``); with the 1-4 layers per stage
    of CPU-sized networks that would add a layer per stage for any phi > 0, so the
    depth coefficient would act at full strength from the first step."""
    if mult == 1 or n <= 0:
        return int(n)
    new = max(1, int(n * mult + 0.5))
    return max(new, int(n)) if mult >= 1 else new


def _check_multipliers(space: str, depth: Any, width: Any) -> tuple[float, float]:
    """``(depth, width)`` as positive finite floats, else the one-line error."""
    from nasforge.errors import NasforgeError

    out = []
    for name, v in (("depth", depth), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, int | float) or not (
                math.isfinite(v) and 0 < v <= 64):
            raise NasforgeError(f"{space}: the {name} multiplier must be a number in (0, 64], "
                                f"got {v!r}")
        out.append(float(v))
    return out[0], out[1]


class SearchSpace(ABC):
    """Base class of all search spaces (see module docstring).

    Subclasses set ``name``, implement :meth:`choices` and :meth:`build`, and may
    override :meth:`canonicalize`, :meth:`is_active`, :meth:`format` / :meth:`parse`.
    Randomness always comes from a ``numpy.random.Generator`` passed in by the caller.

    Every subclass's ``build`` is bounded before it allocates: the input shape is checked
    and the network is first built on the ``meta`` device, so one whose parameters or
    activations pass :data:`MAX_PARAMS` / :data:`MAX_ACTIVATION_MB` is refused with a
    one-line error (whatever a stored config or a hostile ``arch.json`` says).
    """

    name: str = "space"
    #: what the networks of this space take as input; a task attaches its head to a
    #: backbone of a space whose input kind matches its data
    input_kind: ClassVar[str] = "image"
    #: the space a search uses when none is given and the data are of this input kind
    #: (at most one space per kind says so; see :func:`nasforge.spaces.default_for`)
    default_for: ClassVar[str | None] = None
    #: training options this space's networks want when the user gives none (passed to an
    #: estimator that takes them; ``epochs`` only without a time budget, whose plan sizes
    #: trials itself): e.g. MLPs diverge under the image recipe's SGD at lr 0.05
    train_defaults: ClassVar[dict[str, Any]] = {}
    #: a time-budgeted final training runs at most this many times the winning trial's
    #: epochs (None: all the time left); what stays unused ends the job early
    final_epochs_factor: ClassVar[float | None] = None

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        for attr, guard in (("build", _guarded), ("build_backbone", _guarded_backbone)):
            fn = cls.__dict__.get(attr)
            if fn is not None and not getattr(fn, "__isabstractmethod__", False) \
                    and not getattr(fn, "__nasforge_guarded__", False):
                setattr(cls, attr, guard(fn))

    # -- what a space must say -------------------------------------------------------
    @abstractmethod
    def choices(self) -> tuple[Choice, ...]:
        """The ordered decisions that make up an architecture."""

    @abstractmethod
    def build(self, arch: Arch, input_shape: Sequence[int], num_classes: int) -> nn.Module:
        """A freshly initialized ``torch.nn.Module`` for ``arch`` on ``input_shape`` (C, H, W)."""

    def build_backbone(self, arch: Arch, input_shape: Sequence[int]) -> Backbone:
        """``arch``'s network without its classification head: a :class:`Backbone` whose
        ``levels`` declare the feature maps it returns, for a task to attach its own head.

        Its parameters are named as in :meth:`build`'s network (a subset of them), so a
        trained classifier's weights load into it. Spaces that cannot split their network
        keep this default, which says so.
        """
        from nasforge.errors import NasforgeError
        from nasforge.spaces import registry

        able = [n for n in registry.names()
                if getattr(registry.factory(n), "has_backbone", lambda: False)()]
        raise NasforgeError(
            f"space {self.name!r} does not build backbones (only whole classifiers with "
            f"build()); spaces that do: {', '.join(able) or 'none'}")

    def backbone_levels(self, arch: Arch, input_shape: Sequence[int]) -> list[Level]:
        """The levels :meth:`build_backbone` declares, found on the ``meta`` device (no
        weights allocated), so a neck or head can be sized before anything is built."""
        with torch.device("meta"):
            return list(self.build_backbone(arch, input_shape).levels)

    #: choices that shape only the classification head, which :meth:`build_backbone`
    #: drops: a task with its own head searches without them (``with-head``)
    head_only_choices: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def has_backbone(cls) -> bool:
        """Whether :meth:`build_backbone` is implemented (a task can check before asking)."""
        return cls.build_backbone is not SearchSpace.build_backbone

    def config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this space with ``spaces.get(name, **config)``."""
        return {}

    @property
    def label(self) -> str:
        """What a person reads (run directory names, listings): the name, unless a space
        wraps another (``cnn+detection``)."""
        return self.name

    # -- compound scaling (EfficientNet; see nasforge.scaling) --------------------------
    #: whether :meth:`scale` is implemented: ``nasforge scale`` asks this, never the name
    can_scale: ClassVar[bool] = False

    def scale(self, arch: Arch, depth: float, width: float) -> tuple[SearchSpace, Arch]:
        """``arch`` with ``depth`` times the layers per stage and ``width`` times the
        channels, and the space that holds it (a scaled network may need more blocks or
        wider options than this space's, so the space is returned with its options
        widened; its ``config()`` is what a model directory stores). Resolution is not
        the space's business: :mod:`nasforge.scaling` puts an input resize in front.

        Spaces that cannot scale keep this default, which says so in one line."""
        from nasforge.errors import NasforgeError
        from nasforge.spaces import registry

        able = [n for n in registry.names() if getattr(registry.factory(n), "can_scale", False)]
        raise NasforgeError(
            f"space {self.name!r} does not support compound scaling; spaces that do: "
            f"{', '.join(able) or 'none'}")

    # -- hooks for conditional spaces --------------------------------------------------
    def canonicalize(self, values: dict[str, Value]) -> dict[str, Value]:
        """Map values to the canonical representative (e.g. reset inactive choices)."""
        return values

    def is_active(self, name: str, values: Mapping[str, Value]) -> bool:
        """Whether choice ``name`` influences the network given the other values."""
        return True

    def equivalence_key(self, arch: Arch) -> str:
        """A key shared by archs that build the same function (default: the arch itself).

        Unlike :meth:`canonicalize`, which makes equal archs *equal*, this groups archs
        that stay distinct (a benchmark table may key them apart) but compute the same
        network up to initialization, e.g. a cell edge whose output is never used.
        Strategies skip an arch whose key was already evaluated: training it again
        would only re-draw the noise of the same network.
        """
        return arch.text

    def known_good(self) -> list[Arch]:
        """Designs known to work (hand designs, published cells) that strategies try first.

        None by default; a space that contains good hand designs lists them so that a
        search starts from what a practitioner would write (see ``warm_start``).
        """
        return []

    def known_good_for(self, n_examples: int) -> list[Arch]:
        """:meth:`known_good` in the order to try them on a data set of ``n_examples``
        training (and validation) examples; the same order by default."""
        return self.known_good()

    # -- construction ------------------------------------------------------------------
    def _choice_map(self) -> dict[str, Choice]:
        cache = self.__dict__.get("_choice_cache")
        if cache is None:
            cache = {c.name: c for c in self.choices()}
            self.__dict__["_choice_cache"] = cache
        return cache

    def make(self, values: Mapping[str, Value] | Sequence[Value]) -> Arch:
        """Validate and canonicalize ``values`` (by name or in order) into an :class:`Arch`."""
        choices = self.choices()
        if isinstance(values, Mapping):
            unknown = set(values) - {c.name for c in choices}
            if unknown:
                raise ArchParseError(
                    f"{self.name}: unknown choice(s) {sorted(unknown)}; "
                    f"valid choices: {[c.name for c in choices]}"
                )
            missing = [c.name for c in choices if c.name not in values]
            if missing:
                raise ArchParseError(f"{self.name}: missing choice(s) {missing}")
            vals = {c.name: values[c.name] for c in choices}
        else:
            values = list(values)
            if len(values) != len(choices):
                raise ArchParseError(
                    f"{self.name}: expected {len(choices)} values, got {len(values)}"
                )
            vals = {c.name: v for c, v in zip(choices, values, strict=True)}
        for c in choices:
            v = vals[c.name]
            # match by value, bools only to bools; store the option itself (3.0 -> 3)
            match = [o for o in c.options if o == v and isinstance(o, bool) == isinstance(v, bool)]
            if not match:
                raise ArchParseError(
                    f"{self.name}: bad value {v!r} for {c.name!r}; options are {list(c.options)}"
                )
            vals[c.name] = match[0]
        vals = self.canonicalize(vals)
        items = tuple((c.name, vals[c.name]) for c in choices)
        arch = Arch(self.name, items, "")
        object.__setattr__(arch, "text", self.format(arch))
        return arch

    # -- string and JSON forms ------------------------------------------------------------
    def format(self, arch: Arch) -> str:
        """Canonical string. Default: ``name=value`` pairs of the active choices, ``;``-joined."""
        d = arch.as_dict()
        return ";".join(f"{k}={v}" for k, v in arch.items if self.is_active(k, d))

    def parse(self, text: str) -> Arch:
        """Inverse of :meth:`format`; raises :class:`ArchParseError` naming the bad token."""
        text = text.strip()
        cmap = self._choice_map()
        values: dict[str, Value] = {}
        for tok in filter(None, (t.strip() for t in text.split(";"))):
            if "=" not in tok:
                raise ArchParseError(
                    f"{self.name}: bad token {tok!r} in {text!r}: expected name=value"
                )
            k, raw = (s.strip() for s in tok.split("=", 1))
            if k not in cmap:
                raise ArchParseError(
                    f"{self.name}: bad token {tok!r}: unknown choice {k!r}; valid: {list(cmap)}"
                )
            values[k] = _coerce(raw, cmap[k], tok, self.name)
        # inactive choices may be omitted: fill them with the first option
        for c in self.choices():
            values.setdefault(c.name, c.options[0])
        arch = self.make(values)
        return arch

    def to_json(self, arch: Arch) -> str:
        return json.dumps(arch.to_json(), sort_keys=True)

    def from_json(self, doc: str | Mapping[str, Any]) -> Arch:
        """Arch from its JSON form (a string or an already-parsed mapping)."""
        if isinstance(doc, str):
            try:
                doc = json.loads(doc)
            except json.JSONDecodeError as e:
                raise ArchParseError(f"not valid JSON: {e}") from None
        if not isinstance(doc, Mapping):
            raise ArchParseError("architecture JSON must be an object")
        if doc.get("space", self.name) != self.name:
            raise ArchParseError(
                f"architecture is for space {doc.get('space')!r}, not {self.name!r}"
            )
        if "choices" in doc:
            if not isinstance(doc["choices"], Mapping):  # hostile JSON: not a TypeError
                raise ArchParseError("architecture JSON 'choices' must map choice names to values")
            arch = self.make(dict(doc["choices"]))
            if "arch" in doc and doc["arch"] != arch.text:
                raise ArchParseError(
                    f"architecture JSON is inconsistent: 'arch' {doc['arch']!r} != "
                    f"choices {arch.text!r}"
                )
            return arch
        if "arch" in doc:
            return self.parse(str(doc["arch"]))
        raise ArchParseError("architecture JSON needs an 'arch' or a 'choices' field")

    # -- exploration operators -----------------------------------------------------------
    def sample(self, rng: np.random.Generator) -> Arch:
        """Uniformly random choice values (canonicalized)."""
        return self.make([c.options[int(rng.integers(len(c.options)))] for c in self.choices()])

    def mutate(self, arch: Arch, rng: np.random.Generator) -> Arch:
        """Change one active choice to another option (a different arch whenever one exists)."""
        d = arch.as_dict()
        cands = [c for c in self.choices() if len(c.options) > 1 and self.is_active(c.name, d)]
        if not cands:
            return arch
        for _ in range(32):
            c = cands[int(rng.integers(len(cands)))]
            others = [o for o in c.options if o != d[c.name]]
            new = dict(d)
            new[c.name] = others[int(rng.integers(len(others)))]
            child = self.make(new)
            if child != arch:
                return child
        return child

    def crossover(self, a: Arch, b: Arch, rng: np.random.Generator) -> Arch:
        """Uniform crossover: each choice taken from either parent with probability 1/2."""
        da, db = a.as_dict(), b.as_dict()
        return self.make({k: (da[k] if rng.random() < 0.5 else db[k]) for k in da})

    def neighbors(self, arch: Arch) -> list[Arch]:
        """All distinct archs that differ from ``arch`` in exactly one active choice."""
        d = arch.as_dict()
        out: dict[Arch, None] = {}
        for c in self.choices():
            if not self.is_active(c.name, d):
                continue
            for o in c.options:
                if o == d[c.name]:
                    continue
                n = self.make({**d, c.name: o})
                if n != arch:
                    out[n] = None
        return list(out)

    def encode(self, arch: Arch) -> np.ndarray:
        """Fixed-length one-hot vector (inactive choices all-zero), for predictors."""
        d = arch.as_dict()
        parts = []
        for c in self.choices():
            v = np.zeros(len(c.options), dtype=np.float32)
            if self.is_active(c.name, d):
                v[c.options.index(d[c.name])] = 1.0
            parts.append(v)
        return np.concatenate(parts)

    @property
    def encoding_size(self) -> int:
        return sum(len(c.options) for c in self.choices())

    @property
    def size(self) -> int:
        """Number of distinct (canonical) architectures."""
        return math.prod(len(c.options) for c in self.choices())

    def enumerate(self) -> Iterator[Arch]:
        """Every distinct architecture once, in a fixed order."""
        seen: set[Arch] = set()
        for vals in itertools.product(*(c.options for c in self.choices())):
            a = self.make(vals)
            if a not in seen:
                seen.add(a)
                yield a

    def __repr__(self) -> str:
        cfg = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({cfg})"


def _coerce(raw: str, choice: Choice, tok: str, space: str) -> Value:
    """Turn the string ``raw`` into the option of ``choice`` it spells."""
    for o in choice.options:
        if str(o) == raw or (isinstance(o, bool) and raw.lower() == str(o).lower()):
            return o
    for o in choice.options:
        if isinstance(o, int | float) and not isinstance(o, bool):
            try:
                if float(raw) == o:
                    return o
            except ValueError:
                pass
    raise ArchParseError(
        f"{space}: bad token {tok!r}: {raw!r} is not an option of {choice.name!r}; "
        f"options are {list(choice.options)}"
    )
