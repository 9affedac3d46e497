"""The Grafana dashboard (grafana/dashboards/matrix-run.json): its queries, their check against a
live Prometheus, and a validation of the fields Grafana needs to import it.

Grafana itself is not installable here, so the check evaluates every panel's PromQL through
Prometheus's HTTP API the way Grafana would (variables at "All", `$__rate_interval` at a fixed
window) and reports the queries that return no series or an error.
"""

from __future__ import annotations

import json
import re
import shutil
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GRAFANA = Path(__file__).resolve().parent / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "matrix-run.json"
PROVISIONING = GRAFANA / "provisioning"

_RATE_WINDOW = "20s"  # $__rate_interval's stand-in: several scrapes of a run exporter that updates every 5 s
_VARIABLES = {"$run_id": ".*", "$role": ".*", "$__rate_interval": _RATE_WINDOW, "$__interval": "2s"}


#: Queries expected to return nothing today, by "panel title / refId", and why. The check fails on a
#: query listed here that does return series (so that the list stays true) and on every other empty one.
KNOWN_EMPTY: dict[str, str] = {}
#: Queries that need a GPU on a Ray node: empty on a machine without one.
NEEDS_GPU = {"GPU and CPU utilisation per node (Ray) / A": "no GPU on this machine: Ray exports no GPU utilisation"}


def has_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None


def expected_empty(gpu: bool | None = None) -> dict[str, str]:
    """KNOWN_EMPTY, plus the GPU queries where there is no GPU."""
    gpu = has_gpu() if gpu is None else gpu
    return {**KNOWN_EMPTY, **({} if gpu else NEEDS_GPU)}


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a dashboard is a JSON object")
    return data


@dataclass(frozen=True)
class Query:
    panel: str
    ref: str
    expr: str
    legend: str

    @property
    def key(self) -> str:
        return f"{self.panel} / {self.ref}"

    def promql(self) -> str:
        """The expression as Grafana sends it with every variable at "All"."""
        expr = self.expr
        for name, value in sorted(_VARIABLES.items(), key=lambda kv: -len(kv[0])):
            expr = expr.replace(name, value)
        return expr


def queries(dashboard: dict[str, Any]) -> list[Query]:
    return [
        Query(str(p["title"]), str(t["refId"]), str(t["expr"]), str(t.get("legendFormat", "")))
        for p in dashboard.get("panels", [])
        for t in p.get("targets", [])
    ]


# ------------------------------------------------------------------------------------ validation

_PANEL_KEYS = ("id", "type", "title", "gridPos", "targets", "datasource")
_KNOWN_VARIABLES = {"__rate_interval", "__interval", "__range", "datasource"}


