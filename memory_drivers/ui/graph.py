"""The layout of a memory's associations as a small graph: the memory in the middle, the
memories linked to it on a circle around it, an arrow for each link's direction.

Only geometry: the template draws it as SVG, each node a link to that memory's page.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..models import Memory, RelatedMemory

__all__ = ["Graph", "layout"]

#: The drawing's size (SVG user units); it scales to the screen's width.
WIDTH, HEIGHT = 640, 400
#: the ellipse the linked memories sit on (room for the labels under the nodes)
_RX, _RY = 230, 125
_NODE = 34
#: Links drawn at most; the list under the graph shows every one.
MAX_NODES = 16


@dataclass(frozen=True)
class Node:
    memory_id: str
    label: str
    x: float
    y: float
    center: bool = False


@dataclass(frozen=True)
class Edge:
    #: where the arrow starts and ends (at the nodes' rims)
    x1: float
    y1: float
    x2: float
    y2: float
    label: str
    label_x: float
    label_y: float


@dataclass(frozen=True)
class Graph:
    width: int
    height: int
    node_radius: int
    nodes: list[Node]
    edges: list[Edge]
    hidden: int


def _label(memory: Memory, length: int = 22) -> str:
    text = " ".join(memory.content.split())
    return text if len(text) <= length else text[: length - 1] + "…"


def layout(memory: Memory, related: list[RelatedMemory]) -> Graph:
    """Place ``memory`` and the first :data:`MAX_NODES` of ``related`` (strongest first)."""
    shown = related[:MAX_NODES]
    height = HEIGHT if len(shown) > 2 else 160  # one row: no room needed above and below
    cx, cy = WIDTH / 2, height / 2 - 10
    nodes = [Node(memory.id, _label(memory), cx, cy, center=True)]
    edges = []
    for i, item in enumerate(shown):
        # from the left, clockwise: one link goes left, two left and right, ...
        angle = math.pi + 2 * math.pi * i / max(len(shown), 1)
        x, y = cx + _RX * math.cos(angle), cy + _RY * math.sin(angle)
        nodes.append(Node(item.memory.id, _label(item.memory), x, y))
        dx, dy = x - cx, y - cy
        distance = math.hypot(dx, dy) or 1.0
        ux, uy = dx / distance, dy / distance
        if item.direction == "outgoing":
            sx, sy, ex, ey = cx + ux * _NODE, cy + uy * _NODE, x - ux * _NODE, y - uy * _NODE
        else:
            sx, sy, ex, ey = x - ux * _NODE, y - uy * _NODE, cx + ux * _NODE, cy + uy * _NODE
        edges.append(
            Edge(
                sx,
                sy,
                ex,
                ey,
                f"{item.relationship_type} {item.strength:.2f}",
                (cx + x) / 2,
                (cy + y) / 2 - 6,
            )
        )
    return Graph(WIDTH, height, _NODE, nodes, edges, len(related) - len(shown))
