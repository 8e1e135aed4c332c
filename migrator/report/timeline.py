"""The timeline picture of a change record: each key store's window, drawn with matplotlib (SVG and PNG).

One row per store that was disconnected. The x axis is the run's clock from the disconnect: simulated
seconds in a rehearsal (its events' real instants converted with the run's time scale, as the summary
converts the window), seconds of the wall clock otherwise; the top axis gives the real instant (UTC). The
band shows the store's states as the journal moved it; above it, each mark is one journal event (its
SVG group is `mark-SEQ`), and the vertical lines are the budget in force, the floor (AWS's own disconnect
plus connect, and one poll) and the end of the window. Stretches with no runner are hatched.

matplotlib is imported here only, lazily (`render`), through its object API (no pyplot: no global backend
or figure state); the Agg renderer draws offline. Text is drawn as paths: the SVG needs no font.
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from migrator.engine.budget import duration

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

WIDTH_IN = 12.0
DPI = 110
FONT = 7.5
CHAR_IN = 0.058  # the width of one character of FONT points, on average (label placement)
MAX_LEVELS = 9
STATE_COLOURS = {"disconnecting": "#f4a261", "disconnected": "#e76f51", "updating": "#e9c46a",
                 "updated": "#f1d58a", "connecting": "#8ab17d", "connected": "#2a9d8f", "verifying": "#90be6d",
                 "rolling_back": "#d62828"}
MARK_STYLES: dict[str, dict[str, Any]] = {
    "call": {"marker": "^", "color": "#222222", "markersize": 6},
    "seen": {"marker": "o", "color": "#1d4e89", "markersize": 5.5},
    "state": {"marker": "s", "color": "#2b9348", "markersize": 6},
    "round_trip": {"marker": "D", "color": "#2b9348", "markersize": 3.5},
    "failure": {"marker": "X", "color": "#c1121f", "markersize": 7},
    "interruption": {"marker": "X", "color": "#9d0208", "markersize": 8},
    "control": {"marker": "P", "color": "#6a4c93", "markersize": 7},
    "hook": {"marker": "h", "color": "#6c757d", "markersize": 5.5},
}
KIND_NAMES = {"call": "AWS call", "seen": "state seen (DescribeCustomKeyStores)", "state": "step of the machine",
              "round_trip": "Encrypt+Decrypt round trip", "failure": "failure",
              "interruption": "interruption / takeover", "control": "operator control", "hook": "hook"}


def clock_label(window: dict[str, Any]) -> str:
    """What the x axis measures, said plainly."""
    if window["clock"] == "simulated":
        return (f"simulated seconds from the disconnect (rehearsal clock: {window['time_scale']:g} simulated "
                "seconds per real second)")
    return "seconds from the disconnect (wall clock)"


def render(record: dict[str, Any]) -> tuple[bytes, bytes]:
    """(SVG, PNG) of the record's windows."""
    import matplotlib
    from matplotlib.figure import Figure

    windows = [(ks, ks["window"]) for ks in record["keystores"] if ks.get("window")]
    heights = [1.9 + 0.3 * _levels(w)[1] for _, w in windows] or [1.6]
    with matplotlib.rc_context({"svg.hashsalt": "xksmigrate-report", "svg.fonttype": "path", "font.size": FONT,
                                "axes.titlesize": FONT + 1.5, "font.family": "DejaVu Sans"}):
        fig = Figure(figsize=(WIDTH_IN, sum(heights) + 0.9), dpi=DPI, layout="constrained")
        if not windows:
            ax = fig.add_subplot()
            ax.set_axis_off()
            ax.text(0.5, 0.5, f"run {record['run']['id']}: {record['run']['outcome']}: no key store was "
                    "disconnected, so there is no window to draw", ha="center", va="center")
        else:
            axes = fig.subplots(len(windows), 1, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
            for ax, (ks, w) in zip(axes, windows, strict=True):
                _draw(ax, ks, w)
            _legend(fig, [w for _, w in windows])
        fig.suptitle(f"xksmigrate run {record['run']['id']}: {record['run']['outcome']} "
                     f"({record['close']['label']})", fontsize=FONT + 2.5)
        return svg_and_png(fig)


def svg_and_png(fig: Figure) -> tuple[bytes, bytes]:
    """The figure as SVG and PNG, with no date or software stamp (the same record draws the same bytes)."""
    svg, png = io.BytesIO(), io.BytesIO()
    fig.savefig(svg, format="svg", metadata={"Date": None})
    fig.savefig(png, format="png", metadata={"Software": None})
    return svg.getvalue(), png.getvalue()


def _levels(window: dict[str, Any]) -> tuple[list[int], int]:
    """A row above the band for each labelled mark, so that no two labels overlap (greedy, left to right);
    round trips sit on the band, unlabelled (-1). Also the number of rows."""
    left, right = _limits(window)
    ends: list[float] = []
    levels: list[int] = []
    for mark in window["marks"]:
        if mark["kind"] == "round_trip":
            levels.append(-1)
            continue
        start, end, _ = _extent(mark, left, right)
        level = next((i for i, e in enumerate(ends) if start > e), None)
        if level is None and len(ends) < MAX_LEVELS:
            ends.append(end)
            level = len(ends) - 1
        elif level is None:
            level = min(range(len(ends)), key=lambda i: ends[i])
        ends[level] = end
        levels.append(level)
    return levels, max(len(ends), 1)


def _extent(mark: dict[str, Any], left: float, right: float) -> tuple[float, float, bool]:
    """Where a mark's label lies in data units, and whether it is flipped to the left (it would pass the edge)."""
    width = (len(mark["label"]) * CHAR_IN + 0.2) * (right - left) / (WIDTH_IN - 1.4)
    flip = mark["t"] + width > right
    return (mark["t"] - width, mark["t"], True) if flip else (mark["t"], mark["t"] + width, False)


def _limits(window: dict[str, Any]) -> tuple[float, float]:
    values = [window["end_t"], *(m["t"] for m in window["marks"])]
    values += [v for v in (window.get("budget_seconds"), window.get("floor_seconds")) if v is not None]
    right = max(max(values) * 1.04, 1.0)
    return min(0.0, *(m["t"] for m in window["marks"])) - right * 0.01, right


def _draw(ax: Axes, ks: dict[str, Any], w: dict[str, Any]) -> None:
    from matplotlib.ticker import FuncFormatter, MultipleLocator

    left, right = _limits(w)
    levels, count = _levels(w)
    ax.set_xlim(left, right)
    ax.set_ylim(-1.25, count + 0.6)
    ax.set_yticks([])
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    for span in w["spans"]:
        ax.broken_barh([(span["from_t"], max(span["to_t"] - span["from_t"], 0.0))], (-0.75, 0.5),
                       facecolors=STATE_COLOURS.get(span["state"], "#adb5bd"), edgecolor="white", linewidth=0.5)
        if (span["to_t"] - span["from_t"]) > (right - left) * 0.07:
            ax.text((span["from_t"] + span["to_t"]) / 2, -0.5, span["state"], ha="center", va="center",
                    fontsize=FONT - 0.5, color="#1b1b1b")
    for gap in w["gaps"]:
        ax.axvspan(gap["from_t"], gap["to_t"], facecolor="#ffccd5", edgecolor="#c9184a", hatch="///", alpha=0.45,
                   linewidth=0.6, gid=f"gap-{gap['from_t']:g}")
        ax.text((gap["from_t"] + gap["to_t"]) / 2, (count - 0.25) / 2,
                f"no runner {duration(gap['to_t'] - gap['from_t'])}", rotation=90, ha="center", va="center",
                fontsize=FONT - 0.5, color="#9d0208")
    simulated = w["clock"] == "simulated"
    _line(ax, w.get("budget_seconds"), f"budget {_dur(w.get('budget_seconds'))}", "#c1121f", "--", count)
    _line(ax, w.get("floor_seconds"), f"floor {_dur(w.get('floor_seconds'))}", "#6c757d", ":", count)
    if not w["open"]:
        _line(ax, w["end_t"], f"window {_dur(w['end_t'])}", "#2b9348", "-", count, above=False)
    else:
        ax.plot([w["end_t"]], [-0.5], marker=">", color="#c1121f", markersize=7, linestyle="none", zorder=3)
        ax.text(w["end_t"], -1.02, "window still open at the journal's last record ", ha="right", va="center",
                fontsize=FONT, color="#c1121f")
    for mark, level in zip(w["marks"], levels, strict=True):
        style = MARK_STYLES.get(mark["kind"], MARK_STYLES["call"])
        if mark["phase"] == "rollback" and mark["kind"] in ("call", "state"):
            style = {**style, "color": "#d62828"}
        y = -0.25 if level < 0 else level + 0.25
        if level >= 0:
            ax.plot([mark["t"], mark["t"]], [-0.25, y], color="#adb5bd", linewidth=0.6, zorder=1)
        ax.plot([mark["t"]], [y], linestyle="none", zorder=3, gid=f"mark-{mark['seq']}", **style)
        if level >= 0:
            flip = _extent(mark, left, right)[2]
            ax.annotate(mark["label"], (mark["t"], y), xytext=(-5 if flip else 5, 0), textcoords="offset points",
                        ha="right" if flip else "left", va="center", fontsize=FONT)
    ax.xaxis.set_major_locator(MultipleLocator(_step(right - left)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: _dur(v) if v >= 0 else ""))
    ax.set_xlabel(clock_label(w))
    _real_axis(ax, w)
    state = ks.get("outcome") or ks.get("state")
    over = ks.get("over_budget_seconds") or 0
    so_far = "open for " if w["open"] else ""
    ax.set_title(f"{ks.get('id') or ks.get('ref')} ({ks.get('region') or ''}): {state}; window {so_far}"
                 f"{_dur(w.get('window_seconds'))}{' simulated' if simulated else ''} of a "
                 f"{_dur(w.get('budget_seconds'))} budget" + (f", over by {_dur(over)}" if over else "")
                 + (" so far" if w["open"] else ""), loc="left")


def _line(ax: Axes, at: float | None, label: str, colour: str, style: str, count: int, above: bool = True) -> None:
    """A vertical line across the row, labelled beside it (on its left near the right edge)."""
    if at is None:
        return
    ax.axvline(at, color=colour, linestyle=style, linewidth=1.1, zorder=2)
    left, right = ax.get_xlim()
    near_edge = at > left + 0.85 * (right - left)
    ax.text(at, count + 0.35 if above else -1.02, f"{label} " if near_edge else f" {label}", color=colour,
            fontsize=FONT, va="center", ha="right" if near_edge else "left")


def _step(span: float) -> float:
    """A tick step of whole seconds or minutes that gives about eight ticks over `span`."""
    steps = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400)
    return float(next((s for s in steps if span / s <= 9), steps[-1]))


