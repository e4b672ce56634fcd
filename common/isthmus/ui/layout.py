"""A layered left-to-right drawing of a small graph (a run's steps, a lineage neighbourhood) as
positioned boxes and edges for an inline SVG: columns by longest path from the sources, rows in order.
No JavaScript layout library and nothing fetched: the page renders offline."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

BOX_W, BOX_H, GAP_X, GAP_Y, PAD = 190, 46, 60, 16, 10


@dataclass
class Node:
    """``kind`` becomes the CSS class (``computed``, ``hit``, ``failed``, ``artifact`` …); ``href`` a link."""

    key: str
    label: str
    sub: str = ""
    kind: str = ""
    href: str | None = None
    x: int = 0
    y: int = 0


@dataclass
class Drawing:
    nodes: list[Node] = field(default_factory=list)
    edges: list[tuple[int, int, int, int]] = field(default_factory=list)  # x1, y1, x2, y2
    width: int = 0
    height: int = 0


def layered(nodes: list[Node], edges: list[tuple[str, str]], max_nodes: int = 400) -> Drawing:
    """Place ``nodes`` in columns (a node sits right of everything feeding it); cycles are cut."""
    nodes = nodes[:max_nodes]
    by_key = {n.key: n for n in nodes}
    edges = [(a, b) for a, b in edges if a in by_key and b in by_key and a != b]
    preds: dict[str, list[str]] = defaultdict(list)
    for a, b in edges:
        preds[b].append(a)
    column: dict[str, int] = {}

    def depth(key: str, seen: frozenset[str]) -> int:
        if key in column:
            return column[key]
        inner = [depth(p, seen | {key}) + 1 for p in preds[key] if p not in seen]
        column[key] = max(inner, default=0)
        return column[key]

    for n in nodes:
        depth(n.key, frozenset())
    rows: dict[int, int] = defaultdict(int)
    for n in nodes:
        c = column[n.key]
        n.x = PAD + c * (BOX_W + GAP_X)
        n.y = PAD + rows[c] * (BOX_H + GAP_Y)
        rows[c] += 1
    drawing = Drawing(nodes=nodes)
    for a, b in dict.fromkeys(edges):
        na, nb = by_key[a], by_key[b]
        drawing.edges.append((na.x + BOX_W, na.y + BOX_H // 2, nb.x, nb.y + BOX_H // 2))
    drawing.width = PAD * 2 + (max(column.values(), default=0) + 1) * (BOX_W + GAP_X)
    drawing.height = PAD * 2 + max(rows.values(), default=1) * (BOX_H + GAP_Y)
    return drawing
