"""Ablate: replace chosen sites (zero, mean or resample) at chosen timesteps and see what
the task metric and the outputs lose, next to the checkpoint's reliance verdict.

A layered model (sites `layers.{i}.<kind>.out`: Hugging Face hybrids, sequence stacks) also gets a
Layers picker: one layer's mixer, or every layer of one kind ("all attention layers"), each
choice a site name or a glob the server expands, added to the chosen sites.

A run starts two jobs: the ablation asked for, and the checkpoint's report (the verdict:
every memory read resample-ablated, with a bootstrap interval), which the server answers
from its stored result when it has run before.
"""
from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

from dash import Input, Output, State, dcc, html

from ..api import ApiError
from ..components import (axis, base_layout, empty_figure, estimate_text, export_payload, figure, flatten, fmt,
                          get_path, step_runs, verdict_badge, warnings_row)
from . import jobpage
from .common import field, parse_timesteps, split_list
from .jobpage import FigureCard

PATH = "ablate"
TITLE = "Ablate"
MODES = [("zero", "zero"), ("mean", "mean (over sequences, per step)"), ("resample", "resample (another input's value)")]


def controls(params: Mapping[str, str]) -> list[list]:
    return [
        [jobpage.sites_field(PAGE, params, "memory reads")],
        [field("Mode", dcc.RadioItems(id="ablate-mode", options=[{"label": l, "value": v} for v, l in MODES],
                                      value=params.get("mode") or "resample", inline=True, className="ms-radio")),
         field("Timesteps", dcc.Input(id="ablate-steps", type="text", value=params.get("steps") or "all",
                                      placeholder="all, or 3-7, 12", debounce=True,
                                      className="ms-input ms-input-steps"))],
        [field("Layers", dcc.Dropdown(id="ablate-layers", multi=True, value=split_list(params.get("layers")),
                                      options=[{"label": v, "value": v} for v in split_list(params.get("layers"))],
                                      placeholder="one layer, or every layer of a kind (layered models)",
                                      className="ms-dropdown"))],
    ]


LAYER_SITE = re.compile(r"^layers\.(\d+)\.(.+)\.out$")
LAYER_ROLES = ("memory", "bypass")  # a layer's mixer: the reliance design's two paths (MLPs are in series)


def layer_options(specs: Sequence[Mapping[str, Any]]) -> list[dict]:
    """The Layers picker's choices for a model's sites: every layer of one kind (a glob the server
    expands, "layers.*.attention.out"), then each layer's mixer on its own; [] for a model without
    per-layer sites."""
    parts = []
    for spec in specs:
        match = LAYER_SITE.match(str(spec.get("name") or ""))
        if match and spec.get("role") in LAYER_ROLES:
            parts.append((int(match.group(1)), match.group(2), spec["role"], spec["name"]))
    kinds: dict[str, list] = {}
    for layer, kind, role, _ in parts:
        kinds.setdefault(kind, []).append((layer, role))
    every = [{"label": f"all {kind} layers ({'memory' if found[0][1] == 'memory' else 'not memory'}: "
                       f"{', '.join(str(layer) for layer, _ in found)})",
              "value": f"layers.*.{kind}.out"} for kind, found in kinds.items()]
    one = [{"label": f"layer {layer} · {kind} ({'memory' if role == 'memory' else 'not memory'})", "value": name}
           for layer, kind, role, name in sorted(parts)]
    return every + one if parts else []


def load_layers(api, checkpoint_id: str | None, current: Sequence[str] | None) -> tuple[list[dict], list[str]]:
    """(Layers options, the current choices that still fit) for a checkpoint."""
    if not checkpoint_id:
        return [], []
    try:
        options = layer_options(api.sites(checkpoint_id))
    except ApiError:
        return [], []
    values = {o["value"] for o in options}
    return options, [v for v in current or [] if v in values]


def register_layers(app, context) -> None:
    @app.callback(
        Output("ablate-layers", "options"),
        Output("ablate-layers", "value"),
        Input(PAGE.id("checkpoint"), "value"),
        State("ablate-layers", "value"),
        State("token-input", "value"),
    )
    def _layers(checkpoint_id, current, token):
        with context.client(token) as api:
            return load_layers(api, checkpoint_id, current)


