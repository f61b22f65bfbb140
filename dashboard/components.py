"""Pieces every page uses: figure cards with PNG/SVG export, badges, error boxes, job
progress, result export (JSON/CSV), and the small pure helpers behind them.

Figures are plain Plotly JSON dicts built from what the API returned; nothing here
computes model numbers.
"""
from __future__ import annotations

import csv
import io
import math
from typing import Any, Iterable, Mapping, Sequence

from dash import dcc, html

# Normalised entropy bands (entropy / log n), the analysis engine's (analysis/entropy.py):
# above 0.9 the weight is spread over nearly every slot (diffuse, nothing picked out);
# below 0.1 one slot takes (almost) all of it (sharp).
DIFFUSE_ABOVE = 0.9
SHARP_BELOW = 0.1

# The engine's verdicts (analysis/reliance.py), as a person reads them
VERDICT_TEXT = {
    "functional": "functional: the output needs memory",
    "redundant": "redundant: memory and the bypass each do the task alone; removing both loses it",
    "partial": "partial: memory carries part of the behaviour",
    "decorative": "decorative: memory can be removed",
    "undetermined": "undetermined: the model is too close to chance to measure",
}
VERDICT_COLOURS = {"functional": "#1a9850", "redundant": "#4575b4", "partial": "#fdae61", "decorative": "#d73027",
                   "undetermined": "#969696"}

WEIGHT_SCALE = "Viridis"
# explicit, so Python and plotly.js agree on the direction: blue negative, red positive
DIVERGING = [[0.0, "#2166ac"], [0.25, "#92c5de"], [0.5, "#f7f7f7"], [0.75, "#f4a582"], [1.0, "#b2182b"]]
WEIGHT_FLOOR = 0.05  # weight colour scales and axes reach at least this
FONT = "system-ui, -apple-system, Segoe UI, Roboto, sans-serif"


# -- figures ---------------------------------------------------------------------------------

def graph_config(filename: str) -> dict:
    """Modebar with a PNG camera named after the figure; SVG comes from the card's button
    (a modebar button needs a JS function, which a JSON config cannot carry)."""
    return {
        "displaylogo": False,
        "toImageButtonOptions": {"format": "png", "filename": filename, "scale": 2},
        "modeBarButtonsToRemove": ["lasso2d", "select2d"],
    }


# Figures are plain dicts ({"data": [...], "layout": {...}}), not plotly.graph_objects:
# building and validating Figure objects (and deep-copying their template) costs about
# 100 ms per figure, which the Explore page would pay six times per trace.

AXIS = {"gridcolor": "#e9ecef", "zerolinecolor": "#d5dae0", "linecolor": "#c8ced6", "showline": True,
        "ticks": "outside", "tickcolor": "#c8ced6", "ticklen": 4, "automargin": True}


def figure(data: list, layout: dict) -> dict:
    return {"data": data, "layout": layout}


def base_layout(*, height: int | None = None, title: str | None = None, **extra: Any) -> dict:
    """A layout in the dashboard's style; `extra` is merged in (dicts one level deep)."""
    layout: dict[str, Any] = {
        "font": {"family": FONT, "size": 12, "color": "#2a3038"},
        "margin": {"l": 56, "r": 16, "t": 36 if title else 20, "b": 40},
        "paper_bgcolor": "#ffffff",
        "plot_bgcolor": "#ffffff",
        "hoverlabel": {"font": {"family": "ui-monospace, monospace"}},
        "xaxis": dict(AXIS),
        "yaxis": dict(AXIS),
        "legend": {"orientation": "h", "y": 1.12, "x": 0, "font": {"size": 11}},
    }
    if title:
        layout["title"] = {"text": title, "x": 0.01, "font": {"size": 13}}
    if height:
        layout["height"] = height
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(layout.get(key), Mapping):
            layout[key] = {**layout[key], **value}
        else:
            layout[key] = value
    return layout


def axis(**kw: Any) -> dict:
    return {**AXIS, **kw}


def log_ticks(values: Iterable[Any]) -> dict:
    """Tick values and labels for a log axis over `values`: round numbers (1, 2, 5 times a
    power of ten; every digit where the data spans less than that), labelled briefly.
    Plotly's own picks over a short range are odd values (0.159, 0.294, 0.487) whose
    labels crowd each other."""
    vals = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(float(v)) and float(v) > 0]
    if not vals:
        return {}
    lo, hi = min(vals), max(vals)
    for mantissas in ((1,), (1, 2, 5), (1, 2, 3, 4, 5, 6, 7, 8, 9)):
        ticks = [m * 10.0 ** e for e in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
                 for m in mantissas]
        inside = [t for t in ticks if lo / 1.0001 <= t <= hi * 1.0001]
        if len(inside) >= 3:
            break
    below = [t for t in ticks if t < lo]
    above = [t for t in ticks if t > hi]
    # one round value beyond the data on each side, so the ends carry labels too
    shown = ([below[-1]] if below else []) + inside + ([above[0]] if above else [])
    if len(inside) > 7:  # many decades: every decade only
        shown = [t for t in shown if math.isclose(t / 10.0 ** math.floor(math.log10(t) + 1e-9), 1.0)]
    return {"tickvals": shown, "ticktext": [f"{t:.3g}" for t in shown],
            "range": [math.log10(shown[0]), math.log10(shown[-1])]}


