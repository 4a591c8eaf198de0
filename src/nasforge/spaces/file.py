"""Search spaces written as a file: ``--space my_space.yaml`` / :func:`from_file`.

A file (YAML, JSON or TOML) declares ``name``, ``input`` (``image`` or ``tabular``),
``choices`` (name -> list of values) and ``layers`` built from the ops registry
(:mod:`nasforge.spaces.file_ops`); an op argument is a literal or the name of a choice.
The space registered as ``file`` takes the parsed document as its one option, so a run
directory and a model directory store the document itself (``config()``): a moved or
edited file changes nothing for a stored run or a saved model.

Semantics (see the README's "Search spaces as files"):

* ``{repeat: N | choice, block: [...]}`` repeats a block. A choice used inside the block
  is **shared** by all repeats unless the repeat lists it in ``per_repeat``; then every
  repeat ``i`` has its own decision ``name[i]`` (``name[i][j]`` in nested repeats), and
  those of repeats that are not built are inactive.
* ``active_if: {choice: value | [values]}`` on a choice or a layer: the choice (layer)
  counts only when every named choice is active and has one of the values. A choice's
  ``active_if`` may only name choices declared before it.
* A choice is *active* when its ``active_if`` holds and a layer that is built, a repeat
  count or a condition that is evaluated uses it; inactive choices are canonicalized to
  their first value, so equal networks are equal architectures.
* ``pool`` is skipped once the feature map is smaller than its window (so 8x8 inputs
  with four 2x2 pools end at 1x1 instead of vanishing).
* The head is the other spaces' one: global average pooling (image maps) and a linear
  layer to the task's number of outputs.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn as nn

from nasforge.errors import NasforgeError
from nasforge.spaces import register
from nasforge.spaces.base import (
    Arch,
    Backbone,
    Choice,
    Level,
    SearchSpace,
    Value,
    last_level,
    no_head,
)
from nasforge.spaces.file_ops import OPS, Op, Shape, build_sequence

#: file suffixes that ``--space`` / ``search(space=...)`` read as a space file
SUFFIXES: tuple[str, ...] = (".yaml", ".yml", ".json", ".toml")
TOP_KEYS: tuple[str, ...] = ("name", "input", "choices", "layers", "description")
#: input kinds a file may declare, and the shape kind its first layer gets
INPUTS: dict[str, str] = {"image": "image", "tabular": "vector"}
MAX_FILE_BYTES = 1_000_000
MAX_CHOICES = 256
MAX_OPTIONS = 1024
MAX_REPEAT = 64
MAX_DEPTH = 8
MAX_EXPANDED = 4096  # layers of the largest network, all repeats at their maximum
MAX_INSTANCES = 4096  # decisions of an architecture, per-repeat copies included
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_SPACE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_SCALAR = (str, int, float, bool)


class SpaceFileError(NasforgeError):
    """A search-space file that does not describe a space: names the file and the key."""


# ------------------------------------------------------------------------------ the model
@dataclass(frozen=True)
class Ref:
    """An op argument or repeat count that names a choice."""

    name: str


#: ``((choice, allowed values), ...)``: all must hold
Cond = tuple[tuple[str, tuple[Value, ...]], ...]


@dataclass(frozen=True)
class LayerNode:
    key: str
    op: Op
    args: Mapping[str, Any]  # literal or Ref, defaults filled in
    cond: Cond
    block: tuple[Any, ...] = ()


@dataclass(frozen=True)
class RepeatNode:
    key: str
    count: int | Ref
    block: tuple[Any, ...]
    per_repeat: frozenset[str]
    cond: Cond


@dataclass(frozen=True)
class Instance:
    """One decision of an architecture: a choice, or one repeat's copy of it."""

    name: str
    base: str
    options: tuple[Value, ...]
    cond: tuple[tuple[str, tuple[Value, ...]], ...]  # instance names


