"""A mutating webhook that does nothing, served as kresume's is: the baseline of bench/webhook_latency.py.

Bare aiohttp (the server kopf's admission endpoint runs on), HTTPS with the same certificate and
key as the operator, its own process; every AdmissionReview is answered ``allowed: true`` with no
patch. Registered by the bench with the chart's MutatingWebhookConfiguration (same
``objectSelector`` shape, timeout, failure policy) under another name, matching pods labelled
``kresume-bench/noop: "true"`` instead of ``kresume.dev/inject``. So "kresume adds X ms" is the
admission round trip of a kresume pod minus that of a pod passing this webhook, in the same run.

    python bench/noop_webhook.py --port PORT --cert CERT --key KEY
"""

from __future__ import annotations

import argparse
import json
import ssl

from aiohttp import web

LABEL = "kresume-bench/noop"
"""Pods with this label set to "true" pass the no-op webhook (and not kresume's)."""
PATH = "/noop"


async def review(request: web.Request) -> web.Response:
    body = await request.json()
    uid = (body.get("request") or {}).get("uid", "")
    return web.json_response({"apiVersion": body.get("apiVersion", "admission.k8s.io/v1"), "kind": "AdmissionReview",
                              "response": {"uid": uid, "allowed": True}})


def configuration(kresume_hook: dict, port: int, name: str = "kresume-bench-noop") -> dict:
    """The no-op webhook's configuration: a copy of kresume's (``chart.webhook_configuration``) with
    another name, URL path and objectSelector label."""
    obj = json.loads(json.dumps(kresume_hook))
    obj["metadata"] = {"name": name}
    for hook in obj["webhooks"]:
        hook["name"] = "noop." + hook["name"]
        hook["clientConfig"]["url"] = f"https://127.0.0.1:{port}{PATH}"
        hook["objectSelector"] = {"matchLabels": {LABEL: "true"}}
    return obj


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    args = ap.parse_args()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(args.cert, args.key)
    app = web.Application()
    app.router.add_post(PATH, review)
    app.router.add_get("/healthz", lambda _r: web.Response(text="ok"))
    web.run_app(app, host="127.0.0.1", port=args.port, ssl_context=ctx, access_log=None, print=None)


if __name__ == "__main__":
    main()