def ablation_body(kinds: Sequence[Mapping], sites: Sequence[str] | None, mode: str | None, steps_text: str | None,
                  samples: Any, seed: Any, layers: Sequence[str] | None = None) -> dict:
    """The POST body for one ablation, within the server's limits (`kinds`); ValueError
    names the field at fault. `layers`: the Layers picker's choices, added to the sites."""
    sites = [*(sites or []), *[v for v in layers or [] if v not in (sites or [])]]
    if not sites:
        raise ValueError("choose at least one site or layer to ablate")
    if mode not in {m for m, _ in MODES}:
        raise ValueError(f"mode must be one of {', '.join(m for m, _ in MODES)}")
    steps = parse_timesteps(steps_text)
    return {
        "samples": PAGE.number("samples").parse(kinds, samples),
        "seed": PAGE.number("seed").parse(kinds, seed),
        "specs": [{"sites": list(sites), "mode": mode, "steps": steps}],
    }


UNSCORED_FILL = "rgba(120,120,120,0.14)"
ABLATED_FILL = "rgba(230,126,34,0.85)"


def scored_series(a: Mapping[str, Any], key: str) -> tuple[list, bool]:
    """The engine's per-step `key` over scored positions (`<key>` with `_scored` before
    `_per_step`), and True; results stored before the engine sent those fall back to the
    means over every position, and False."""
    scored = a.get(key.replace("_per_step", "_scored_per_step"))
    if isinstance(scored, list) and scored:
        return scored, True
    return list(a.get(key) or []), False


def unscored_steps(a: Mapping[str, Any]) -> list[int]:
    return [t for t, n in enumerate(a.get("scored_per_step") or []) if not n]


def step_shapes(a: Mapping[str, Any], steps: Sequence[int] | None, T: int) -> list[dict]:
    """Orange, a strip along the top edge: the ablated timesteps (every one for "all");
    grey, full height: steps where nothing is scored, so no value is drawn there. (The
    strip keeps the two apart where MQAR scores every other step.)"""
    ablated = step_runs(steps) if steps is not None else [(0, T - 1)] if T else []
    band = {"type": "rect", "xref": "x", "yref": "paper", "y0": 0, "y1": 1, "line": {"width": 0}, "layer": "below"}
    return ([{**band, "x0": lo - 0.5, "x1": hi + 0.5, "y0": 1.0, "y1": 1.035, "fillcolor": ABLATED_FILL,
              "layer": "above", "name": "ablated"} for lo, hi in ablated]
            + [{**band, "x0": lo - 0.5, "x1": hi + 0.5, "fillcolor": UNSCORED_FILL, "name": "unscored"}
               for lo, hi in step_runs(unscored_steps(a))])


def shading_legend(a: Mapping[str, Any], steps: Sequence[int] | None) -> list[dict]:
    """A line above the plot saying what the bands are."""
    text = "orange strip: ablated " + ("(all timesteps)" if steps is None else "timesteps")
    if unscored_steps(a):
        text += " · grey: no scored position, left out"
    return [{"text": text, "xref": "paper", "yref": "paper", "x": 0, "y": 1.045, "xanchor": "left", "yanchor": "bottom",
             "showarrow": False, "font": {"size": 10, "color": "#6b7480"}}]


def metric_figure(a: Mapping[str, Any], steps: Sequence[int] | None) -> dict:
    clean, scored = scored_series(a, "metric_clean_per_step")
    ablated, _ = scored_series(a, "metric_per_step")
    if not (clean or ablated):
        return empty_figure("this result has no per-step metric")
    name = a.get("metric_name") or "metric"
    T = max(len(clean), len(ablated))
    data = [
        {"type": "scatter", "x": list(range(len(clean))), "y": clean, "name": "clean", "mode": "lines+markers",
         "line": {"color": "#2c7fb8"}, "connectgaps": True,
         "hovertemplate": "t=%{x}<br>%{y:.4f}<extra>clean</extra>"},
        {"type": "scatter", "x": list(range(len(ablated))), "y": ablated, "name": "ablated", "mode": "lines+markers",
         "line": {"color": "#d7301f", "dash": "dash"}, "connectgaps": True,
         "hovertemplate": "t=%{x}<br>%{y:.4f}<extra>ablated</extra>"},
    ]
    over = "scored positions" if scored else "every position"
    layout = base_layout(height=340, shapes=step_shapes(a, steps, T), annotations=shading_legend(a, steps),
                         margin={"t": 48},
                         legend={"orientation": "h", "y": -0.22, "yanchor": "top"},
                         xaxis={"title": {"text": "timestep"}, "range": [-0.5, max(T, 1) - 0.5]},
                         yaxis={"title": {"text": f"{name} (mean over {over})"}, "rangemode": "tozero"})
    return figure(data, layout)