def stack_domains(n: int, gap: float = 0.06, weights: Sequence[float] | None = None) -> list[tuple[float, float]]:
    """Vertical domains for n stacked subplots, top first (paper coordinates)."""
    weights = list(weights or [1.0] * n)
    usable = 1.0 - gap * (n - 1)
    total = sum(weights)
    out, top = [], 1.0
    for w in weights:
        h = usable * w / total
        out.append((max(0.0, top - h), top))
        top -= h + gap
    return out


def subplot_title(text: str, x: float, y: float) -> dict:
    return {"text": text, "x": x, "y": y, "xref": "paper", "yref": "paper", "xanchor": "center",
            "yanchor": "bottom", "showarrow": False, "font": {"size": 11}}


def axis_key(prefix: str, i: int) -> str:
    """("y", 0) -> "yaxis"; ("y", 2) -> "yaxis3" (layout key); trace refs drop "axis"."""
    return f"{prefix}axis{'' if i == 0 else i + 1}"


def axis_ref(prefix: str, i: int) -> str:
    return f"{prefix}{'' if i == 0 else i + 1}"


def empty_figure(message: str = "", height: int = 160) -> dict:
    layout = base_layout(height=height, xaxis={"visible": False}, yaxis={"visible": False})
    if message:
        layout["annotations"] = [{"text": message, "showarrow": False, "x": 0.5, "y": 0.5, "xref": "paper",
                                  "yref": "paper", "font": {"color": "#666"}}]
    return figure([], layout)


def graph_card(graph_id: str, title: str, *, fig: dict | None = None, note: str | None = None,
               filename: str | None = None, hidden: bool = False, graph_style: dict | None = None,
               extra: Any = None) -> html.Div:
    """A titled figure with PNG and SVG buttons (handled in assets/export.js)."""
    filename = filename or graph_id
    return html.Div(
        [
            html.Div(
                [
                    html.H3(title, className="ms-card-title"),
                    html.Div(
                        [
                            html.Button("PNG", className="ms-export-fig", title="download as PNG",
                                        **{"data-graph": graph_id, "data-format": "png", "data-filename": filename}),
                            html.Button("SVG", className="ms-export-fig", title="download as SVG",
                                        **{"data-graph": graph_id, "data-format": "svg", "data-filename": filename}),
                        ],
                        className="ms-card-tools",
                    ),
                ],
                className="ms-card-head",
            ),
            html.P(note, className="ms-note") if note else None,
            extra,
            dcc.Graph(id=graph_id, figure=fig or empty_figure(), config=graph_config(filename), className="ms-graph",
                      style=graph_style or {}),
        ],
        className="ms-card",
        id=f"{graph_id}-card",
        hidden=hidden,
    )


def card_grid(*cards: Any, columns: int = 2, **kw: Any) -> html.Div:
    """Cards side by side (one column on narrow screens; see mnemoscope.css)."""
    return html.Div(list(cards), className=f"ms-grid-{columns}", **kw)


# -- badges, errors, progress -------------------------------------------------------------

def verdict_badge(verdict: str | None, score: float | None = None, ci: Sequence[float] | None = None) -> html.Span:
    if not verdict:
        return html.Span("not analysed", className="ms-badge ms-badge-none", title="no verdict yet: run Analyze")
    text = verdict
    if score is not None:
        text += f" {fmt(score, 2)}"
        if ci and len(ci) == 2 and None not in ci:
            text += f" [{fmt(ci[0], 2)}, {fmt(ci[1], 2)}]"
    return html.Span(text, className=f"ms-badge ms-badge-{verdict}", title=VERDICT_TEXT.get(verdict, verdict))


def warnings_row(report: Mapping[str, Any] | None, element_id: str | None = None) -> html.Ul | None:
    """The verdict's warnings (`report["reliance"]["warnings"]`: collapsed memory, at chance,
    sparse use, ...), one sentence each, where a flat heatmap or a high score needs them;
    nothing when the report has none."""
    reliance = (report or {}).get("reliance") if isinstance(report, Mapping) else None
    warnings = [w for w in ((reliance or {}).get("warnings") or []) if w]
    if not warnings:
        return None
    items = [html.Li(_sentence(w)) for w in warnings]
    return html.Ul(items, className="ms-warnings", role="note", **({"id": element_id} if element_id else {}))


def _sentence(warning: Any) -> str:
    """A warning as text: a sentence, or an object carrying one ("text" or "message")."""
    if isinstance(warning, Mapping):
        return str(warning.get("text") or warning.get("message") or warning.get("code") or warning)
    return str(warning)