def _real_axis(ax: Axes, w: dict[str, Any]) -> None:
    """The top axis: the real instant (UTC) of each point of the window."""
    from matplotlib.ticker import FuncFormatter

    origin, scale = float(w["origin_at"]), float(w["time_scale"])

    def to_real(t: Any) -> Any:
        return t / scale

    def from_real(r: Any) -> Any:
        return r * scale

    top = ax.secondary_xaxis("top", functions=(to_real, from_real))
    span = (ax.get_xlim()[1] - ax.get_xlim()[0]) / scale
    top.xaxis.set_major_formatter(FuncFormatter(lambda r, _pos: _utc(origin + r, tenths=span < 30)))
    top.set_xlabel("real time (UTC)", fontsize=FONT)


def _utc(at: float, tenths: bool) -> str:
    text = time.strftime("%H:%M:%S", time.gmtime(at))
    return f"{text}.{int((at % 1) * 10)}" if tenths else text


def _dur(seconds: float | None) -> str:
    return "-" if seconds is None else duration(float(seconds))


def _legend(fig: Any, windows: Sequence[dict[str, Any]]) -> None:
    """The marks, lines and hatching the picture uses (only those)."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    kinds = {m["kind"] for w in windows for m in w["marks"]}
    handles: list[Any] = [Line2D([], [], linestyle="none", label=KIND_NAMES[k], **s)
                          for k, s in MARK_STYLES.items() if k in kinds]
    if any(m["phase"] == "rollback" for w in windows for m in w["marks"]):
        handles.append(Line2D([], [], linestyle="none", marker="^", color="#d62828", label="the rollback's call"))
    if any(w["gaps"] for w in windows):
        handles.append(Patch(facecolor="#ffccd5", edgecolor="#c9184a", hatch="///", label="no runner"))
    handles += [Line2D([], [], color="#c1121f", linestyle="--", label="budget"),
                Line2D([], [], color="#6c757d", linestyle=":", label="floor (AWS: disconnect + connect + a poll)")]
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), fontsize=FONT,
               frameon=False)