def _suffix(binding: Mapping[str, str], name: str) -> str:
    return binding.get(name, "")


def _close(word: str, names: Sequence[str]) -> str:
    m = difflib.get_close_matches(word, list(names), n=1)
    return f" (did you mean {m[0]!r}?)" if m else ""


# ------------------------------------------------------------------------------ compiling
class _Compiler:
    """Checks a document and turns it into choices and layer nodes; every error names
    the source, the key (``layers[0].block[1].op``) and what is allowed."""

    def __init__(self, doc: Any, source: str) -> None:
        self.source = source
        self.expanded = 0
        if not isinstance(doc, Mapping):
            self.fail("", f"the document must be a mapping with keys {', '.join(TOP_KEYS[:4])}"
                          f", got {type(doc).__name__}")
        for k in doc:
            if not isinstance(k, str) or k not in TOP_KEYS:
                self.fail(str(k), f"unknown key{_close(str(k), TOP_KEYS)}; allowed: "
                                  f"{', '.join(TOP_KEYS)}")
        for k in ("name", "input", "choices", "layers"):
            if k not in doc:
                self.fail(k, f"missing (a space file needs {', '.join(TOP_KEYS[:4])})")
        name = doc["name"]
        if not isinstance(name, str) or not _SPACE_NAME.match(name):
            self.fail("name", f"got {name!r}; allowed: 1-64 letters, digits, '-', '_', '.'")
        self.title = name
        if "description" in doc and not isinstance(doc["description"], str):
            self.fail("description", "must be a string")
        inp = doc["input"]
        if not isinstance(inp, str) or inp not in INPUTS:
            self.fail("input", f"got {inp!r}; allowed: {', '.join(INPUTS)}")
        self.input = inp
        self.choices = self._choices(doc["choices"])
        self.nodes, _ = self._nodes(doc["layers"], "layers", INPUTS[inp], 0)
        self.instances = self._expand()

    def fail(self, key: str, what: str) -> Any:
        where = f"{self.source}: {key}: " if key else f"{self.source}: "
        raise SpaceFileError(where + what)

    # -- choices -------------------------------------------------------------------------
    def _choices(self, spec: Any) -> dict[str, tuple[tuple[Value, ...], Cond]]:
        if isinstance(spec, list):  # the ordered form a run stores: [{name, values, ...}]
            pairs = []
            for i, e in enumerate(spec):
                if not isinstance(e, Mapping) or "name" not in e:
                    self.fail(f"choices[{i}]", "in a list of choices, each is a mapping "
                                               "{name, values[, active_if]}")
                pairs.append((e["name"], {k: v for k, v in e.items() if k != "name"}))
            if len({str(n) for n, _ in pairs}) != len(pairs):
                self.fail("choices", "a choice name appears twice")
        elif isinstance(spec, Mapping):
            pairs = list(spec.items())
        else:
            pairs = []
        if not pairs:
            self.fail("choices", "must be a non-empty mapping of choice name -> list of values")
        if len(pairs) > MAX_CHOICES:
            self.fail("choices", f"more than {MAX_CHOICES} choices")
        out: dict[str, tuple[tuple[Value, ...], Cond]] = {}
        raw_conds: dict[str, Any] = {}
        self.ordered: list[dict[str, Any]] = []
        for name, body in pairs:
            key = f"choices.{name}"
            if not isinstance(name, str) or not _NAME.match(name):
                self.fail(key, "a choice name must be a letter or '_' then letters, digits "
                               "or '_' (at most 64)")
            self.ordered.append({"name": name, **(dict(body) if isinstance(body, Mapping)
                                                  else {"values": body})})
            values = body
            if isinstance(body, Mapping):
                for k in body:
                    if k not in ("values", "active_if"):
                        close = _close(str(k), ["values", "active_if"])
                        self.fail(f"{key}.{k}", f"unknown key{close}; allowed: values, "
                                                "active_if")
                if "values" not in body:
                    self.fail(f"{key}.values", "missing (the list of values)")
                values = body["values"]
                if "active_if" in body:
                    raw_conds[name] = body["active_if"]
                key += ".values"
            out[name] = (self._values(values, key), ())
        self.declared = list(out)
        for name, raw in raw_conds.items():
            before = self.declared[:self.declared.index(name)]
            cond = self._cond(raw, f"choices.{name}.active_if", out, before)
            out[name] = (out[name][0], cond)
        return out

    def _values(self, values: Any, key: str) -> tuple[Value, ...]:
        if not isinstance(values, list):
            self.fail(key, f"must be a list of values, got {type(values).__name__}")
        if not values:
            self.fail(key, "empty: a choice needs at least one value")
        if len(values) > MAX_OPTIONS:
            self.fail(key, f"more than {MAX_OPTIONS} values")
        for v in values:
            if not isinstance(v, _SCALAR):
                self.fail(key, f"value {v!r} is a {type(v).__name__}; allowed: strings, "
                               "numbers, true/false")
            if isinstance(v, float) and not math.isfinite(v):
                self.fail(key, f"value {v!r} is not finite")
            if isinstance(v, str) and (not v or v != v.strip() or any(c in v for c in ";=\n")):
                self.fail(key, f"value {v!r}: strings must be non-empty, without ';', '=', "
                               "newlines or surrounding spaces")
        texts = [str(v) for v in values]
        if len(set(texts)) != len(texts) or len(set(values)) != len(values):
            dup = next(v for i, v in enumerate(values)
                       if str(v) in texts[:i] or v in values[:i])
            self.fail(key, f"duplicate value {dup!r}")
        return tuple(values)

    def _cond(self, raw: Any, key: str, choices: Mapping[str, Any],
              allowed: Sequence[str]) -> Cond:
        if not isinstance(raw, Mapping) or not raw:
            self.fail(key, "must be a mapping of choice -> value or list of values")
        out = []
        for ref, want in raw.items():
            k = f"{key}.{ref}"
            if not isinstance(ref, str) or ref not in choices:
                self.fail(k, f"unknown choice {ref!r}{_close(str(ref), list(choices))}; "
                             f"choices: {', '.join(choices)}")
            if ref not in allowed:
                self.fail(k, f"choice {ref!r} is declared after (or is) this one; an "
                             "active_if may only name choices declared before it")
            wants = want if isinstance(want, list) else [want]
            opts = choices[ref][0]
            if not wants:
                self.fail(k, "empty list of values")
            for w in wants:
                match = [o for o in opts if o == w and isinstance(o, bool) == isinstance(w, bool)]
                if not isinstance(w, _SCALAR) or not match:
                    self.fail(k, f"{w!r} is not a value of {ref!r}; its values: {list(opts)}")
            out.append((ref, tuple(wants)))
        return tuple(out)

    # -- layers --------------------------------------------------------------------------
    def _nodes(self, items: Any, key: str, kind: str, depth: int) -> tuple[tuple[Any, ...], str]:
        if not isinstance(items, list) or not items:
            self.fail(key, "must be a non-empty list of layers")
        if depth >= MAX_DEPTH:
            self.fail(key, f"nested more than {MAX_DEPTH} levels deep")
        out = []
        for i, item in enumerate(items):
            node, kind = self._node(item, f"{key}[{i}]", kind, depth)
            out.append(node)
        return tuple(out), kind

    def _node(self, item: Any, key: str, kind: str, depth: int) -> tuple[Any, str]:
        if not isinstance(item, Mapping):
            self.fail(key, f"a layer must be a mapping like {{op: conv, out: 32}} or "
                           f"{{repeat: N, block: [...]}}, got {item!r:.60}")
        cond = self._cond(item["active_if"], f"{key}.active_if", self.choices,
                          self.declared) if "active_if" in item else ()
        if "repeat" in item:
            return self._repeat(item, key, kind, depth, cond)
        if "op" not in item:
            self.fail(f"{key}.op", f"missing: a layer needs 'op' (one of {', '.join(OPS)}) "
                                   "or 'repeat'")
        name = item["op"]
        if not isinstance(name, str) or name not in OPS:
            self.fail(f"{key}.op", f"unknown op {name!r}{_close(str(name), list(OPS))}; ops: "
                                   f"{', '.join(OPS)}")
        op = OPS[name]
        allowed = [*op.args, "op", "active_if", *(["block"] if op.nested else [])]
        for k in item:
            if k not in allowed:
                self.fail(f"{key}.{k}", f"unknown argument of op {name!r}"
                                        f"{_close(str(k), allowed)}; {name} takes "
                                        f"{', '.join(allowed)}")
        if kind not in op.takes:
            self.fail(f"{key}.op", f"op {name!r} takes {' or '.join(sorted(op.takes))} inputs, "
                                   f"but here the input is a {kind} (after a linear layer, "
                                   "or a tabular space)")
        args: dict[str, Any] = {}
        for a, spec in op.args.items():
            k = f"{key}.{a}"
            if a not in item:
                if spec.required:
                    self.fail(k, f"missing (op {name!r} needs {a}: {spec.allowed()})")
                args[a] = spec.default
                continue
            v = item[a]
            if isinstance(v, str) and v in self.choices:
                for o in self.choices[v][0]:
                    if (why := spec.problem(o)) is not None:
                        self.fail(k, f"choice {v!r} has value {o!r}, but {a} takes "
                                     f"{spec.allowed()}")
                args[a] = Ref(v)
                continue
            if (why := spec.problem(v)) is not None:
                hint = _close(v, list(self.choices)) if isinstance(v, str) else ""
                hint = hint.replace("did you mean", "did you mean choice")
                self.fail(k, f"{why}, or the name of a choice{hint}")
            args[a] = v
        block: tuple[Any, ...] = ()
        out_kind = op.out_kind(kind)
        if op.nested:
            if "block" not in item:
                self.fail(f"{key}.block", f"missing (op {name!r} wraps a list of layers)")
            block, inner = self._nodes(item["block"], f"{key}.block", kind, depth + 1)
            if inner != kind:
                self.fail(f"{key}.block", f"a {name} block must keep its input a {kind}")
            out_kind = inner
        self.expanded += 1
        if cond and out_kind != kind:
            self.fail(f"{key}.active_if", "a conditional layer must not change the input "
                                          f"kind ({kind} -> {out_kind})")
        return LayerNode(key, op, args, cond, block), out_kind

    def _repeat(self, item: Mapping[str, Any], key: str, kind: str, depth: int,
                cond: Cond) -> tuple[Any, str]:
        allowed = ["repeat", "block", "per_repeat", "active_if"]
        for k in item:
            if k not in allowed:
                self.fail(f"{key}.{k}", f"unknown key of a repeat{_close(str(k), allowed)}; "
                                        f"allowed: {', '.join(allowed)}")
        n = item["repeat"]
        count: int | Ref
        if isinstance(n, str) and n in self.choices:
            bad = [o for o in self.choices[n][0] if isinstance(o, bool) or not isinstance(o, int)
                   or not 0 <= o <= MAX_REPEAT]
            if bad:
                self.fail(f"{key}.repeat", f"choice {n!r} has value {bad[0]!r}; a repeat "
                                           f"count takes integers from 0 to {MAX_REPEAT}")
            count = Ref(n)
        elif isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= MAX_REPEAT:
            count = n
        else:
            hint = _close(n, list(self.choices)).replace("did you mean", "did you mean choice") \
                if isinstance(n, str) else ""
            self.fail(f"{key}.repeat", f"got {n!r}; allowed: an integer from 0 to {MAX_REPEAT} "
                                       f"or the name of an integer choice{hint}")
        if "block" not in item:
            self.fail(f"{key}.block", "missing (the list of layers to repeat)")
        per = item.get("per_repeat", [])
        if not isinstance(per, list) or not all(isinstance(p, str) for p in per):
            self.fail(f"{key}.per_repeat", "must be a list of choice names")
        for p in per:
            if p not in self.choices:
                self.fail(f"{key}.per_repeat", f"unknown choice {p!r}"
                                               f"{_close(p, list(self.choices))}")
        before = self.expanded
        block, out = self._nodes(item["block"], f"{key}.block", kind, depth + 1)
        self.expanded = before + (self.expanded - before) * max(
            [count] if isinstance(count, int) else [int(v) for v in self.choices[count.name][0]])
        if self.expanded > MAX_EXPANDED:
            self.fail(f"{key}.repeat", f"the largest network would have more than "
                                       f"{MAX_EXPANDED} layers")
        if out != kind:
            self.fail(f"{key}.block", f"a repeated block must keep its input a {kind}")
        used = self._refs(block)
        for p in per:
            if p not in used:
                self.fail(f"{key}.per_repeat", f"{p!r} is not used in the repeated block")
        return RepeatNode(key, count, block, frozenset(per), cond), kind

    def _refs(self, nodes: Sequence[Any]) -> set[str]:
        out: set[str] = set()
        for n in nodes:
            out |= {c for c, _ in n.cond}
            if isinstance(n, RepeatNode):
                if isinstance(n.count, Ref):
                    out.add(n.count.name)
            else:
                out |= {v.name for v in n.args.values() if isinstance(v, Ref)}
            out |= self._refs(n.block)
        return out

    # -- decisions -----------------------------------------------------------------------
    def _expand(self) -> tuple[Instance, ...]:
        """The decisions: every choice once, or once per repeat where ``per_repeat`` says
        so (in declaration order, then by repeat index)."""
        uses: dict[str, dict[str, str]] = {c: {} for c in self.choices}  # base -> name->suffix

        def use(name: str, binding: Mapping[str, str]) -> None:
            s = _suffix(binding, name)
            uses[name][name + s] = s
            if sum(map(len, uses.values())) > MAX_INSTANCES:
                self.fail("layers", f"more than {MAX_INSTANCES} decisions (per-repeat copies "
                                    "included)")

        def walk(nodes: Sequence[Any], binding: dict[str, str]) -> None:
            for n in nodes:
                for c, _ in n.cond:
                    use(c, binding)
                if isinstance(n, RepeatNode):
                    if isinstance(n.count, Ref):
                        use(n.count.name, binding)
                        top = max(int(v) for v in self.choices[n.count.name][0])
                    else:
                        top = n.count
                    for i in range(top):
                        walk(n.block, {**binding, **{p: _suffix(binding, p) + f"[{i}]"
                                                     for p in n.per_repeat}})
                else:
                    for v in n.args.values():
                        if isinstance(v, Ref):
                            use(v.name, binding)
                    walk(n.block, binding)

        walk(self.nodes, {})
        conds: dict[str, tuple[tuple[str, tuple[Value, ...]], ...]] = {}
        for base in reversed(self.declared):  # conditions name earlier choices only
            _, cond = self.choices[base]
            for inst, s in list(uses[base].items()):
                resolved = []
                for ref, want in cond:
                    parts = re.findall(r"\[\d+\]", s)
                    cands = [ref + "".join(parts[:k]) for k in range(len(parts), -1, -1)]
                    hit = next((c for c in cands if c in uses[ref]), ref)
                    uses[ref].setdefault(hit, hit[len(ref):])
                    resolved.append((hit, want))
                conds[inst] = tuple(resolved)
        for base in self.declared:
            if not uses[base]:
                self.fail(f"choices.{base}", "declared but not used by any layer, repeat or "
                                             "active_if; remove it or use it")

        def order(s: str) -> tuple[int, ...]:
            return (len(re.findall(r"\[", s)), *map(int, re.findall(r"\d+", s)))

        out = []
        for base in self.declared:
            for inst, _s in sorted(uses[base].items(), key=lambda kv: order(kv[1])):
                out.append(Instance(inst, base, self.choices[base][0], conds[inst]))
        return tuple(out)


