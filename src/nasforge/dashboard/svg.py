"""Architecture drawings as standalone SVG text (no JavaScript, no library).

Four shapes cover the spaces: a cell DAG (choices named ``"j<-i"``: an edge from node
i to node j, as nb201's cell), DARTS-style cells (a text ``name=op~i+op~j|...;name=...``:
per cell, nodes that each take two ``op~input`` edges, inputs 0 and 1 the cell's inputs
and k + 2 node k), a chain of blocks (an architecture text of ``|``-separated
parts, as cnn's blocks or mobile's stages of ``-``-separated blocks), and a fallback
that lists the choices. The shape is read from the architecture itself, never from the
space's name. Written by hand: a few rectangles and lines do not need a graph library.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from html import escape
from typing import Any

_EDGE = re.compile(r"^(\d+)<-(\d+)$")
_CELL_NODE = re.compile(r"^[A-Za-z0-9_]+~\d+(\+[A-Za-z0-9_]+~\d+)+$")


def arch_svg(arch: str, arch_json: Mapping[str, Any] | None = None) -> str:
    """The drawing for one architecture (its text and, when stored, its JSON)."""
    choices = (arch_json or {}).get("choices") if arch_json else None
    if isinstance(choices, Mapping) and choices and all(_EDGE.match(str(k)) for k in choices):
        return _dag(choices)
    cells = _cell_sections(arch or "")
    if cells:
        return _cells(cells)
    parts = [p for p in (arch or "").split("|") if p]
    if len(parts) >= 2:
        return _chain(parts)
    return _listing(arch, choices if isinstance(choices, Mapping) else {})


def _svg(w: int, h: int, body: list[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="arch" width="{w}" height="{h}" '
            f'viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="11">'
            '<defs><marker id="ah" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" '
            'markerHeight="6" orient="auto"><path d="M0,0L10,5L0,10z" fill="#555"/></marker>'
            "</defs>" + "".join(body) + "</svg>")


def _dag(choices: Mapping[str, Any]) -> str:
    edges = []
    for k, op in choices.items():
        m = _EDGE.match(str(k))
        assert m is not None
        edges.append((int(m.group(2)), int(m.group(1)), str(op)))
    n = max(max(a, b) for a, b, _ in edges) + 1
    gap, r, top = 150, 16, 30
    w = gap * (n - 1) + 80
    pos = {i: (40 + gap * i, top + 90 + (40 if i % 2 else -40) * (0 < i < n - 1)) for i in range(n)}
    body = []
    for a, b, op in sorted(edges):
        if op == "none":
            continue
        (x1, y1), (x2, y2) = pos[a], pos[b]
        bend = -60 * (b - a - 1)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2 + bend
        color = "#999" if op == "skip_connect" else "#1f77b4"
        dash = ' stroke-dasharray="4 3"' if op == "skip_connect" else ""
        body.append(f'<path d="M{x1},{y1} Q{cx},{cy} {x2 - r},{y2}" fill="none" stroke="{color}"'
                    f' stroke-width="1.6"{dash} marker-end="url(#ah)"/>')
        body.append(f'<text x="{(x1 + 2 * cx + x2) / 4:.0f}" y="{(y1 + 2 * cy + y2) / 4 - 4:.0f}" '
                    f'text-anchor="middle" fill="#333">{escape(op)}</text>')
    for i, (x, y) in pos.items():
        label = "in" if i == 0 else "out" if i == n - 1 else str(i)
        body.append(f'<circle cx="{x}" cy="{y}" r="{r}" fill="#fff" stroke="#333"/>'
                    f'<text x="{x}" y="{y + 4}" text-anchor="middle">{label}</text>')
    return _svg(w, 230, body)


def _chain(parts: list[str]) -> str:
    bw, bh, gap, x0 = 190, 26, 14, 10
    rows = [p.split("-") if _is_stage(p) else [p] for p in parts]
    stage = any(len(r) > 1 for r in rows)
    body, y = [], 10
    body.append(f'<text x="{x0}" y="{y + 12}" fill="#555">input</text>')
    y += 22
    for si, row in enumerate(rows):
        if stage:
            body.append(f'<text x="{x0}" y="{y + 12}" fill="#555">stage {si}</text>')
            y += 18
        for part in row:
            body.append(f'<line x1="{x0 + bw / 2}" y1="{y - gap + 2}" x2="{x0 + bw / 2}" '
                        f'y2="{y}" stroke="#555" marker-end="url(#ah)"/>')
            fill = _fill(part)
            body.append(f'<rect x="{x0}" y="{y}" width="{bw}" height="{bh}" rx="4" fill="{fill}" '
                        f'stroke="#333"/><text x="{x0 + bw / 2}" y="{y + 17}" '
                        f'text-anchor="middle">{escape(part[:32])}</text>')
            y += bh + gap
    body.append(f'<text x="{x0}" y="{y + 6}" fill="#555">head</text>')
    return _svg(bw + 2 * x0 + 60, y + 16, body)


def _is_stage(part: str) -> bool:
    """``k5e4-k3e3``: blocks of one stage (every piece starts with a letter and a digit)."""
    pieces = part.split("-")
    return len(pieces) > 1 and all(re.match(r"^[a-z]+\d", p) for p in pieces) and \
        not re.match(r"^(conv|sepconv|mbconv)", part)


def _fill(part: str) -> str:
    p = part.lower()
    if "pool" in p:
        return "#fde0c5"
    if p.startswith("drop"):
        return "#eee"
    if p.startswith("stem"):
        return "#d9ead3"
    return "#dbe8f6"


def _listing(arch: str, choices: Mapping[str, Any]) -> str:
    lines = [f"{k} = {v}" for k, v in list(choices.items())[:40]] or [arch or "?"]
    body = [f'<text x="10" y="{18 + 15 * i}">{escape(line[:80])}</text>'
            for i, line in enumerate(lines)]
    return _svg(520, 20 + 15 * len(lines), body)


def _cell_sections(text: str) -> list[tuple[str, list[list[tuple[str, int]]]]] | None:
    """``[(cell name, [[(op, input), ...] per node])]`` of a DARTS-style text, else None."""
    out = []
    for section in text.split(";"):
        name, sep, body = section.partition("=")
        nodes = body.split("|")
        if not sep or not name.strip() or not all(_CELL_NODE.match(n) for n in nodes):
            return None
        edges = [[(op, int(i)) for op, i in (e.split("~") for e in n.split("+"))]
                 for n in nodes]
        if any(i >= k + 2 for k, es in enumerate(edges) for _, i in es):
            return None  # an input from a later node: not a cell of this form
        out.append((name.strip(), edges))
    return out or None


def _cells(cells: list[tuple[str, list[list[tuple[str, int]]]]]) -> str:
    """Each cell as a small DAG: its two inputs on the left, the nodes in a column, every
    edge labelled with its op (skips dashed), all nodes into the output."""
    col, row, r, cell_h = 200, 46, 15, 0
    body: list[str] = []
    y0 = 10
    width = 0
    for name, nodes in cells:
        n = len(nodes)
        pos = {0: (40, y0 + 40), 1: (40, y0 + 40 + row)}
        for k in range(n):
            pos[k + 2] = (40 + col * (1 + k // 4), y0 + 30 + row * (k % 4))
        out_x = 40 + col * (2 + (n - 1) // 4)
        out_y = y0 + 30 + row * (min(n, 4) - 1) / 2
        body.append(f'<text x="10" y="{y0 + 12}" font-weight="bold">{escape(name)} cell</text>')
        for k, edges in enumerate(nodes):
            x2, y2 = pos[k + 2]
            for op, i in edges:
                x1, y1 = pos[i]
                skip = op in ("skip_connect", "identity")
                color, dash = ("#999", ' stroke-dasharray="4 3"') if skip else ("#1f77b4", "")
                if x1 == x2:  # node to node in one column: bow out to the right
                    cx, cy = x1 + 30 + 12 * abs(y2 - y1) / row, (y1 + y2) / 2
                    body.append(f'<path d="M{x1 + r},{y1} Q{cx:.0f},{cy:.0f} {x2 + r},{y2}" '
                                f'fill="none" stroke="{color}" stroke-width="1.4"{dash} '
                                f'marker-end="url(#ah)"/>')
                    lx, ly = cx + 2, cy
                else:
                    body.append(f'<line x1="{x1 + r}" y1="{y1}" x2="{x2 - r}" y2="{y2}" '
                                f'stroke="{color}" stroke-width="1.4"{dash} '
                                f'marker-end="url(#ah)"/>')
                    # near the target, where a node's edges have spread apart
                    lx, ly = x1 + 0.68 * (x2 - x1), y1 + 0.68 * (y2 - y1) - 3
                body.append(f'<text x="{lx:.0f}" y="{ly:.0f}" text-anchor="middle" '
                            f'fill="#333" font-size="9">{escape(op)}</text>')
            body.append(f'<line x1="{x2 + r}" y1="{y2}" x2="{out_x - r}" y2="{out_y}" '
                        f'stroke="#ccc" marker-end="url(#ah)"/>')
        labels = {0: "c[k-2]", 1: "c[k-1]"}
        for j, (x, y) in pos.items():
            body.append(f'<circle cx="{x}" cy="{y}" r="{r}" fill="#fff" stroke="#333"/>'
                        f'<text x="{x}" y="{y + 4}" text-anchor="middle" font-size="9">'
                        f'{labels.get(j, str(j - 2))}</text>')
        body.append(f'<circle cx="{out_x}" cy="{out_y}" r="{r}" fill="#d9ead3" stroke="#333"/>'
                    f'<text x="{out_x}" y="{out_y + 4}" text-anchor="middle" font-size="9">out'
                    f'</text>')
        cell_h = 30 + row * max(min(n, 4), 2) + 4
        y0 += cell_h
        width = max(width, out_x + 40)
    return _svg(int(width), int(y0), body)
