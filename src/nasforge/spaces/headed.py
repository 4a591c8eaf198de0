"""A backbone space plus the architecture choices of a task's own head.

Detection's neck and head and segmentation's decoder are owned by the task
(:meth:`~nasforge.tasks.Task.build_network`), yet their sizes are architecture, not
training options: the issue's detectors search "a neck (levels, width, depth, block
type), a head (depth, width, decoupled or not) and the input resolution". A task says
which decisions it adds (:meth:`~nasforge.tasks.Task.arch_choices`); this space puts them
after the backbone space's own, so every strategy (sampling, mutation, crossover,
neighbours, predictors' encodings) searches them with no change, and the run store and
model directories rebuild it from :meth:`config` like any other space.

The backbone part of an arch is an arch of the wrapped space (:meth:`backbone_arch`);
its text is the backbone's text, `` + ``, then the head's ``name=value`` pairs, e.g.
``stem16|maxpool|... + neck=pan;neck_width=48;head_depth=1``. A text without the
`` + `` part is the backbone alone with the task's default head (the first option of
each choice, which is also what the known-good designs use), so a backbone written for
the plain space parses here too.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from torch import nn

from nasforge.errors import ArchParseError, NasforgeError
from nasforge.spaces import register
from nasforge.spaces.base import Arch, Backbone, Choice, SearchSpace, Value

SEP = " + "


@register("with-head", help="a backbone space with a task's neck/head choices (made by the "
          "run for tasks that declare them: detection, segmentation)")
class WithHead(SearchSpace):
    """``backbone`` (a registered space that builds backbones, with ``backbone_options``)
    plus ``choices`` (choice name -> options, first = the task's default) of ``task``."""

    def __init__(self, backbone: str, task: str,
                 choices: Sequence[Sequence[Any]] | Mapping[str, Sequence[Value]],
                 backbone_options: Mapping[str, Any] | None = None) -> None:
        from nasforge import spaces, tasks

        if not isinstance(backbone, str) or backbone == "with-head":
            raise NasforgeError(f"with-head: backbone must be the name of a space, got "
                                f"{backbone!r}")
        self.backbone = spaces.get(backbone, **dict(backbone_options or {}))
        if not self.backbone.has_backbone():
            self.backbone.build_backbone(None, (1, 8, 8))  # type: ignore[arg-type] # says which can
        self.task = str(task)
        self._task_cls = tasks.registry.factory(self.task)
        # pairs, in order: a stored config's JSON objects have their keys sorted
        pairs = list(choices.items()) if isinstance(choices, Mapping) else choices
        if isinstance(pairs, str | bytes) or not isinstance(pairs, Sequence) or not pairs or \
                not all(isinstance(p, Sequence) and not isinstance(p, str) and len(p) == 2
                        for p in pairs):
            raise NasforgeError("with-head: choices must be [name, options] pairs of the "
                                "head's choices")
        own = {c.name for c in self.backbone.choices()}
        head = []
        for name, opts in pairs:
            if name in own:
                raise NasforgeError(f"with-head: head choice {name!r} clashes with a choice "
                                    f"of space {backbone!r}")
            if isinstance(opts, str | bytes) or not isinstance(opts, Sequence):
                raise NasforgeError(f"with-head: the options of {name!r} must be a list")
            try:
                head.append(Choice(str(name), tuple(opts)))
            except (ValueError, TypeError) as e:
                raise NasforgeError(f"with-head: {e}") from None
        self._head = tuple(head)
        self._head_names = [c.name for c in head]
        self._choices = tuple(self.backbone.choices()) + self._head
        # the wrapped space's character, so plans and defaults treat this one alike
        self.input_kind = self.backbone.input_kind  # type: ignore[misc]
        self.train_defaults = dict(self.backbone.train_defaults)  # type: ignore[misc]
        self.final_epochs_factor = self.backbone.final_epochs_factor  # type: ignore[misc]

    @property
    def label(self) -> str:
        """What a person reads (run directory names): ``cnn+detection``."""
        return f"{self.backbone.name}+{self.task}"

    def config(self) -> dict[str, Any]:
        return {"backbone": self.backbone.name, "backbone_options": self.backbone.config(),
                "task": self.task,
                "choices": [[c.name, list(c.options)] for c in self._head]}

    def choices(self) -> tuple[Choice, ...]:
        return self._choices

    def head_choices(self) -> tuple[Choice, ...]:
        return self._head

    # -- the two parts ---------------------------------------------------------------------
    def _split(self, values: Mapping[str, Value]) -> tuple[dict[str, Value], dict[str, Value]]:
        head = set(self._head_names)
        return ({k: v for k, v in values.items() if k not in head},
                {k: v for k, v in values.items() if k in head})

    def backbone_arch(self, arch: Arch) -> Arch:
        """The backbone part of ``arch``, an arch of the wrapped space."""
        if not isinstance(arch, Arch) or arch.space != self.name:
            raise NasforgeError(f"with-head: not an architecture of this space: {arch!r}")
        return self.backbone.make(self._split(arch.as_dict())[0])

    def head_values(self, arch: Arch) -> dict[str, Value]:
        return self._split(arch.as_dict())[1]

    def is_active(self, name: str, values: Mapping[str, Value]) -> bool:
        if name in self._head_names:
            return self._task_cls.arch_active(name, values)
        if name in self.backbone.head_only_choices:  # the task's head replaces that head
            return False
        return self.backbone.is_active(name, values)

    def canonicalize(self, values: dict[str, Value]) -> dict[str, Value]:
        bb, head = self._split(values)
        bb = self.backbone.canonicalize(bb)
        for c in self.backbone.choices():
            if c.name in self.backbone.head_only_choices:
                bb[c.name] = c.options[0]
        first = {c.name: c.options[0] for c in self._head}
        head = {k: (v if self._task_cls.arch_active(k, values) else first[k])
                for k, v in head.items()}
        return {**bb, **head}

    def equivalence_key(self, arch: Arch) -> str:
        return f"{self.backbone.equivalence_key(self.backbone_arch(arch))}{SEP}" \
               f"{self._head_text(arch)}"

    def known_good(self) -> list[Arch]:
        """The backbone's known-good designs with the task's default head. Their order is
        the backbone's plain one: ``known_good_for`` is not delegated, since the cnn's
        small-data order (the classic design first) was measured for classifiers, while
        the detection benchmarks measured the first design with this head."""
        first = {c.name: c.options[0] for c in self._head}
        return [self.make({**a.as_dict(), **first}) for a in self.backbone.known_good()]

    # -- text ------------------------------------------------------------------------------
    def _head_text(self, arch: Arch) -> str:
        d = arch.as_dict()
        return ";".join(f"{c.name}={d[c.name]}" for c in self._head
                        if self._task_cls.arch_active(c.name, d))

    def format(self, arch: Arch) -> str:
        bb = self.backbone.make(self._split(arch.as_dict())[0])
        return f"{bb.text}{SEP}{self._head_text(arch)}"

    def parse(self, text: str) -> Arch:
        text = str(text).strip()
        bb_text, _, head_text = text.rpartition(SEP) if SEP in text else (text, "", "")
        bb = self.backbone.parse(bb_text)
        head = {c.name: c.options[0] for c in self._head}
        cmap = {c.name: c for c in self._head}
        for tok in filter(None, (t.strip() for t in head_text.split(";"))):
            k, eq, raw = (s.strip() for s in tok.partition("="))
            if not eq or k not in cmap:
                raise ArchParseError(f"{self.label}: bad head token {tok!r} in {text!r}: "
                                     f"expected name=value with name one of {list(cmap)}")
            match = [o for o in cmap[k].options if str(o) == raw]
            if not match:
                raise ArchParseError(f"{self.label}: bad value {raw!r} for {k!r}; options "
                                     f"are {list(cmap[k].options)}")
            head[k] = match[0]
        return self.make({**bb.as_dict(), **head})

    # -- exploration: the backbone's own operators for its part ------------------------------
    def sample(self, rng: np.random.Generator) -> Arch:
        bb = self.backbone.sample(rng)
        head = {c.name: c.options[int(rng.integers(len(c.options)))] for c in self._head}
        return self.make({**bb.as_dict(), **head})

    def mutate(self, arch: Arch, rng: np.random.Generator) -> Arch:
        """Mutate the backbone or one head choice, in proportion to their active choices
        (a different arch whenever one exists: a backbone mutation of a head-only choice
        is undone by :meth:`canonicalize`, so it is drawn again)."""
        d = arch.as_dict()
        head = [c for c in self._head if len(c.options) > 1
                and self._task_cls.arch_active(c.name, d)]
        n_bb = sum(1 for c in self.backbone.choices()
                   if len(c.options) > 1 and self.is_active(c.name, d))
        child = arch
        for _ in range(32):
            if head and rng.random() < len(head) / (len(head) + n_bb):
                c = head[int(rng.integers(len(head)))]
                others = [o for o in c.options if o != d[c.name]]
                child = self.make({**d, c.name: others[int(rng.integers(len(others)))]})
            elif n_bb:
                bb = self.backbone.mutate(self.backbone_arch(arch), rng)
                child = self.make({**d, **bb.as_dict()})
            if child != arch:
                break
        return child

    def neighbors(self, arch: Arch) -> list[Arch]:
        d = arch.as_dict()
        out = [self.make({**d, **n.as_dict()})
               for n in self.backbone.neighbors(self.backbone_arch(arch))]
        for c in self._head:
            if self._task_cls.arch_active(c.name, d):
                out += [self.make({**d, c.name: o}) for o in c.options if o != d[c.name]]
        return list(dict.fromkeys(a for a in out if a != arch))

    def encode(self, arch: Arch) -> np.ndarray:
        d = arch.as_dict()
        parts = [self.backbone.encode(self.backbone_arch(arch))]
        for c in self._head:
            v = np.zeros(len(c.options), dtype=np.float32)
            if self._task_cls.arch_active(c.name, d):
                v[c.options.index(d[c.name])] = 1.0
            parts.append(v)
        return np.concatenate(parts)

    @property
    def encoding_size(self) -> int:
        return self.backbone.encoding_size + sum(len(c.options) for c in self._head)

    @property
    def size(self) -> int:
        return self.backbone.size * int(np.prod([len(c.options) for c in self._head]))

    def enumerate(self) -> Iterator[Arch]:
        import itertools

        seen: set[Arch] = set()
        for bb in self.backbone.enumerate():
            for vals in itertools.product(*(c.options for c in self._head)):
                a = self.make({**bb.as_dict(), **dict(zip(self._head_names, vals, strict=True))})
                if a not in seen:
                    seen.add(a)
                    yield a

    # -- building: the backbone's; the task adds its head --------------------------------------
    def build(self, arch: Arch, input_shape: Sequence[int], num_classes: int) -> nn.Module:
        return self.backbone.build(self.backbone_arch(arch), input_shape, num_classes)

    def build_backbone(self, arch: Arch, input_shape: Sequence[int]) -> Backbone:
        return self.backbone.build_backbone(self.backbone_arch(arch), input_shape)

    def __repr__(self) -> str:
        return f"WithHead({self.label}, {len(self._head)} head choices)"


def with_task_choices(space: SearchSpace, task: Any) -> SearchSpace:
    """``space`` with ``task``'s :meth:`~nasforge.tasks.Task.arch_choices` added, or
    ``space`` itself when the task adds none or the space builds no backbones."""
    from nasforge import spaces

    choices = task.arch_choices()
    # an unregistered space could not be rebuilt from the stored config: left as it is
    if not choices or isinstance(space, WithHead) or not space.has_backbone() \
            or space.name not in spaces.names():
        return space
    return WithHead(space.name, task.name, [[c.name, list(c.options)] for c in choices],
                    backbone_options=space.config())

