"""The timeline of a fleet's change record: every store's window on one clock, drawn with matplotlib (SVG, PNG).

One row per store of the fleet, in the order the fleet started them (grouped by wave, the canary first). The
x axis is the fleet's clock from its first disconnect (record["clock"]: simulated seconds in a rehearsal).
Each row's band is the store's states as its journal moved it; on it, each mark is one journal event of the
store's run (its SVG group is `mark-RUN_ID-SEQ`), without a label (the legend names the kinds; the store's
own report labels each). A red tick is where the store's budget ran out, a grey one its floor. The shaded
columns are the health gates between waves. A store the fleet never started says so on its row.

As timeline.py: matplotlib's object API only (no pyplot), the Agg renderer, text drawn as paths.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from migrator.engine.budget import duration
from migrator.report.timeline import DPI, FONT, MARK_STYLES, STATE_COLOURS, WIDTH_IN, _step, svg_and_png

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

ROW_IN = 0.34
MARKED = ("call", "seen", "state", "round_trip", "failure", "interruption", "control")


def clock_label(record: dict[str, Any]) -> str:
    clock = record["clock"]
    if clock["clock"] == "simulated":
        return (f"simulated seconds from the fleet's first disconnect (rehearsal clock: {clock['time_scale']:g} "
                "simulated seconds per real second)")
    return "seconds from the fleet's first disconnect (wall clock)"


def render(record: dict[str, Any]) -> tuple[bytes, bytes]:
    """(SVG, PNG) of every store's window in the fleet record."""
    import matplotlib
    from matplotlib.figure import Figure

    rows = record["stores"]
    with matplotlib.rc_context({"svg.hashsalt": "xksmigrate-fleet-report", "svg.fonttype": "path",
                                "font.size": FONT, "font.family": "DejaVu Sans"}):
        fig = Figure(figsize=(WIDTH_IN, 1.9 + ROW_IN * max(len(rows), 1)), dpi=DPI, layout="constrained")
        ax = fig.add_subplot()
        if not any(r.get("timeline") for r in rows):
            ax.set_axis_off()
            ax.text(0.5, 0.5, f"fleet {record['fleet']['id']}: {record['fleet']['outcome']}: no store was "
                    "disconnected, so there is no window to draw", ha="center", va="center")
        else:
            _draw(ax, record)
            _legend(fig, record)
        fleet = record["fleet"]
        fig.suptitle(f"xksmigrate fleet {fleet['id']}: {fleet['outcome']} ({record['close']['label']}); "
                     f"longest window {_dur(fleet.get('longest_window_seconds'))}", fontsize=FONT + 2.5)
        return svg_and_png(fig)


def _right(record: dict[str, Any]) -> float:
    values = [1.0]
    for row in record["stores"]:
        w = row.get("timeline")
        if w:
            values += [v for v in (w["end_t"], w["budget_end_t"], w["floor_end_t"]) if v is not None]
            values += [m["t"] for m in w["marks"]]
    values += [g["ended_t"] for g in record["gates"] if g.get("ended_t") is not None]
    return max(values) * 1.03


def _draw(ax: Axes, record: dict[str, Any]) -> None:
    from matplotlib.ticker import FuncFormatter, MultipleLocator

    rows = record["stores"]
    right = _right(record)
    left = -right * 0.01
    ax.set_xlim(left, right)
    ax.set_ylim(len(rows) - 0.4, -0.8)  # the first store at the top
    ax.set_yticks(range(len(rows)),
                  [f"w{r['wave']} {r['ref']} ({r['account_id']} {r['region']})" for r in rows], fontsize=FONT - 0.5)
    for side in ("right", "top"):
        ax.spines[side].set_visible(False)
    for gate in record["gates"]:
        if gate.get("started_t") is None:
            continue
        colour = "#2b9348" if gate.get("ok") else "#c1121f"
        ax.axvspan(gate["started_t"], max(gate["ended_t"], gate["started_t"] + right * 0.002), color=colour,
                   alpha=0.18, linewidth=0, gid=f"gate-{gate['wave']}")
        ax.text(gate["started_t"], -0.55, f" gate {gate['wave']} {'ok' if gate.get('ok') else 'failed'}",
                color=colour, fontsize=FONT - 0.5, va="center", ha="left")
    previous_wave = None
    for y, row in enumerate(rows):
        if previous_wave is not None and row["wave"] != previous_wave:
            ax.axhline(y - 0.5, color="#dee2e6", linewidth=0.6, zorder=0)
        previous_wave = row["wave"]
        _row(ax, y, row, right - left)
    ax.xaxis.set_major_locator(MultipleLocator(_step(right - left)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: _dur(v) if v >= 0 else ""))
    ax.set_xlabel(clock_label(record))


