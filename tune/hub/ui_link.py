"""A deep link into the MLflow UI (3.17) that opens on a sweep's trials, not on the GenAI overview.

What MLflow 3.17's UI takes from the URL (read from its bundle, ``mlflow/server/js/build``,
and checked in Chromium by tests/tune/test_mlflow_ui.py):

* ``#/experiments/<id>`` is sent to the tab of the *workflow type*: the query parameter
  ``workflowType`` (``genai`` or ``machine_learning``), else the browser's localStorage key
  ``mlflow.workflowType``, which a fresh browser has as ``genai``, so the experiment lands on
  ``#/experiments/<id>/overview/usage?workflowType=genai`` (traces, token usage) whatever its
  ``mlflow.experimentKind`` tag says. ``#/experiments/<id>/runs?workflowType=machine_learning``
  is the training-runs view.
* The runs view's search facets come from the query: ``searchFilter``, ``orderByKey`` (e.g.
  ``metrics.`best_val_Dice_mean```), ``orderByAsc``, ``startTime``, ``lifecycleFilter``,
  ``modelVersionFilter``, ``datasetsFilter``. Child runs are nested under (and hidden in) a
  collapsed parent only while the list is neither filtered nor sorted by anything but the
  start time; with ``orderByKey`` a metric, every trial is a row of its own, ranked.
* The table's UI state (``selectedColumns``, ``columnOrder``, ``runsExpanded``, ``groupBy``,
  ...) is not a URL parameter: it lives in localStorage (per experiment), where the default
  shows no metric or parameter column. The one way a link carries it is the UI's own *shared
  view* (the runs view's share button): ``viewStateShareKey=<key>`` in the URL names the
  experiment tag ``mlflow.sharedViewState.<key>``, a JSON object of search facets and UI state,
  which the UI loads (without saving it over the user's own view) unless the URL also has a
  search facet. A shared view restores everything but ``runsExpanded``, ``runsPinned``,
  ``runsHidden``, ``runsVisibilityMap`` and ``autoRefreshEnabled``: expanding a parent row
  cannot come from a link at all, so the link sorts by the objective, which lists the trials
  directly (their parent among them, carrying the best trial's values). Once loaded, the UI
  writes the view's facets into the address bar, so reloading the page keeps the filter and
  the order but not the columns (checked in Chromium): the printed link itself brings them back.

So :func:`publish_view` writes that tag (one per sweep, key ``singr-<parent run id>``) and
:func:`runs_view_path` links to it; without the tag (it could not be written),
:func:`runs_view_path` gives the closest link made of the URL alone: the same filter and
order, the default columns. The MLflow Assistant panel that opens beside it on a browser's
first visit is localStorage too (``mlflow.assistant.panelOpen_v1``); no link closes it.
"""
from __future__ import annotations

import json
from typing import Any, Sequence
from urllib.parse import quote, urlencode, urlsplit

__all__ = ["SHARE_TAG_PREFIX", "ORDER_METRIC", "DEFAULT_PARAMS", "DEFAULT_METRICS", "DEFAULT_UI", "share_key",
           "sweep_filter", "column", "view_state", "runs_view_path", "publish_view", "published", "ui_lines",
           "latest_sweep", "main"]

SHARE_TAG_PREFIX = "mlflow.sharedViewState."
ORDER_METRIC = "best_val_Dice_mean"   # a trial's best validation Dice (the sweep ranks its trials by it)
DEFAULT_PARAMS = ("sing.lam", "sing.delta", "loss.gamma")
DEFAULT_METRICS = ("best_val_Dice_mean", "val_Dice_mean", "val_HD95_mean")
DEFAULT_UI = "http://127.0.0.1:5000"  # where `mlflow ui` listens unless told otherwise


def share_key(parent_run_id: str) -> str:
    """The shared view's key of a sweep (URL-safe: letters, digits, ``-``)."""
    return f"singr-{parent_run_id}"


def sweep_filter(sweep: str) -> str:
    """The runs filter that lists a sweep's parent and trial runs (all carry the tag ``sweep``)."""
    quote_char = '"' if "'" in sweep else "'"
    return f"tags.sweep = {quote_char}{sweep}{quote_char}"


def column(kind: str, key: str) -> str:
    """The UI's key of a column (and a sort key): ``metrics.`val_Dice_mean```, ``params.`sing.lam```."""
    return f"{kind}.`{key}`"


def view_state(sweep: str, params: Sequence[str] = DEFAULT_PARAMS, metrics: Sequence[str] = DEFAULT_METRICS,
               tags: Sequence[str] = (), order_by: str = ORDER_METRIC) -> dict[str, Any]:
    """The shared view: the sweep's runs, best ``order_by`` first (descending), the columns
    ``tags``, ``params`` then ``metrics`` after the run name."""
    cols = ([column("tags", k) for k in tags] + [column("params", k) for k in params]
            + [column("metrics", k) for k in metrics])
    return {"searchFilter": sweep_filter(sweep), "orderByKey": column("metrics", order_by), "orderByAsc": False,
            "startTime": "ALL", "lifecycleFilter": "Active", "datasetsFilter": [], "modelVersionFilter": "All Runs",
            "selectedColumns": cols, "columnOrder": [column("attributes", "Run Name"), *cols],
            "columnWidths": {c: (150 if c.startswith("metrics.") else 100) for c in cols}}


