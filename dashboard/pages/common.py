"""Helpers the pages share: checkpoint pickers, form parsing, number fields bounded by
the server's limits (GET /api/kinds)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from dash import dcc, html

from ..api import ApiClient, ApiError, kind_entry
from ..components import error_box


def file_name(ckpt: Mapping[str, Any]) -> str | None:
    """The uploaded file's name (`file_name`; `filename` from servers before it)."""
    return ckpt.get("file_name") or ckpt.get("filename") or None


def checkpoint_title(ckpt: Mapping[str, Any]) -> str:
    """The checkpoint's name, and its file's where that tells it apart: one run's
    final.safetensors and step-001000.safetensors share the name the run gave them."""
    name = str(ckpt.get("name") or ckpt.get("id"))
    file = file_name(ckpt)
    if file and file.rsplit(".", 1)[0] != name:
        return f"{name} · {file}"
    return name


def checkpoint_label(ckpt: Mapping[str, Any]) -> str:
    task = (ckpt.get("task") or {}).get("name") or "no task"
    step = ckpt.get("step")
    step_text = f" step {step}" if step else ""
    return f"{checkpoint_title(ckpt)} ({ckpt.get('arch', '?')}, {task}{step_text})"


def checkpoint_options(checkpoints: Sequence[Mapping[str, Any]]) -> list[dict]:
    return [{"label": checkpoint_label(c), "value": c["id"]} for c in checkpoints if c.get("id")]


def checkpoint_dropdown(component_id: str, value: str | list[str] | None = None, multi: bool = False,
                        placeholder: str = "choose a checkpoint") -> dcc.Dropdown:
    """The URL's checkpoint(s) are options from the start (labelled by id until the list
    arrives): the dropdown drops values that are not among its options."""
    values = value if isinstance(value, list) else [value] if value else []
    return dcc.Dropdown(id=component_id, options=[{"label": v, "value": v} for v in values],
                        value=value, multi=multi, placeholder=placeholder, clearable=multi,
                        className="ms-dropdown", optionHeight=36)


def field(label: str, control, hint: str | None = None, grow: bool = False) -> html.Label:
    return html.Label([html.Span(label, className="ms-field-label"), control,
                       html.Small(hint, className="ms-hint") if hint else None],
                      className="ms-field" + (" ms-field-grow" if grow else ""))


def to_int(value: Any, *, default: int | None = None, minimum: int | None = None,
           maximum: int | None = None, name: str = "value") -> int | None:
    """A form value as an int, or `default` when blank; ValueError names the field."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a whole number, not {value!r}") from None
    if number != int(number):
        raise ValueError(f"{name} must be a whole number, not {value!r}")
    number = int(number)
    if minimum is not None and number < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {number}")
    if maximum is not None and number > maximum:
        raise ValueError(f"{name} must be at most {maximum}, not {number}")
    return number


# -- number fields bounded by the server's limits ------------------------------------------------

TASK_PARAM = "task parameter"  # a task parameter (the sequence length): bounded by the kind's task_param_max


def field_limits(kinds: Sequence[Mapping[str, Any]], kind: str, name: str) -> dict:
    """{"minimum", "maximum", "default"} of a numeric request field of a kind."""
    entry = kind_entry(kinds, kind)
    if name == TASK_PARAM:
        return {"minimum": 1, "maximum": entry.get("task_param_max"), "default": None}
    limits = (entry.get("limits") or {}).get(name) or {}
    return {key: limits.get(key) for key in ("minimum", "maximum", "default")}


@dataclass(frozen=True)
class NumberField:
    """A whole-number form control whose bounds and default are a request field's limits
    from GET /api/kinds: the layout draws it unbounded, the page's boot callback sets
    them (`bounds`), and the request is checked against the same numbers (`parse`)."""

    id: str  # component id
    kind: str  # job kind, or "trace"
    field: str  # request field ("samples", "seed", ...), or TASK_PARAM
    name: str  # what messages call it ("sequences must be at least 2")
    floor: int | None = None  # the page's own minimum, where it needs more than the server does

    def limits(self, kinds: Sequence[Mapping[str, Any]]) -> dict:
        limits = field_limits(kinds, self.kind, self.field)
        if self.floor is not None:
            limits["minimum"] = max(self.floor, limits["minimum"] if limits["minimum"] is not None else self.floor)
        return limits

    def parse(self, kinds: Sequence[Mapping[str, Any]], value: Any) -> int | None:
        limits = self.limits(kinds)
        return to_int(value, default=limits["default"], minimum=limits["minimum"], maximum=limits["maximum"],
                      name=self.name)

    def bounds(self, kinds: Sequence[Mapping[str, Any]]) -> tuple:
        """(min, max) for the input."""
        limits = self.limits(kinds)
        return limits["minimum"], limits["maximum"]

    def filled(self, kinds: Sequence[Mapping[str, Any]], value: Any) -> Any:
        """The value the input shows: the URL's or the user's, else the server's default."""
        blank = value is None or (isinstance(value, str) and not value.strip())
        return self.limits(kinds)["default"] if blank else value

    def control(self, value: Any, **extra: Any) -> dcc.Input:
        return dcc.Input(id=self.id, type="number", step=1, value=value, className="ms-input ms-input-num", **extra)


