"""Prometheus metrics of the operator (served on ``--metrics-port`` at ``/metrics``).

=========================================  =========  =================================================
name                                       type       labels / meaning
=========================================  =========  =================================================
``kresume_admission_seconds``              histogram  time in the ``inject-pod`` handler, seconds
``kresume_admissions_total``               counter    ``outcome``: injected, skipped, error
``kresume_resolutions_total``              counter    ``source``: store, cache, status, none
``kresume_refresh_errors_total``           counter    background refreshes that failed
``kresume_crashloop_failures_total``       counter    failed attempts counted toward a crash-loop fallback
``kresume_fallbacks_total``                counter    checkpoints the operator marked bad after a crash loop
``kresume_uninjected_pods_total``          counter    opted-in pods the webhook never saw (kresume is off for them)
``kresume_steps_waiting_for_ranks``        gauge      steps of live multi-rank runs some rank has not finished
``kresume_restores_total``                 counter    ``source``: cache (node-local tier), store — restore steps done
``kresume_events_dropped_total``           counter    Normal admission Events not posted (over the Event budget)
``kresume_indexed_objects``                gauge      ``index``: policies, runs, live_pods — objects in kresume's views
``kresume_views_ready``                    gauge      1 once the views hold every run and pod the start-up listing had
``kresume_pod_events_total``               counter    watch events of opted-in pods handled (``pod-events``)
=========================================  =========  =================================================
"""

from __future__ import annotations

from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

ADMISSION_SECONDS = Histogram(
    "kresume_admission_seconds",
    "Seconds spent in the inject-pod admission handler.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0),
)
ADMISSIONS = Counter("kresume_admissions_total", "Admission decisions.", ["outcome"])
RESOLUTIONS = Counter("kresume_resolutions_total", "Where the injected checkpoint came from.", ["source"])
CRASHLOOP_FAILURES = Counter("kresume_crashloop_failures_total",
                             "Failed attempts counted toward a crash-loop fallback.")
FALLBACKS = Counter("kresume_fallbacks_total", "Checkpoints marked bad by the operator after a crash loop.")
UNINJECTED_PODS = Counter("kresume_uninjected_pods_total",
                          "Opted-in pods created without kresume's webhook (operator down, webhook timed out).")
STEPS_WAITING = Gauge("kresume_steps_waiting_for_ranks",
                      "Steps of live multi-rank runs with a part from some rank but not every rank (not committed).")
RESTORES = Counter("kresume_restores_total", "Restore init steps that finished, by where the checkpoint came from "
                   "(cache: the node-local tier; store).", ["source"])
EVENTS_DROPPED = Counter("kresume_events_dropped_total", "Normal admission Events (Resumed, FreshStart) not posted: "
                         "over the operator's Event rate (the pod's annotations still say it).")
INDEXED = Gauge("kresume_indexed_objects", "Objects held in the operator's in-memory views (operator/views.py): "
                "CheckpointPolicies, CheckpointRuns, live injected pods.", ["index"])
VIEWS_READY = Gauge("kresume_views_ready", "1 once the operator's views hold every CheckpointRun and pod of its "
                    "initial listing (before that, admissions read unknown runs from the API).")
POD_EVENTS = Counter("kresume_pod_events_total", "Watch events of opted-in pods handled by the operator.")
REFRESH_ERRORS = Counter("kresume_refresh_errors_total", "Background refreshes of live runs that failed.")


def serve(port: int, addr: str = "0.0.0.0") -> None:
    """Start the ``/metrics`` HTTP server in a daemon thread (``port`` 0: do nothing)."""
    if port:
        start_http_server(port, addr=addr)