def runs_view_path(experiment_id: str, sweep: str, *, shared: str | None = None,
                   order_by: str = ORDER_METRIC) -> str:
    """The path (``#/experiments/...``, to append to the UI's address) of the experiment's runs
    view in the model-training workflow. ``shared``: the key of a view published with
    :func:`publish_view` (its columns and order; no search facet may be in the URL beside it);
    None: the URL-only view (the sweep's runs, best ``order_by`` first, the UI's default columns)."""
    q: dict[str, str] = {"workflowType": "machine_learning"}
    if shared:
        q["viewStateShareKey"] = shared
    else:
        q.update({"searchFilter": sweep_filter(sweep), "orderByKey": column("metrics", order_by),
                  "orderByAsc": "false"})
    return f"#/experiments/{experiment_id}/runs?{urlencode(q, quote_via=quote, safe='')}"


def publish_view(client: Any, experiment_id: str, parent_run_id: str, state: dict[str, Any]) -> str:
    """Write ``state`` (:func:`view_state`) as the experiment's shared view of the sweep
    ``parent_run_id``; returns its key (also tagged on the parent run as ``singr.ui_view``)."""
    key = share_key(parent_run_id)
    client.set_experiment_tag(experiment_id, SHARE_TAG_PREFIX + key, json.dumps(state, separators=(",", ":")))
    client.set_tag(parent_run_id, "singr.ui_view", key)
    return key


def published(client: Any, run: Any) -> str | None:
    """The key of the shared view the sweep of parent ``run`` published, if the experiment still has it."""
    key = run.data.tags.get("singr.ui_view")
    if key and SHARE_TAG_PREFIX + key in (client.get_experiment(run.info.experiment_id).tags or {}):
        return str(key)
    return None


def ui_lines(client: Any, tracking_uri: str, parent_run_id: str, sweep: str, ui: str = DEFAULT_UI) -> list[str]:
    """What to print to open the sweep in the MLflow UI: the link (an ``http(s)`` tracking server),
    or the ``mlflow ui`` command for the store (a sqlite file has no address) and the address to
    open in the UI it starts (``ui``)."""
    run = client.get_run(parent_run_id)
    path = runs_view_path(run.info.experiment_id, sweep, shared=published(client, run))
    if tracking_uri.startswith(("http://", "https://")):
        return [f"MLflow UI (the sweep's trials, best first): {tracking_uri.rstrip('/')}/{path}"]
    port = urlsplit(ui).port or 5000
    return [f"MLflow UI: mlflow ui --backend-store-uri {tracking_uri} --host 127.0.0.1 --port {port}",
            f"  then open (the sweep's trials, best first): {ui.rstrip('/')}/{path}"]


def latest_sweep(client: Any, experiment: str, sweep: str | None = None) -> Any:
    """The parent run of the experiment's latest sweep (named ``sweep``, if given), or None."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    flt = "tags.`singr.role` = 'sweep'" + (f" and {sweep_filter(sweep)}" if sweep else "")
    found = client.search_runs([exp.experiment_id], flt, order_by=["attributes.start_time DESC"], max_results=1)
    return found[0] if found else None


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tune.hub.ui_link``: print the link to a sweep's trials in the MLflow UI (the
    experiment's latest sweep unless ``--sweep``); a sweep of an older version, which published no
    view, gets the default one (lambda/delta/gamma, Dice/HD95)."""
    import argparse

    from .store import check_store, client_for, resolve_tracking_uri

    ap = argparse.ArgumentParser(prog="python -m tune.hub.ui_link", description=main.__doc__)
    ap.add_argument("--tracking-uri", default=None, help="the MLflow store (default: $MLFLOW_TRACKING_URI, else "
                    "sqlite:///mlflow.db)")
    ap.add_argument("--experiment", default="singr-synthetic")
    ap.add_argument("--sweep", default=None, help="the sweep's name (tune.name)")
    ap.add_argument("--ui", default=DEFAULT_UI, help=f"the UI's address for a sqlite store (default {DEFAULT_UI})")
    a = ap.parse_args(argv)
    uri = resolve_tracking_uri(a.tracking_uri)
    check_store(uri)
    client = client_for(uri)
    run = latest_sweep(client, a.experiment, a.sweep)
    if run is None:
        print(f"no sweep in the experiment {a.experiment!r} of {uri}")
        return 1
    sweep = run.data.tags.get("sweep") or run.info.run_name
    shared = published(client, run) or publish_view(client, run.info.experiment_id, run.info.run_id,
                                                    view_state(sweep))
    base = uri if uri.startswith(("http://", "https://")) else a.ui
    print(f"{base.rstrip('/')}/{runs_view_path(run.info.experiment_id, sweep, shared=shared)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
