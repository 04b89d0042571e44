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
    pw, ph, left, top_pad = 330, 250, 70, 96
    width, height = cols * pw + 30, top_pad + rows * ph + 20
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="20" y="28" font-size="18" font-weight="bold">{_esc(title)}</text>',
        f'<text x="20" y="48" font-size="12" fill="#444">{_esc(subtitle)}</text>',
    ]
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
    for p, ((workload, think), pcells) in enumerate(panels.items()):
        ox, oy = 10 + (p % cols) * pw, top_pad + (p // cols) * ph
        x0, x1, y0, y1 = ox + left, ox + pw - 15, oy + ph - 50, oy + 26
        writers = sorted({c["writers"] for c in pcells})
        ymax, step = _nice_max(max(c[e]["max"] for c in pcells for e in ("ours", "stock")))

        def sx(n: int, writers: list[int] = writers, x0: int = x0, x1: int = x1) -> float:
            i = writers.index(n)
            return (
                (x0 + x1) / 2
                if len(writers) == 1
                else x0 + 10 + i * (x1 - x0 - 20) / (len(writers) - 1)
            )

        def sy(v: float, ymax: float = ymax, y0: int = y0, y1: int = y1) -> float:
            return y0 - (y0 - y1) * v / ymax

        out.append(
            f'<text x="{(x0 + x1) / 2}" y="{oy + 14}" font-size="13" font-weight="bold" '
            f'text-anchor="middle">{_esc(workload)}, {think:g} ms think</text>'
        )
        tick = 0.0
        while tick <= ymax + step / 2:
            y = sy(tick)
            out.append(
                f'<line x1="{x0}" y1="{y:.1f}" x2="{x1}" y2="{y:.1f}" stroke="#e3e3e3"/>'
                f'<text x="{x0 - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">'
                f"{tick:,.0f}</text>"
            )
            tick += step
        out.append(
            f'<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#333"/>'
            f'<line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#333"/>'
        )
        for n in writers:
            out.append(
                f'<line x1="{sx(n):.1f}" y1="{y0}" x2="{sx(n):.1f}" y2="{y0 + 4}" stroke="#333"/>'
                f'<text x="{sx(n):.1f}" y="{y0 + 17}" font-size="11" text-anchor="middle">{n}'
                "</text>"
            )
        out.append(
            f'<text x="{(x0 + x1) / 2}" y="{y0 + 34}" font-size="12" text-anchor="middle">'
            "writer processes</text>"
            f'<text transform="translate({ox + 16},{(y0 + y1) / 2}) rotate(-90)" font-size="12" '
            'text-anchor="middle">committed txn/s</text>'
        )
        for engine in ("stock", "ours"):
            color = _COLORS[engine]
            pts = sorted((c["writers"], c[engine]) for c in pcells)
            path = " ".join(f"{sx(n):.1f},{sy(v['txn_per_s']):.1f}" for n, v in pts)
            dash = ' stroke-dasharray="6 4"' if engine == "stock" else ""
            out.append(
                f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2.5"{dash}/>'
            )
            for n, v in pts:
                x = sx(n)
                out.append(
                    f'<line x1="{x:.1f}" y1="{sy(v["min"]):.1f}" x2="{x:.1f}" '
                    f'y2="{sy(v["max"]):.1f}" stroke="{color}" stroke-width="1.5"/>'
                    f'<circle cx="{x:.1f}" cy="{sy(v["txn_per_s"]):.1f}" r="3.5" fill="{color}">'
                    f"<title>{engine}, {n} writers: {v['txn_per_s']:,.0f} txn/s</title></circle>"
                )
    out.append("</svg>")
    return "\n".join(out) + "\n"
