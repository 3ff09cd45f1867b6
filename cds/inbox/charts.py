"""Server-side charts of the patient page, drawn as SVG with matplotlib (Agg, no pyplot).

No JavaScript and no CDN: the library is the PyPI ``matplotlib`` pinned in
``pyproject.toml``.  Each chart has a data table beside it on the page for screen
readers and for exact values.  Colours are the Okabe-Ito palette (distinguishable with
the common colour-vision deficiencies).
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

from matplotlib.dates import (  # noqa: E402
    AutoDateLocator,
    ConciseDateFormatter,
    DateFormatter,
    date2num,
)
from matplotlib.figure import Figure  # noqa: E402

from cds.explain import signed_points  # noqa: E402

OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
MODALITY_COLOURS = {"numeric": "#0072B2", "text": "#009E73", "image": "#D55E00"}


def _svg(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", metadata={"Date": None}, bbox_inches="tight")
    return buf.getvalue()


def _style(fig: Figure) -> None:
    for ax in fig.axes:
        ax.spines[["top", "right"]].set_visible(False)
        ax.tick_params(labelsize=9, colors="#333333")
        ax.grid(True, axis="y", color="#dddddd", linewidth=0.8)
        ax.set_axisbelow(True)


def risk_trend_svg(
    dates: Sequence[dt.datetime],
    series: Mapping[str, Sequence[float | None]],
    labels: dict[str, str],
    thresholds: tuple[float, float] | None = None,
) -> bytes:
    """1-year risk (%) of each outcome across runs.

    Args:
        dates: the as-of time of each run, ascending.
        series: outcome -> probability (0..1) per run, None where the run lacks it.
        labels: outcome -> display label.
        thresholds: (moderate, high) tier cut-offs drawn as dashed lines, when known.
    """
    fig = Figure(figsize=(10.0, 3.6), dpi=100)
    ax = fig.add_subplot()
    top = 0.0
    for i, (outcome, values) in enumerate(series.items()):
        pts = [(d, 100.0 * v) for d, v in zip(dates, values, strict=True) if v is not None]
        if not pts:
            continue
        xs, ys = zip(*pts, strict=True)
        top = max(top, *ys)
        ax.plot(
            xs,
            ys,
            marker=MARKERS[i % len(MARKERS)],
            markersize=5,
            linewidth=1.8,
            color=OKABE_ITO[i % len(OKABE_ITO)],
            label=labels.get(outcome, outcome),
        )
    if thresholds is not None:
        for value, name in zip(thresholds, ("moderate", "high"), strict=True):
            ax.axhline(100 * value, color="#666666", linestyle="--", linewidth=1)
            ax.annotate(
                f"{name} ≥ {100 * value:.0f}%",
                xy=(1.0, 100 * value),
                xycoords=("axes fraction", "data"),
                xytext=(-4, 3),
                textcoords="offset points",
                ha="right",
                fontsize=8,
                color="#444444",
            )
            top = max(top, 100 * value)
    ax.set_ylim(0, min(100.0, max(10.0, top * 1.15)))
    ax.set_ylabel("1-year risk (%)", fontsize=10)
    if len(dates) <= 8:  # few runs: one tick per run
        ax.set_xticks([date2num(d) for d in dates])
        ax.xaxis.set_major_formatter(DateFormatter("%d %b"))
    else:
        locator = AutoDateLocator(minticks=3, maxticks=8)
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    years = sorted({d.year for d in dates})
    span = f"{years[0]}" if len(years) == 1 else f"{years[0]}–{years[-1]}"
    ax.set_xlabel(f"data as of (UTC), {span}" if years else "data as of (UTC)", fontsize=9)
    if len(dates) == 1:
        d = dates[0]
        ax.set_xlim(date2num(d - dt.timedelta(days=3)), date2num(d + dt.timedelta(days=3)))
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _style(fig)
    return _svg(fig)


def contributions_svg(parts: Mapping[str, float], labels: Mapping[str, str], outcome: str) -> bytes:
    """Waterfall: typical patients' risk, each source's contribution, the patient's risk.

    Args:
        parts: ``{"reference": p0, <modality>: d, ...}`` in probability units (the
            contributions add up to the patient's probability).
        labels: modality -> display label.
        outcome: the outcome's display label (axis title).
    """
    sources = [m for m in MODALITY_COLOURS if m in parts]
    names = ["Typical patients", *(labels.get(m, m) for m in sources), "This patient"]
    deltas = [100.0 * float(parts[m]) for m in sources]
    starts = [100.0 * float(parts["reference"])]
    for d in deltas:
        starts.append(starts[-1] + d)  # running total after each source
    fig = Figure(figsize=(5.6, 0.6 + 0.5 * len(names)), dpi=100)
    ax = fig.add_subplot()
    ypos = list(range(len(names)))[::-1]

    def label(y: int, x: float, text: str) -> None:
        ax.annotate(
            text, xy=(x, y), xytext=(4, 0), textcoords="offset points", va="center", fontsize=9
        )

    ax.barh(ypos[0], starts[0], color="#999999", height=0.6)
    label(ypos[0], starts[0], f"{starts[0]:.1f}%")
    for k, (y, m, d) in enumerate(zip(ypos[1:-1], sources, deltas, strict=True)):
        ax.barh(y, d, left=starts[k], color=MODALITY_COLOURS[m], height=0.6)
        label(y, max(starts[k], starts[k + 1]), f"{signed_points(d / 100.0)} pts")
    ax.barh(ypos[-1], starts[-1], color="#000000", height=0.6)
    label(ypos[-1], starts[-1], f"{starts[-1]:.1f}%")
    ax.set_yticks(ypos, names, fontsize=10)
    ax.set_xlim(0, max(10.0, 1.3 * max(starts)))
    ax.set_xlabel(f"1-year risk: {outcome} (%)", fontsize=9)
    _style(fig)
    ax.grid(True, axis="x", color="#dddddd", linewidth=0.8)
    ax.grid(False, axis="y")
    return _svg(fig)


def modality_weights_svg(weights: dict[str, float], labels: dict[str, str]) -> bytes:
    """Horizontal bars: the share of each modality in the fused prediction.

    Args:
        weights: modality -> weight (0..1; the weights of one prediction sum to about 1).
        labels: modality -> display label.
    """
    names = list(weights)
    fig = Figure(figsize=(5.6, 0.5 + 0.55 * max(1, len(names))), dpi=100)
    ax = fig.add_subplot()
    values = [100.0 * float(weights[n]) for n in names]
    ypos = list(range(len(names)))[::-1]
    ax.barh(ypos, values, color=[MODALITY_COLOURS.get(n, "#56B4E9") for n in names], height=0.6)
    for y, v in zip(ypos, values, strict=True):
        ax.annotate(
            f"{v:.0f}%",
            xy=(v, y),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=9,
        )
    ax.set_yticks(ypos, [labels.get(n, n) for n in names], fontsize=10)
    ax.set_xlim(0, 100)
    ax.set_xlabel("weight in the fused prediction (%)", fontsize=9)
    _style(fig)
    ax.grid(True, axis="x", color="#dddddd", linewidth=0.8)
    ax.grid(False, axis="y")
    return _svg(fig)
