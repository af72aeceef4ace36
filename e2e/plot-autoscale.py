#!/usr/bin/env python3
"""Draws the autoscaling e2e's timeline (the CSV `e2e/tests/node/autoscale.rs` writes) as an
SVG: the shard pods' p95 search latency against the target, and the HPA's desired replicas with
the ready shard pods and the replicas serving in the shard map, over the test's phases.

Usage: python3 e2e/plot-autoscale.py TIMELINE.csv [OUT.svg] [--target-ms 25]
Only the standard library, so that it runs wherever the e2e does.
"""

import csv
import sys

W, H = 900, 520
LEFT, RIGHT = 70, 20
TOP_PANEL = (40, 250)  # y range of the latency panel
LOW_PANEL = (300, 460)  # y range of the replicas panel
PHASE_COLORS = {
    "idle": "#f2f2f2",
    "load": "#fde2e2",
    "steady": "#fbd0d0",
    "outage": "#e0e0f8",
    "light": "#e3f4e3",
}


def main(argv):
    args = [a for a in argv[1:] if not a.startswith("--")]
    target = 25.0
    if "--target-ms" in argv:
        target = float(argv[argv.index("--target-ms") + 1])
        args = [a for a in args if a != argv[argv.index("--target-ms") + 1]]
    if not args:
        sys.exit(__doc__)
    rows = list(csv.DictReader(open(args[0])))
    out = open(args[1], "w") if len(args) > 1 else sys.stdout
    out.write(svg(rows, target))


def svg(rows, target):
    t0 = float(rows[0]["seconds"])
    ts = [float(r["seconds"]) - t0 for r in rows]
    span = max(ts[-1], 1.0)
    x = lambda t: LEFT + (W - LEFT - RIGHT) * t / span  # noqa: E731
    p95 = [float(r["p95_ms"]) if r["p95_ms"] else None for r in rows]
    top = max([v for v in p95 if v is not None] + [target * 2])
    y_lat = lambda v: TOP_PANEL[1] - (TOP_PANEL[1] - TOP_PANEL[0]) * v / top  # noqa: E731
    most = max(max(int(r["desired"]), int(r["ready"]), int(r["serving"])) for r in rows) + 1
    y_rep = lambda v: LOW_PANEL[1] - (LOW_PANEL[1] - LOW_PANEL[0]) * v / most  # noqa: E731

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
             f'font-family="sans-serif" font-size="12">',
             f'<rect width="{W}" height="{H}" fill="white"/>']
    # Phase bands across both panels, labelled on top.
    start = 0
    for i in range(1, len(rows) + 1):
        if i == len(rows) or rows[i]["phase"] != rows[start]["phase"]:
            phase = rows[start]["phase"]
            x0, x1 = x(ts[start]), x(ts[i - 1] if i == len(rows) else ts[i])
            color = PHASE_COLORS.get(phase, "#eeeeee")
            parts.append(f'<rect x="{x0:.1f}" y="{TOP_PANEL[0]}" width="{max(x1 - x0, 1):.1f}" '
                         f'height="{LOW_PANEL[1] - TOP_PANEL[0]}" fill="{color}"/>')
            parts.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{TOP_PANEL[0] - 8}" '
                         f'text-anchor="middle">{phase}</text>')
            start = i
    # Latency panel.
    parts.append(axis(TOP_PANEL, f"p95 ms (max over shard pods)", [0, top / 2, top], y_lat))
    parts.append(f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{y_lat(target):.1f}" '
                 f'y2="{y_lat(target):.1f}" stroke="#c00" stroke-dasharray="6 4"/>')
    parts.append(f'<text x="{W - RIGHT - 4}" y="{y_lat(target) - 4:.1f}" text-anchor="end" '
                 f'fill="#c00">target {target:g} ms</text>')
    # One line per run of samples: no value (metrics down) leaves a gap, not a slope.
    run = []
    for t, v in list(zip(ts, p95)) + [(None, None)]:
        if v is None:
            if run:
                parts.append(polyline(run, "#1f5fbf", 2))
            run = []
        else:
            run.append((x(t), y_lat(v)))
    # Replicas panel: step lines.
    parts.append(axis(LOW_PANEL, "replicas", list(range(0, most + 1)), y_rep))
    # Slightly apart, so that lines on the same count stay visible.
    for key, color, width, dash, nudge in [("desired", "#c07000", 3, "", 0.06),
                                           ("ready", "#2a8a2a", 2, "", 0.0),
                                           ("serving", "#444", 1.5, "4 3", -0.06)]:
        steps = []
        for t, r in zip(ts, rows):
            v = int(r[key]) + nudge
            if steps:
                steps.append((x(t), steps[-1][1]))
            steps.append((x(t), y_rep(v)))
        parts.append(polyline(steps, color, width, dash))
    legend = [("p95", "#1f5fbf"), ("HPA desired", "#c07000"), ("ready pods", "#2a8a2a"),
              ("serving in the shard map", "#444")]
    for i, (name, color) in enumerate(legend):
        lx = LEFT + i * 190
        parts.append(f'<line x1="{lx}" x2="{lx + 24}" y1="{H - 18}" y2="{H - 18}" '
                     f'stroke="{color}" stroke-width="3"/>')
        parts.append(f'<text x="{lx + 30}" y="{H - 14}">{name}</text>')
    parts.append(f'<text x="{W - RIGHT}" y="{LOW_PANEL[1] + 18}" text-anchor="end">'
                 f'seconds since the idle check ({span:.0f} s)</text>')
    parts.append("</svg>\n")
    return "\n".join(parts)


def axis(panel, label, ticks, y):
    lines = [f'<line x1="{LEFT}" x2="{LEFT}" y1="{panel[0]}" y2="{panel[1]}" stroke="#000"/>',
             f'<line x1="{LEFT}" x2="{W - RIGHT}" y1="{panel[1]}" y2="{panel[1]}" stroke="#000"/>',
             f'<text x="12" y="{(panel[0] + panel[1]) / 2}" transform="rotate(-90 12 '
             f'{(panel[0] + panel[1]) / 2})" text-anchor="middle">{label}</text>']
    for t in ticks:
        lines.append(f'<text x="{LEFT - 6}" y="{y(t) + 4:.1f}" text-anchor="end">{t:.0f}</text>')
    return "\n".join(lines)


def polyline(points, color, width, dash=""):
    coords = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
    dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
    return (f'<polyline points="{coords}" fill="none" stroke="{color}" '
            f'stroke-width="{width}"{dash_attr}/>')


if __name__ == "__main__":
    main(sys.argv)
