"""``nasforge zoo``: the published cells of the ``darts`` space, with their sizes."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from nasforge.cli._app import _fmt, app


@app.command("zoo")
def zoo_cmd(
    c: Annotated[int | None, typer.Option(
        "--C", "-C", min=1, max=1024,
        help="Initial channels (default: the paper's, 36; 32 for NASNet-A-TF).")] = None,
    layers: Annotated[int, typer.Option(min=1, max=100,
                                        help="Cells (the papers' CIFAR-10: 20).")] = 20,
    classes: Annotated[int, typer.Option(min=1, help="Output classes.")] = 10,
) -> None:
    """List the published cells (NASNet-A, DARTS-V2, PC-DARTS, ...) and how to use them.

    Each line: the parameters (auxiliary head off, 32x32x3 inputs), the paper's figure,
    and the --space-opt values and architecture string that search or train it.
    """
    from nasforge.spaces import darts

    for name, e in darts.GENOTYPES.items():
        n = darts.count_params(name, C=c, layers=layers, num_classes=classes)
        paper = f"{e.paper_params_m}M" if e.paper_params_m is not None else "-"
        opts = "".join(f" --space-opt {k}={v}" if isinstance(v, str | int) else
                       f" --space-opt '{k}={json.dumps(v)}'" for k, v in e.options.items())
        _, arch = darts.zoo_arch(name)
        typer.echo(f"{name:<18} {_fmt(n):>7} params (paper {paper:>5})  "
                   f"--space darts{opts}")
        typer.echo(f"{'':<18} {e.source}")
        typer.echo(f"{'':<18} {arch.text}")
    at = f"C={c}" if c is not None else "the paper's C"
    typer.echo(f"(params at {at}, {layers} cells, {classes} classes; name a cell by its "
               "name or its string: spaces.get('darts', ...).parse('DARTS-V2'))")
