"""A space declares the input kind its networks take; a search picks the default space for
the data's kind and refuses a space that cannot take them, before anything is stored."""

from __future__ import annotations

import numpy as np
import pytest

from nasforge import spaces
from nasforge.data import from_arrays, input_kind_of
from nasforge.errors import NasforgeError


def test_every_image_loader_and_space_is_image() -> None:
    ds = from_arrays(np.zeros((40, 8, 8), np.float32), np.arange(40) % 2)
    assert ds.input_kind == "image" == input_kind_of(ds) == input_kind_of("digits")
    assert spaces.default_for("image") == "cnn"
    assert {"cnn", "mobile", "nb201"} <= set(spaces.for_input("image"))


def test_a_kind_without_a_space_is_refused_in_one_line() -> None:
    with pytest.raises(NasforgeError, match="no default search space for martian data"):
        spaces.default_for("martian")


def test_search_refuses_a_space_for_other_inputs(tmp_path) -> None:
    import nasforge

    ds = from_arrays(np.zeros((40, 8, 8), np.float32), np.arange(40) % 2)
    ds.input_kind = "martian"  # what a loader of another kind would set
    with pytest.raises(NasforgeError, match="builds networks for image inputs, but the data "
                                            "are martian"):
        nasforge.search(ds, space="cnn", trials=1, out=tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "run.db").exists()