def validate(dashboard: dict[str, Any]) -> list[str]:
    """What a stock Grafana would reject or show broken: missing fields, duplicate ids or refIds,
    overlapping panels, undefined variables, a datasource that is not the dashboard's variable."""
    problems: list[str] = []
    for key, kind in (("title", str), ("uid", str), ("panels", list), ("schemaVersion", int), ("templating", dict)):
        if not isinstance(dashboard.get(key), kind):
            problems.append(f"dashboard: {key!r} must be a {kind.__name__}")
    uid = dashboard.get("uid")
    if isinstance(uid, str) and not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", uid):
        problems.append(f"dashboard: uid {uid!r} must be 1-40 letters, digits, - or _")
    variables = {v.get("name") for v in dashboard.get("templating", {}).get("list", [])}
    for v in dashboard.get("templating", {}).get("list", []):
        for key in ("name", "type"):
            if not v.get(key):
                problems.append(f"variable {v.get('name')!r}: no {key!r}")
        if v.get("type") == "query" and not (v.get("definition") and v.get("datasource")):
            problems.append(f"variable {v.get('name')!r}: a query variable needs 'definition' and 'datasource'")
    ids: set[Any] = set()
    cells: dict[tuple[int, int], str] = {}
    for p in dashboard.get("panels", []):
        name = f"panel {p.get('title')!r}"
        for key in _PANEL_KEYS:
            if key not in p:
                problems.append(f"{name}: no {key!r}")
        if p.get("id") in ids:
            problems.append(f"{name}: id {p.get('id')} used twice")
        ids.add(p.get("id"))
        grid = p.get("gridPos", {})
        if (
            not all(isinstance(grid.get(k), int) for k in ("h", "w", "x", "y"))
            or grid.get("x", 0) + grid.get("w", 0) > 24
        ):
            problems.append(f"{name}: gridPos needs integer h, w, x, y within 24 columns")
        else:
            for x in range(grid["x"], grid["x"] + grid["w"]):
                for y in range(grid["y"], grid["y"] + grid["h"]):
                    if (x, y) in cells:
                        problems.append(f"{name}: overlaps panel {cells[(x, y)]!r}")
                        break
                    cells[(x, y)] = str(p.get("title"))
                else:
                    continue
                break
        refs = [t.get("refId") for t in p.get("targets", [])]
        if not refs or len(set(refs)) != len(refs) or not all(refs):
            problems.append(f"{name}: each target needs its own refId")
        for t in p.get("targets", []):
            if not t.get("expr"):
                problems.append(f"{name} / {t.get('refId')}: no expr")
            for var in re.findall(r"\$\{?(\w+)", t.get("expr", "")):
                if var not in variables and var not in _KNOWN_VARIABLES:
                    problems.append(f"{name} / {t.get('refId')}: variable ${var} is not defined")
        for ds in [p.get("datasource"), *(t.get("datasource") for t in p.get("targets", []))]:
            if not (isinstance(ds, dict) and ds.get("type") == "prometheus" and ds.get("uid") == "${datasource}"):
                problems.append(f"{name}: datasource must be {{'type': 'prometheus', 'uid': '${{datasource}}'}}")
                break
    return problems


# -------------------------------------------------------------------------------- evaluation


@dataclass
class Result:
    query: Query
    series: int
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.series > 0


def prometheus_get(url: str, path: str, params: dict[str, Any], timeout: float = 10.0) -> Any:
    """GET Prometheus's HTTP API; returns `data`, raises ValueError with Prometheus's error text."""
    full = f"{url.rstrip('/')}{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(full, timeout=timeout) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read() or b"{}")
    if body.get("status") != "success":
        raise ValueError(f"{body.get('errorType', 'error')}: {body.get('error', body)}")
    return body["data"]


def query_range(url: str, expr: str, start: float, end: float, step: float = 1.0) -> list[dict[str, Any]]:
    data = prometheus_get(url, "/api/v1/query_range", {"query": expr, "start": start, "end": end, "step": step})
    return list(data.get("result", []))


def evaluate(url: str, dashboard: dict[str, Any], start: float, end: float | None = None) -> list[Result]:
    """Every panel query over [start, end] (a range query, as Grafana's time series panels send)."""
    end = time.time() if end is None else end
    results = []
    for q in queries(dashboard):
        try:
            results.append(Result(q, len(query_range(url, q.promql(), start, end))))
        except (ValueError, OSError) as exc:
            results.append(Result(q, 0, str(exc)))
    return results


def problems_of(results: list[Result], empty_ok: dict[str, str]) -> list[str]:
    """Errors, empty queries not in `empty_ok`, and queries in `empty_ok` that now return series."""
    out = []
    for r in results:
        if r.error:
            out.append(f"{r.query.key}: error {r.error} ({r.query.promql()})")
        elif r.series == 0 and r.query.key not in empty_ok:
            out.append(f"{r.query.key}: no series ({r.query.promql()})")
        elif r.series > 0 and r.query.key in empty_ok:
            out.append(f"{r.query.key}: returns series now; take it off the known-empty list ({empty_ok[r.query.key]})")
    return out