def estimate_text(est: Mapping[str, Any] | None) -> str:
    """An engine estimate `{value, ci95}` as `0.77 [0.67, 0.88]`; "-" where the model has no
    such component (a stack with no path parallel to memory has no bypass)."""
    if not isinstance(est, Mapping) or est.get("value") is None:
        return "-"
    lo, hi = (list(est.get("ci95") or []) + [None, None])[:2]
    return f"{fmt(est['value'], 2)} [{fmt(lo, 2)}, {fmt(hi, 2)}]"


def step_runs(steps: Sequence[int]) -> list[tuple[int, int]]:
    """Consecutive steps as ranges: [1, 2, 3, 7] -> [(1, 3), (7, 7)]."""
    out: list[tuple[int, int]] = []
    for s in sorted(set(steps)):
        if out and s == out[-1][1] + 1:
            out[-1] = (out[-1][0], s)
        else:
            out.append((s, s))
    return out


def error_box(message: str | None) -> html.Div | None:
    if not message:
        return None
    return html.Div([html.Strong("Problem: "), html.Span(str(message))], className="ms-error", role="alert")


def info_box(message: str) -> html.Div:
    return html.Div(message, className="ms-info", role="status")


def progress_view(job: Mapping | None) -> html.Div:
    """A progress bar for a job: queued/running with its fraction, or its end state."""
    if not job:
        return html.Div(className="ms-progress ms-progress-idle")
    status = str(job.get("status", "queued"))
    progress = job.get("progress")
    fraction = 1.0 if status == "done" else max(0.0, min(1.0, float(progress or 0.0)))
    label = {"queued": "queued", "running": f"running {fraction:.0%}", "done": "done",
             "failed": "failed", "cancelled": "cancelled"}.get(status, status)
    if job.get("message") and status in ("queued", "running"):
        label += f" - {job['message']}"
    return html.Div(
        [
            html.Div(className="ms-progress-fill", style={"width": f"{fraction * 100:.1f}%"}),
            html.Span(label, className="ms-progress-label"),
        ],
        className=f"ms-progress ms-progress-{status}",
        role="progressbar",
        **{"aria-valuenow": round(fraction * 100), "aria-valuemin": 0, "aria-valuemax": 100, "data-status": status},
    )


def export_buttons(name: str) -> html.Div:
    """JSON and CSV download buttons for the result in store `{"type": "result", "name": name}`
    (the clientside `export` callback in app.py serves both)."""
    return html.Div(
        [
            html.Button("JSON", id={"type": "export-btn", "name": name, "fmt": "json"}, className="ms-btn ms-btn-small",
                        title="download the result as JSON"),
            html.Button("CSV", id={"type": "export-btn", "name": name, "fmt": "csv"}, className="ms-btn ms-btn-small",
                        title="download the result as CSV"),
            dcc.Store(id={"type": "result", "name": name}),
            html.Span(id={"type": "export-sink", "name": name}, hidden=True),
        ],
        className="ms-export",
    )


def export_payload(name: str, result: Any, rows: Sequence[Mapping[str, Any]]) -> dict:
    """What a result store holds: the JSON result and its CSV text, both ready to save."""
    return {"filename": name, "json": result, "csv": to_csv(rows)}


def to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """Rows of flat dicts to CSV; the header is the union of keys in first-seen order."""
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return out.getvalue()


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts to one level with dotted keys; lists of scalars joined with spaces."""
    flat: dict[str, Any] = {}
    if isinstance(value, Mapping):
        for k, v in value.items():
            flat.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(value, (list, tuple)):
        if all(not isinstance(v, (Mapping, list, tuple)) for v in value):
            flat[prefix] = " ".join("" if v is None else str(v) for v in value)
        else:
            for i, v in enumerate(value):
                flat.update(flatten(v, f"{prefix}.{i}" if prefix else str(i)))
    else:
        flat[prefix or "value"] = value
    return flat


# -- numbers -------------------------------------------------------------------------------

def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(x):
        return "n/a"
    if x != 0 and (abs(x) < 10 ** -digits or abs(x) >= 10 ** 6):
        return f"{x:.{digits}g}" if abs(x) >= 10 ** 6 else f"{x:.2e}"
    text = f"{x:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text  # never "-0.00"


def fmt_bytes(n: Any) -> str:
    try:
        n = float(n)
    except (TypeError, ValueError):
        return "n/a"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def mean(values: Iterable[float | None]) -> float | None:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(vals) / len(vals) if vals else None


def get_path(obj: Any, *paths: str, default: Any = None) -> Any:
    """The first of several dotted paths that exists in nested dicts: results from
    different analyses name the same thing slightly differently."""
    for path in paths:
        cur = obj
        ok = True
        for part in path.split("."):
            if isinstance(cur, Mapping) and part in cur:
                cur = cur[part]
            elif isinstance(cur, (list, tuple)) and part.isdigit() and int(part) < len(cur):
                cur = cur[int(part)]
            else:
                ok = False
                break
        if ok and cur is not None:
            return cur
    return default