def change_figure(a: Mapping[str, Any], steps: Sequence[int] | None = None) -> dict:
    dp, scored = scored_series(a, "prob_change_per_step")
    flips, _ = scored_series(a, "flip_rate_per_step")
    kl, _ = scored_series(a, "kl_per_step")
    if not (dp or flips):
        return empty_figure("this result has no per-step output change")
    T = max(len(dp), len(flips))
    over = "scored positions" if scored else "every position"
    data = [
        {"type": "bar", "x": list(range(len(dp))), "y": dp, "name": "mean |Δp|", "marker": {"color": "#8856a7"},
         "customdata": kl, "hovertemplate": "t=%{x}<br>|Δp| %{y:.4f}<br>KL %{customdata:.4g}<extra></extra>"},
        {"type": "scatter", "x": list(range(len(flips))), "y": flips, "name": "flipped", "mode": "lines+markers",
         "yaxis": "y2", "line": {"color": "#e6550d"}, "connectgaps": True,
         "hovertemplate": "t=%{x}<br>%{y:.1%} flipped<extra></extra>"},
    ]
    layout = base_layout(height=340, shapes=step_shapes(a, steps, T), annotations=shading_legend(a, steps),
                         margin={"t": 48, "r": 64}, legend={"orientation": "h", "y": -0.22, "yanchor": "top"},
                         xaxis={"title": {"text": "timestep"}, "range": [-0.5, max(T, 1) - 0.5]},
                         yaxis={"title": {"text": f"mean |Δp| over {over}"}, "rangemode": "tozero"},
                         yaxis2=axis(title={"text": "share flipped"}, overlaying="y", side="right", range=[0, 1],
                                     tickformat=".0%", dtick=0.25, showgrid=False))
    return figure(data, layout)


def verdict_panel(reliance: Mapping[str, Any] | None, note: str | None = None) -> html.Div:
    if not reliance:
        return html.Div(note or "", className="ms-note")
    ci = reliance.get("ci95") or [None, None]
    return html.Div(
        [
            html.Div(
                [
                    html.Span("Memory reliance", className="ms-verdict-title"),
                    verdict_badge(reliance.get("verdict")),
                    html.Span(f"score {fmt(reliance.get('score'), 2)}", className="ms-verdict-score",
                              id="ablate-reliance-score"),
                    html.Span(f"95% CI [{fmt(ci[0], 2)}, {fmt(ci[1], 2)}]", className="ms-verdict-ci"),
                ],
                className="ms-verdict-head",
            ),
            html.P("The checkpoint's report: the score is memory's necessity, the share of the gap between the "
                   "clean metric and chance lost when every memory site is mean-ablated; the table removes each "
                   "component in turn (necessity) or keeps it alone (sufficiency).", className="ms-note"),
            design_table(reliance),
            warnings_row({"reliance": reliance}),
            html.Ul([html.Li(line) for line in reliance.get("evidence") or []], className="ms-evidence"),
        ],
        className="ms-verdict",
        **{"data-verdict": reliance.get("verdict") or ""},
    )


def design_table(reliance: Mapping[str, Any]) -> html.Table | None:
    """The factorial design with its 95% intervals: each component (memory, the bypass
    parallel to it, the controller's state) removed and kept alone; both removed; the
    share of positions that need memory; how stable the verdict is."""
    comps = reliance.get("components") or {}
    if not comps:
        return None
    head = html.Tr([html.Th(""), html.Th("necessity (removed: gap lost)"), html.Th("sufficiency (alone: gap kept)")])
    rows = [html.Tr([html.Th(name), html.Td(estimate_text((comps.get(name) or {}).get("necessity"))),
                     html.Td(estimate_text((comps.get(name) or {}).get("sufficiency")))])
            for name in ("memory", "bypass", "state")]
    extra = [("memory and bypass removed", estimate_text(reliance.get("joint_necessity"))),
             ("positions that need memory", estimate_text(reliance.get("per_position"))),
             ("verdict stability", f"{fmt(100 * reliance['stability'], 0)}% of bootstrap samples"
              if reliance.get("stability") is not None else "-")]
    rows += [html.Tr([html.Th(k), html.Td(v, colSpan=2)]) for k, v in extra]
    return html.Table([html.Thead(head), html.Tbody(rows)], className="ms-table ms-table-compact",
                      id="ablate-design")