def number_bounds(api: ApiClient, numbers: Sequence[NumberField], values: Sequence[Any]) -> tuple[list, str | None]:
    """[min, max, value] of every number field, flat, and the error when the limits could
    not be read (the fields then stay unbounded and the page says why)."""
    try:
        kinds = api.kinds()
        bounds = [b for number, value in zip(numbers, values)
                  for b in (*number.bounds(kinds), number.filled(kinds, value))]
    except ApiError as exc:
        return [b for value in values for b in (None, None, value)], str(exc)
    return bounds, None


def parse_timesteps(text: str | None) -> list[int] | None:
    """"all" or blank -> None; "3, 5-7" -> [3, 5, 6, 7]."""
    if text is None or not str(text).strip() or str(text).strip().lower() in ("all", "*"):
        return None
    steps: set[int] = set()
    for part in re.split(r"[,\s]+", str(text).strip()):
        if not part:
            continue
        m = re.fullmatch(r"(\d+)\s*(?:-|\.\.)\s*(\d+)", part)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise ValueError(f"timestep range {part!r} runs backwards")
            if hi - lo > 100_000:
                raise ValueError(f"timestep range {part!r} is too long")
            steps.update(range(lo, hi + 1))
        elif part.isdigit():
            steps.add(int(part))
        else:
            raise ValueError(f"timesteps: {part!r} is not a number or a range like 3-7 (or 'all')")
    return sorted(steps)


def length_params(task: Mapping[str, Any] | None, length: int | None) -> dict[str, int]:
    """Task parameters that fix the sequence length, for the task families we know; an
    unknown task keeps its own parameters."""
    if length is None:
        return {}
    params = (task or {}).get("params") or {}
    if "min_length" in params or "max_length" in params:
        return {"min_length": length, "max_length": length}
    if "min_items" in params or "max_items" in params:
        return {"min_items": length, "max_items": length}
    if "seq_len" in params:
        return {"seq_len": length}
    return {}


def sample_length(task: Mapping[str, Any] | None) -> int | None:
    params = (task or {}).get("params") or {}
    for key in ("max_length", "max_items", "seq_len"):
        if isinstance(params.get(key), int):
            return params[key]
    return None


# -- booting a page ----------------------------------------------------------------------

def checkpoint_boot(api: ApiClient, boot: Mapping | None, multi: bool = False) -> tuple:
    """(dropdown options, error box) on page load. The URL's checkpoint(s) are already the
    dropdown's value in the layout, so the page's callbacks start at once without waiting
    for this list; an id the server does not know is reported here."""
    wanted = [w for w in str((boot or {}).get("checkpoint") or "").split(",") if w]
    if not multi:
        wanted = wanted[:1]
    try:
        ckpts = api.checkpoints()
    except ApiError as exc:
        return [], error_box(str(exc))
    ids = {c.get("id") for c in ckpts}
    missing = [w for w in wanted if w not in ids]
    error = error_box(f"no checkpoint with id {', '.join(missing)} on this server; choose one from the list") if missing else None
    return checkpoint_options(ckpts), error


def page_boot(api: ApiClient, boot: Mapping | None, numbers: Sequence[NumberField] = (),
              values: Sequence[Any] = (), multi: bool = False) -> tuple:
    """A page's boot callback: (checkpoint options, error box, then min, max and value of
    each number field). The first problem found is the one shown."""
    options, error = checkpoint_boot(api, boot, multi)
    bounds, limits_error = number_bounds(api, numbers, values)
    return (options, error or error_box(limits_error), *bounds)


def site_options(specs: Sequence[Mapping[str, Any]], skip_kinds: Sequence[str] = ("output",)) -> list[dict]:
    return [{"label": f"{s['name']} ({s.get('kind')})", "value": s["name"]}
            for s in specs if s.get("kind") not in skip_kinds]


def sites_of_kind(specs: Sequence[Mapping[str, Any]], kinds: Sequence[str]) -> list[str]:
    return [s["name"] for s in specs if s.get("kind") in kinds and not s.get("on_request")]


def split_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if str(v)]
    return [v for v in str(value).split(",") if v]
