"""The benchmark chart: committed transactions per second against writer processes, as SVG.

Hand-written SVG (no plotting library to install): one panel per (workload, think time), one
line per engine, each point the median over the repeats with a bar from the slowest to the
fastest repeat.  Input is :func:`sqlite_concurrent.cli.bench.cells` output.
"""

from __future__ import annotations

import math
from typing import Any

_COLORS = {"ours": "#1f6fb4", "stock": "#d9620b"}


def _nice_max(value: float) -> tuple[float, float]:
    """An axis top at or above ``value`` and a round tick step (1, 2 or 5 times 10^k)."""
    if value <= 0:
        return 1.0, 0.2
    raw = value / 5
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    top = step * math.ceil(value / step)
    return top, step


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def svg_chart(
    cells: list[dict[str, Any]], title: str, subtitle: str, lock_level: str = "row"
) -> str:
    """Throughput against writers: one panel per (workload, think), one line per engine, each
    point the median over repeats with a bar from the slowest to the fastest repeat."""
    panels: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for c in cells:
        panels.setdefault((c["workload"], c["think_ms"]), []).append(c)
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    width, height = cols * _PANEL_W + 30, _TOP + rows * _PANEL_H + 20
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="20" y="28" font-size="18" font-weight="bold">{_esc(title)}</text>',
        f'<text x="20" y="48" font-size="12" fill="#444">{_esc(subtitle)}</text>',
    ]
    _legend(out, lock_level)
    for p, ((workload, think), pcells) in enumerate(panels.items()):
        ox, oy = 10 + (p % cols) * _PANEL_W, _TOP + (p // cols) * _PANEL_H
        _Panel(ox, oy, pcells).draw(out, f"{workload}, {think:g} ms think")
    out.append("</svg>")
    return "\n".join(out) + "\n"


_PANEL_W, _PANEL_H, _LEFT, _TOP = 330, 250, 70, 96


def _legend(out: list[str], lock_level: str) -> None:
    legend_x = 20
    for engine, label in (
        ("ours", f"ours: sqlite_concurrent ({lock_level} locks)"),
        ("stock", "stock: sqlite3, BEGIN IMMEDIATE"),
    ):
        dash = ' stroke-dasharray="6 4"' if engine == "stock" else ""
        out.append(
            f'<line x1="{legend_x}" y1="70" x2="{legend_x + 30}" y2="70" stroke="{_COLORS[engine]}"'
            f' stroke-width="2.5"{dash}/><circle cx="{legend_x + 15}" cy="70" r="3.5" '
            f'fill="{_COLORS[engine]}"/><text x="{legend_x + 38}" y="74" font-size="12">'
            f"{_esc(label)}</text>"
        )
        legend_x += 260
    out.append(
        f'<text x="{legend_x}" y="74" font-size="12" fill="#444">points: median; bars: '
        "min-max over repeats</text>"
    )


class _Panel:
    """One (workload, think) panel, its top left corner at (``ox``, ``oy``)."""

    def __init__(self, ox: int, oy: int, cells: list[dict[str, Any]]) -> None:
        self.ox, self.oy, self.cells = ox, oy, cells
        self.x0, self.x1 = ox + _LEFT, ox + _PANEL_W - 15
        self.y0, self.y1 = oy + _PANEL_H - 50, oy + 26
        self.writers = sorted({c["writers"] for c in cells})
        self.ymax, self.step = _nice_max(max(c[e]["max"] for c in cells for e in ("ours", "stock")))

    def sx(self, n: int) -> float:
        x0, x1, writers = self.x0, self.x1, self.writers
        if len(writers) == 1:
            return (x0 + x1) / 2
        return x0 + 10 + writers.index(n) * (x1 - x0 - 20) / (len(writers) - 1)

    def sy(self, v: float) -> float:
        return self.y0 - (self.y0 - self.y1) * v / self.ymax

    def draw(self, out: list[str], caption: str) -> None:
        x0, x1 = self.x0, self.x1
        out.append(
            f'<text x="{(x0 + x1) / 2}" y="{self.oy + 14}" font-size="13" font-weight="bold" '
            f'text-anchor="middle">{_esc(caption)}</text>'
        )
        self._axes(out)
        for engine in ("stock", "ours"):
            self._line(out, engine)

    def _axes(self, out: list[str]) -> None:
        x0, x1, y0, y1 = self.x0, self.x1, self.y0, self.y1
        tick = 0.0
        while tick <= self.ymax + self.step / 2:
            y = self.sy(tick)
            out.append(
                f'<line x1="{x0}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}" stroke="#e3e3e3"/>'
                f'<text x="{x0 - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">'
                f"{tick:,.0f}</text>"
            )
            tick += self.step
        out.append(
            f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#333"/>'
            f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#333"/>'
        )
        for n in self.writers:
            x = self.sx(n)
            out.append(
                f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y0 + 4}" stroke="#333"/>'
                f'<text x="{x:.1f}" y="{y0 + 17}" font-size="11" text-anchor="middle">{n}'
                "</text>"
            )
        out.append(
            f'<text x="{(x0 + x1) / 2}" y="{y0 + 34}" font-size="12" text-anchor="middle">'
            "writer processes</text>"
            f'<text transform="translate({self.ox + 16},{(y0 + y1) / 2}) rotate(-90)" '
            'font-size="12" text-anchor="middle">committed txn/s</text>'
        )

    def _line(self, out: list[str], engine: str) -> None:
        color = _COLORS[engine]
        pts = sorted((c["writers"], c[engine]) for c in self.cells)
        path = " ".join(f"{self.sx(n):.1f},{self.sy(v['txn_per_s']):.1f}" for n, v in pts)
        dash = ' stroke-dasharray="6 4"' if engine == "stock" else ""
        out.append(
            f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2.5"{dash}/>'
        )
        for n, v in pts:
            x = self.sx(n)
            out.append(
                f'<line x1="{x:.1f}" y1="{self.sy(v["min"]):.1f}" x2="{x:.1f}" '
                f'y2="{self.sy(v["max"]):.1f}" stroke="{color}" stroke-width="1.5"/>'
                f'<circle cx="{x:.1f}" cy="{self.sy(v["txn_per_s"]):.1f}" r="3.5" fill="{color}">'
                f"<title>{engine}, {n} writers: {v['txn_per_s']:,.0f} txn/s</title></circle>"
            )