def _row(ax: Axes, y: int, row: dict[str, Any], width: float) -> None:
    w = row.get("timeline")
    if not w:
        said = "not started" if row["outcome"] == "not_started" else f"{row['outcome']}: never disconnected"
        ax.text(0, y, f" {said}", va="center", ha="left", fontsize=FONT - 0.5, color="#6c757d")
        return
    for span in w["spans"]:
        ax.broken_barh([(span["from_t"], max(span["to_t"] - span["from_t"], 0.0))], (y - 0.3, 0.6),
                       facecolors=STATE_COLOURS.get(span["state"], "#adb5bd"), edgecolor="white", linewidth=0.3)
    for gap in w["gaps"]:
        ax.broken_barh([(gap["from_t"], max(gap["to_t"] - gap["from_t"], 0.0))], (y - 0.4, 0.8),
                       facecolors="#ffccd5", edgecolor="#c9184a", hatch="///", alpha=0.6, linewidth=0.4)
    for end, colour in ((w["budget_end_t"], "#c1121f"), (w["floor_end_t"], "#6c757d")):
        if end is not None:
            ax.plot([end, end], [y - 0.42, y + 0.42], color=colour, linewidth=1.2, zorder=2)
    for mark in w["marks"]:
        if mark["kind"] not in MARKED:
            continue
        style = dict(MARK_STYLES[mark["kind"]])
        style.update(markersize=style["markersize"] * 0.75, markeredgecolor="white", markeredgewidth=0.4)
        if mark["phase"] == "rollback" and mark["kind"] in ("call", "state"):
            style["color"] = "#d62828"
        ax.plot([mark["t"]], [y], linestyle="none", zorder=3, gid=f"mark-{row['run_id']}-{mark['seq']}", **style)
    text = f"{row['outcome']} {_dur(row.get('window_seconds'))}" + (" (open)" if w["open"] else "")
    ax.text(w["end_t"] + width * 0.004, y, text, va="center", ha="left", fontsize=FONT - 1, color="#343a40")


def _dur(seconds: float | None) -> str:
    return "-" if seconds is None else duration(float(seconds))


def _legend(fig: Figure, record: dict[str, Any]) -> None:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    from migrator.report.timeline import KIND_NAMES

    kinds = {m["kind"] for r in record["stores"] if r.get("timeline") for m in r["timeline"]["marks"]}
    handles: list[Any] = [Line2D([], [], linestyle="none", label=KIND_NAMES[k], **s)
                          for k, s in MARK_STYLES.items() if k in kinds and k in MARKED]
    handles += [Line2D([], [], color="#c1121f", marker="|", linestyle="none", markersize=9,
                       label="the store's budget runs out"),
                Line2D([], [], color="#6c757d", marker="|", linestyle="none", markersize=9,
                       label="its floor (AWS: disconnect + connect + a poll)")]
    if record["gates"]:
        handles.append(Patch(facecolor="#2b9348", alpha=0.3, label="health gate between waves"))
    if any(r["timeline"]["gaps"] for r in record["stores"] if r.get("timeline")):
        handles.append(Patch(facecolor="#ffccd5", edgecolor="#c9184a", hatch="///", label="no runner"))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 5), fontsize=FONT, frameon=False)