# ------------------------------------------------------------------------------ reading
def read_document(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed document of a space file (YAML, JSON or TOML by suffix); a missing,
    unreadable or malformed file is a :class:`SpaceFileError` naming it."""
    p = Path(path).expanduser()
    suffix = p.suffix.lower()
    if suffix not in SUFFIXES:
        raise SpaceFileError(f"{p}: a space file ends in {', '.join(SUFFIXES)}")
    if not p.is_file():
        raise SpaceFileError(f"{p}: no such file (a search space file: give its path, or a "
                             "registered space name; `nasforge spaces` lists them)")
    if p.stat().st_size > MAX_FILE_BYTES:
        raise SpaceFileError(f"{p}: larger than {MAX_FILE_BYTES:,} bytes; not a space file")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise SpaceFileError(f"{p}: cannot read it: {e}") from None
    try:
        if suffix == ".json":
            return json.loads(text)
        if suffix == ".toml":
            import tomllib

            return tomllib.loads(text)
        return _yaml_load(text)
    except json.JSONDecodeError as e:
        raise SpaceFileError(f"{p}: invalid JSON at line {e.lineno}, column {e.colno}: "
                             f"{e.msg}") from None
    except Exception as e:  # noqa: BLE001 - yaml/tomllib syntax errors; one line each
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = getattr(e, "problem", None) or str(e)
        kind = "TOML" if suffix == ".toml" else "YAML"
        raise SpaceFileError(f"{p}: invalid {kind}{where}: {' '.join(str(what).split())}") \
            from None


def _yaml_load(text: str) -> Any:
    """``yaml.safe_load`` that refuses a key given twice (PyYAML keeps the last one
    silently: a second ``width:`` would quietly replace the first)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def mapping(loader: Any, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for k, _v in node.value:
            key = loader.construct_object(k, deep=deep)
            if isinstance(key, list | dict):
                continue  # unhashable: the compiler names it
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice", k.start_mark)
            seen.add(key)
        return loader.construct_mapping(node, deep=deep)

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    return yaml.load(text, Loader=Loader)  # noqa: S506 - a SafeLoader subclass


def is_space_file(space: Any) -> bool:
    """Whether ``space`` (a ``--space`` value) names a space file rather than a space."""
    return isinstance(space, os.PathLike) or (
        isinstance(space, str) and space.lower().endswith(SUFFIXES))


def from_file(path: str | os.PathLike[str]) -> FileSpace:
    """The search space a YAML/JSON/TOML file declares (see the module docstring)."""
    return FileSpace(read_document(path), source=str(Path(path).expanduser()))


def _plain(doc: Any) -> Any:
    """The document as JSON values (what a run or model directory stores)."""
    try:
        return json.loads(json.dumps(doc, allow_nan=False))
    except (TypeError, ValueError):
        return None  # not JSON: the compiler names the bad key


# ------------------------------------------------------------------------------ the space
@register("file")
class FileSpace(SearchSpace):
    """A space written as a YAML/JSON/TOML file (--space my_space.yaml)."""

    name = "file"
    #: declared by each document (``input``); the class itself takes no data
    input_kind: ClassVar[str] = "file"  # type: ignore[misc]

    def __init__(self, document: Mapping[str, Any], source: str | None = None) -> None:
        plain = _plain(document)
        src = source or "space document"
        c = _Compiler(document if plain is None else plain, src)
        if plain is None:
            raise SpaceFileError(f"{src}: the document holds values that are not JSON "
                                 "(strings, numbers, true/false, lists, mappings)")
        # what config() stores: choices as an ordered list, since a stored JSON document
        # may come back with its keys sorted and the order of the decisions matters
        self.document: dict[str, Any] = {**plain, "choices": c.ordered}
        self.source = src
        self.title = c.title
        self.input_kind = c.input  # type: ignore[misc]
        if self.input_kind == "tabular":  # trains like the mlp space (measured on tables)
            from nasforge.spaces.mlp import MLPSpace

            self.train_defaults = dict(MLPSpace.train_defaults)  # type: ignore[misc]
            self.final_epochs_factor = MLPSpace.final_epochs_factor  # type: ignore[misc]
        self._nodes = c.nodes
        self._inst = c.instances
        self._first = {i.name: i.options[0] for i in self._inst}
        self._choices = tuple(Choice(i.name, i.options) for i in self._inst)
        self._cache: dict[tuple[Any, ...], tuple[frozenset[str], list[Any]]] = {}

    def config(self) -> dict[str, Any]:
        return {"document": self.document}

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled (for worker processes) as its document, rebuilt on the other side."""
        return (type(self), (self.document, self.source))

    def choices(self) -> tuple[Choice, ...]:
        return self._choices

    def __repr__(self) -> str:
        return f"FileSpace({self.title!r}, {len(self._choices)} choices)"

    # -- conditionality ------------------------------------------------------------------
    def _evaluate(self, values: Mapping[str, Value]) -> tuple[frozenset[str], list[Any]]:
        """(active decisions, build steps) of ``values``; cached, as every operator asks."""
        key = tuple((type(values.get(i.name)), values.get(i.name)) for i in self._inst)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        declared: dict[str, bool] = {}
        for i in self._inst:  # conditions name earlier decisions only
            declared[i.name] = all(declared.get(r, False) and values.get(r) in want
                                   for r, want in i.cond)

        def eff(name: str) -> Any:
            return values.get(name) if declared.get(name) else self._first[name]

        used: set[str] = set()

        def holds(cond: Cond, binding: Mapping[str, str]) -> bool:
            names = [(c + _suffix(binding, c), want) for c, want in cond]
            used.update(n for n, _ in names)
            return all(declared.get(n, False) and values.get(n) in want for n, want in names)

        def walk(nodes: Sequence[Any], binding: dict[str, str]) -> list[Any]:
            steps: list[Any] = []
            for n in nodes:
                if n.cond and not holds(n.cond, binding):
                    continue
                if isinstance(n, RepeatNode):
                    count = n.count
                    if isinstance(count, Ref):
                        name = count.name + _suffix(binding, count.name)
                        used.add(name)
                        count = int(eff(name))
                    for i in range(count):
                        steps += walk(n.block, {**binding, **{
                            p: _suffix(binding, p) + f"[{i}]" for p in n.per_repeat}})
                    continue
                args = {}
                for a, v in n.args.items():
                    if isinstance(v, Ref):
                        name = v.name + _suffix(binding, v.name)
                        used.add(name)
                        v = eff(name)
                    args[a] = v
                steps.append((n.op, args, walk(n.block, binding) if n.op.nested else []))
            return steps

        steps = walk(self._nodes, {})
        for i in reversed(self._inst):
            if i.name in used and declared[i.name]:
                used.update(r for r, _ in i.cond)
        out = (frozenset(n for n in used if declared.get(n)), steps)
        if len(self._cache) > 4096:
            self._cache.clear()
        self._cache[key] = out
        return out

    @property
    def size(self) -> int:
        """Distinct canonical architectures: counted exactly while the product of the
        option counts is small (conditional choices make it an upper bound), else that
        product."""
        bound = math.prod(len(c.options) for c in self._choices)
        if bound > 50_000:
            return bound
        if "_size" not in self.__dict__:
            self.__dict__["_size"] = sum(1 for _ in self.enumerate())
        return int(self.__dict__["_size"])

    def is_active(self, name: str, values: Mapping[str, Value]) -> bool:
        return name in self._evaluate(values)[0]

    def canonicalize(self, values: dict[str, Value]) -> dict[str, Value]:
        active = self._evaluate(values)[0]
        return {k: (v if k in active else self._first[k]) for k, v in values.items()}

    def format(self, arch: Arch) -> str:
        active = self._evaluate(arch.as_dict())[0]
        return ";".join(f"{k}={v}" for k, v in arch.items if k in active)

    # -- building ------------------------------------------------------------------------
    def _input(self, input_shape: Sequence[int]) -> Shape:
        shape = tuple(input_shape)
        ints = all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape)
        if self.input_kind == "image":
            if len(shape) != 3 or not ints:
                raise NasforgeError(f"space {self.title!r} takes images: input_shape must be "
                                    f"(channels, height, width), got {shape}")
            return Shape("image", *shape)
        if len(shape) != 1 or not ints:
            raise NasforgeError(f"space {self.title!r} takes tabular rows: input_shape must be "
                                f"(features,), got {shape}")
        return Shape("vector", shape[0])

    def _build(self, arch: Arch, input_shape: Sequence[int],
               num_classes: int | None) -> FileNet:
        if not isinstance(arch, Arch) or arch.space != self.name:
            raise NasforgeError(f"not an architecture of a file space: {arch!r}")
        arch = self.make(arch.as_dict())
        shape = self._input(input_shape)
        if num_classes is not None and (isinstance(num_classes, bool)
                                        or not isinstance(num_classes, int) or num_classes < 1):
            raise NasforgeError(f"num_classes must be a positive integer, got {num_classes!r}")
        steps = self._evaluate(arch.as_dict())[1]
        mods, shapes = build_sequence(steps, shape)
        levels: list[tuple[int, Level]] = []
        prev = shape
        for n, s in enumerate(shapes):
            if n > 0 and s.kind == prev.kind == "image" and (s.h < prev.h or s.w < prev.w):
                levels.append((n, _level(prev, shape)))
            prev = s
        end = shapes[-1] if shapes else shape
        levels.append((len(mods), _level(end, shape)))
        head = None
        if num_classes is not None:
            pool: list[nn.Module] = ([nn.AdaptiveAvgPool2d(1), nn.Flatten()]
                                     if end.kind == "image" else [])
            head = nn.Sequential(*pool, nn.Linear(end.c, num_classes))
        return FileNet(nn.Sequential(*mods), levels, head)

    def build(self, arch: Arch, input_shape: Sequence[int], num_classes: int) -> nn.Module:
        return self._build(arch, input_shape, num_classes)

    def build_backbone(self, arch: Arch, input_shape: Sequence[int]) -> Backbone:
        """The layers without the head: one level per resolution (the last map before each
        pool or stride that shrinks it, and the last layer's output)."""
        return self._build(arch, input_shape, None)


def _level(s: Shape, inp: Shape) -> Level:
    if s.kind != "image" or inp.kind != "image":
        return Level(s.c, 1)
    return Level(s.c, max(1, -(-inp.h // s.h)))


class FileNet(Backbone):
    """The layers of a file space's architecture, then (unless a backbone) the head."""

    def __init__(self, body: nn.Sequential, taps: Sequence[tuple[int, Level]],
                 head: nn.Module | None) -> None:
        super().__init__()
        self.body = body
        self._tap_at = [n for n, _ in taps]
        self.levels = [lv for _, lv in taps]
        self.has_head = head is not None
        if head is not None:
            self.head = head

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = [x] if 0 in self._tap_at else []
        for n, layer in enumerate(self.body, start=1):
            x = layer(x)
            if n in self._tap_at:
                out.append(x)
        return out

    def forward_head(self, features: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        if not self.has_head:
            raise no_head(self)
        return self.head(last_level(features))

    def forward(self, x: torch.Tensor) -> Any:
        feats = self.forward_features(x)
        return self.forward_head(feats) if self.has_head else feats
