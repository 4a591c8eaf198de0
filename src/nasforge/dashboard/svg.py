"""Architecture drawings as standalone SVG text (no JavaScript, no library).

Three shapes cover the spaces: a cell DAG (choices named ``"j<-i"``: an edge from node
i to node j, as nb201's cell), a chain of blocks (an architecture text of ``|``-separated
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


def arch_svg(arch: str, arch_json: Mapping[str, Any] | None = None) -> str:
    """The drawing for one architecture (its text and, when stored, its JSON)."""
    choices = (arch_json or {}).get("choices") if arch_json else None
    if isinstance(choices, Mapping) and choices and all(_EDGE.match(str(k)) for k in choices):
        return _dag(choices)
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