def summary_table(a: Mapping[str, Any]) -> html.Table:
    name = a.get("metric_name") or "metric"
    rows = [
        ("ablation", a.get("label") or ", ".join(get_path(a, "spec.sites", default=[]))),
        (f"{name} clean → ablated", f"{fmt(a.get('metric_clean'), 4)} → {fmt(a.get('metric'), 4)} "
                                    f"({'+' if (a.get('metric_delta') or 0) >= 0 else ''}{fmt(a.get('metric_delta'), 4)})"),
        ("loss clean → ablated", f"{fmt(a.get('loss_clean'), 4)} → {fmt(a.get('loss'), 4)}"),
        ("output change", f"mean |Δp| {fmt(a.get('prob_change'), 4)} · KL {fmt(a.get('kl'), 4)} · "
                          f"{fmt(100 * a['flip_rate'], 1) if a.get('flip_rate') is not None else 'n/a'}% flipped"),
    ]
    return html.Table(html.Tbody([html.Tr([html.Th(k), html.Td(v)]) for k, v in rows]), className="ms-kv")


def result_view(results: Mapping[str, Any], body: Mapping[str, Any] | None) -> dict:
    """Figures and panels from the finished jobs' results."""
    data = results.get("ablation")
    a = data[0] if isinstance(data, list) and data else data if isinstance(data, Mapping) else {}
    report = results.get("report") or {}
    reliance = report.get("reliance") if isinstance(report, Mapping) else None
    steps = get_path(body or {}, "specs.0.steps")
    columns = {"metric_clean": "metric_clean_per_step", "metric_ablated": "metric_per_step",
               "prob_change": "prob_change_per_step", "flip_rate": "flip_rate_per_step", "kl": "kl_per_step"}
    series = {name: scored_series(a, key)[0] for name, key in columns.items()}
    scored = a.get("scored_per_step") or []
    rows = [{"t": t, **{name: values[t] if t < len(values) else None for name, values in series.items()},
             "scored_positions": scored[t] if t < len(scored) else None}
            for t in range(max((len(v) for v in series.values()), default=0))]
    return {
        "metric": metric_figure(a, steps),
        "change": change_figure(a, steps),
        "summary": summary_table(a) if a else None,
        "verdict": verdict_panel(reliance, None if reliance else "no reliance verdict in the report"),
        "export": export_payload("ablation", {"ablation": a, "reliance": reliance},
                                 rows or [flatten({"ablation": a, "reliance": reliance})]),
    }


def submit(page: jobpage.JobPage, kinds: Sequence[Mapping], checkpoint_id: str, sites, mode, steps, layers, samples,
           seed) -> tuple[dict, dict]:
    """Two jobs: the ablation asked for, and the checkpoint's report (its verdict)."""
    body = ablation_body(kinds, sites, mode, steps, samples, seed, layers)
    return {"ablation": (checkpoint_id, "ablations", body), "report": (checkpoint_id, "report", {})}, body


PAGE = jobpage.JobPage(
    name=PATH,
    kind="ablations",
    probes=True,  # ablate on an uploaded prompt-pair probe instead of the checkpoint's task
    controls=controls,
    form=("sites", "mode", "steps", "layers"),
    sites_default=("read",),
    floors={"samples": 2},  # mean and resample ablation take values from the batch's other sequences
    run_label="Run ablation",
    panels={"verdict": "ms-verdict-wrap", "summary": None},
    figures={
        "metric": FigureCard("Task metric per timestep: clean vs ablated", "ablation-metric",
                             "Each step's mean over the positions scored there (so it reads on the metric's own "
                             "scale); steps with nothing scored are grey and left out. The orange strip on top "
                             "marks the ablated timesteps.", half=True),
        "change": FigureCard("Output change per timestep", "ablation-output-change",
                             "Mean absolute change of the output probabilities, and the share of predictions "
                             "that flip, over the scored positions of each step (grey: none scored).", half=True),
    },
    submit=submit,
    render=lambda api, results, body: result_view(results, body),
)

layout = PAGE.layout


def register(app, context) -> None:
    PAGE.register(app, context)
    register_layers(app, context)
