"""Declared contracts: registries check option names (one-line error with a did-you-mean),
estimators declare their optional capabilities, and one ``finite`` says what a usable
number is."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

import nasforge
from nasforge import estimators, spaces, strategies
from nasforge._util import as_float, finite, finite_or_none
from nasforge.cli import main
from nasforge.errors import NasforgeError, UnknownNameError, UnknownOptionError
from nasforge.registry import Registry

CNN_TYPO = "space 'cnn': unknown option 'widht' (did you mean 'widths'?). Valid options: "


def _valid(registry: Registry[Any], name: str, fixed: tuple[str, ...] = ()) -> list[str]:
    names, _ = registry.accepted_options(name)
    return sorted(names - set(fixed))


# --------------------------------------------------------------- unknown options, per registry
@pytest.mark.parametrize(
    "get, registry, name, options, bad, close",
    [
        (spaces.get, spaces.registry, "cnn", {"widht": 3}, "widht", "widths"),
        (strategies.get, strategies.registry, "evolution",
         {"space": spaces.get("nb201"), "populaton_size": 4}, "populaton_size",
         "population_size"),
        (estimators.get, estimators.registry, "train", {"epoch": 2}, "epoch", "epochs"),
    ],
)  # fmt: skip
def test_unknown_option_names_component_option_suggestion_and_valid_options(
    get, registry, name, options, bad, close
):
    with pytest.raises(UnknownOptionError) as exc:
        get(name, **options)
    err = exc.value
    assert isinstance(err, NasforgeError)  # the CLI's exit 2, not a traceback
    assert isinstance(err, TypeError)  # what calling the factory raised before
    msg = str(err)
    assert "\n" not in msg
    assert msg.startswith(f"{registry.kind} {name!r}: unknown option {bad!r} "
                          f"(did you mean {close!r}?). Valid options: ")
    assert msg.endswith(", ".join(_valid(registry, name)))


def test_the_cnn_typo_of_the_issue():
    with pytest.raises(NasforgeError, match=r"did you mean 'widths'\?") as exc:
        nasforge.spaces.get("cnn", widht=3)
    assert str(exc.value) == CNN_TYPO + ", ".join(_valid(spaces.registry, "cnn"))


def test_no_close_match_means_no_suggestion_and_every_unknown_is_named():
    with pytest.raises(UnknownOptionError) as exc:
        spaces.get("nb201", zzzz=1, qqqq=2)
    msg = str(exc.value)
    assert "did you mean" not in msg
    assert "'qqqq'" in msg and "'zzzz'" in msg
    assert msg.endswith("Valid options: C, N")


def test_valid_options_still_build():
    assert spaces.get("nb201", C=8, N=1).config() == spaces.get("nb201", C=8, N=1).config()
    st = strategies.get("evolution", space=spaces.get("nb201"), population_size=4, sample_size=2)
    assert st.population_size == 4


# -------------------------------------------------------------------- accepted_options
def test_accepted_options_reads_the_signature():
    names, var_kw = spaces.registry.accepted_options("nb201")
    assert names == {"C", "N"} and var_kw is False
    names, var_kw = strategies.registry.accepted_options("successive-halving")
    assert {"space", "seed", "n_configs"} <= names and var_kw is True
    with pytest.raises(UnknownNameError, match="did you mean|Did you mean"):
        spaces.registry.accepted_options("nb21")


def test_kwargs_factories_accept_anything():
    toy: Registry[dict[str, Any]] = Registry("toy")

    @toy.register("loose")
    def loose(a: int = 1, **rest: Any) -> dict[str, Any]:
        return {"a": a, **rest}

    @toy.register("strict")
    def strict(a: int = 1, *, b: int = 2) -> dict[str, Any]:
        return {"a": a, "b": b}

    assert toy.get("loose", a=2, anything=3) == {"a": 2, "anything": 3}
    assert toy.accepted_options("loose") == ({"a"}, True)
    assert toy.get("strict", b=5) == {"a": 1, "b": 5}  # keyword-only options count
    with pytest.raises(UnknownOptionError, match=r"^toy 'strict': unknown option 'c'"):
        toy.get("strict", c=1)
    # a strategy that passes **options on is not second-guessed by the registry
    strategies.registry.check_options("successive-halving", ["whatever"])


def test_check_options_leaves_out_what_the_caller_fixes():
    with pytest.raises(UnknownOptionError) as exc:
        strategies.registry.check_options("random", ["sead"], fixed=["space"])
    msg = str(exc.value)
    assert "(did you mean 'seed'?)" in msg
    assert msg.endswith(", ".join(_valid(strategies.registry, "random", ("space",))))
    assert "space" not in msg.split("Valid options: ")[1].split(", ")
    strategies.registry.check_options("random", ["seed", "max_retries"], fixed=["space"])


# ------------------------------------------------------------------ the other entry points
def test_search_space_options_typo_is_a_one_line_user_error(tmp_path):
    with pytest.raises(NasforgeError) as exc:
        nasforge.search("digits", space="cnn", space_options={"widht": 3}, trials=1,
                        out=tmp_path / "r", progress=False)
    msg = str(exc.value)
    assert "\n" not in msg and "'widht'" in msg and "widths" in msg
    assert not (tmp_path / "r").exists()


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    cap = capsys.readouterr()
    return int(exc.value.code or 0), cap.out, cap.err


@pytest.mark.parametrize(
    "flag, value, component",
    [("--space-opt", "widht=3", "cnn"), ("--strategy-opt", "populaton_size=4", "evolution"),
     ("--estimator-opt", "epoch=2", "train")],
)  # fmt: skip
def test_cli_option_typo_exits_2_with_one_line(flag, value, component, capsys, tmp_path):
    code, out, err = _cli(["search", "--dataset", "digits", "--space", "cnn", "--strategy",
                           "evolution", "--trials", "1", flag, value, "--out",
                           tmp_path / "r"], capsys)
    assert code == 2
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert value.split("=")[0] in lines[0] and component in lines[0]
    assert not (tmp_path / "r").exists()


def test_cli_and_search_give_the_registry_message(capsys, tmp_path):
    code, _, err = _cli(["search", "--dataset", "digits", "--space", "cnn", "--trials", "1",
                         "--space-opt", "widht=3", "--out", tmp_path / "r"], capsys)
    assert code == 2 and CNN_TYPO in err
    with pytest.raises(NasforgeError, match=r"did you mean 'widths'\?"):
        nasforge.search("digits", space="cnn", space_options={"widht": 3}, trials=1,
                        out=tmp_path / "s", progress=False)


# ------------------------------------------------------------- declared estimator capabilities
def test_estimator_base_declares_optional_capabilities_with_empty_defaults():
    est = estimators.get("params")
    assert est.restores_state is False
    assert est.restore([]) is None
    assert est.top_k(5) == set()
    assert est.best_arch() is None
    assert est.ceiling() is None
    assert estimators.registry.factory("train").restores_state is True


# ------------------------------------------------------------------------------ finite
@pytest.mark.parametrize(
    "x, expected",
    [(0, True), (1.5, True), (-3, True), (np.float32(0.25), True), (np.int64(7), True),
     (math.nan, False), (math.inf, False), (-math.inf, False), (np.float64("nan"), False),
     (None, False), (True, False), (False, False), ("0.5", False), ("nan", False),
     (object(), False), ([1.0], False), (10**400, False)],
)  # fmt: skip
def test_finite(x, expected):
    assert finite(x) is expected
    assert (finite_or_none(x) is not None) is expected
    if expected:
        assert finite_or_none(x) == float(x)


def test_as_float_keeps_nan_and_inf_but_not_non_numbers():
    assert math.isnan(as_float(math.nan)) and as_float(-math.inf) == -math.inf
    assert as_float(None) is None and as_float(True) is None and as_float("1") is None


def test_estimator_fails_non_finite_numbers_only():
    from nasforge.estimators.base import Estimator, Result

    class Fixed(Estimator):
        def __init__(self, metrics: dict[str, Any]) -> None:
            self.metrics = metrics

        def _evaluate(self, arch, space, data, fidelity):
            return Result(metrics=dict(self.metrics))

    sp = spaces.get("nb201", C=2, N=1)
    arch = sp.sample(np.random.default_rng(0))
    assert Fixed({"val_accuracy": 0.5, "note": None}).evaluate(arch, sp).ok
    res = Fixed({"val_accuracy": math.nan, "params": 3}).evaluate(arch, sp)
    assert not res.ok and "val_accuracy" in (res.error or "")
