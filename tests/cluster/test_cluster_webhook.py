"""kube-apiserver calls a URL mutating webhook served by aiohttp on 127.0.0.1 with a certificate from
``pki.make_webhook_tls`` and applies its JSONPatch: the path the operator's admission tests rely on."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import kubernetes.client as k
import pytest
from aiohttp import web

from kresume.devtools import pki
from kresume.devtools.cluster import ControlPlane


class WebhookServer:
    """aiohttp HTTPS server in a background thread; annotates every object it reviews, records each request."""

    def __init__(self, tls: pki.WebhookTLS) -> None:
        self.tls, self.port, self.reviews = tls, 0, []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _mutate(self, request: web.Request) -> web.Response:
        review = await request.json()
        self.reviews.append(review)
        patch = [{"op": "add", "path": "/metadata/annotations", "value": {"test.kresume.dev/mutated": "yes"}}]
        return web.json_response({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {
            "uid": review["request"]["uid"], "allowed": True, "patchType": "JSONPatch",
            "patch": base64.b64encode(json.dumps(patch).encode()).decode()}})  # fmt: skip

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application()
        app.router.add_post("/mutate", self._mutate)
        self._runner = web.AppRunner(app)
        self._loop.run_until_complete(self._runner.setup())
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.tls.cert_file, self.tls.key_file)
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ctx)
        self._loop.run_until_complete(site.start())
        self.port = self._runner.addresses[0][1]
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def __enter__(self) -> WebhookServer:
        self._thread.start()
        assert self._ready.wait(10), "webhook server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def webhook_server(tmp_path: Path) -> Iterator[WebhookServer]:
    with WebhookServer(pki.make_webhook_tls(tmp_path)) as server:
        yield server


def test_apiserver_calls_url_webhook_and_applies_its_patch(
    control_plane: ControlPlane, k8s_namespace: str, webhook_server: WebhookServer
):
    marker = uuid.uuid4().hex[:8]
    name = f"kresume-test-{marker}"
    with control_plane.api_client() as api:
        adm, core = k.AdmissionregistrationV1Api(api), k.CoreV1Api(api)
        adm.create_mutating_webhook_configuration(k.V1MutatingWebhookConfiguration(
            metadata=k.V1ObjectMeta(name=name),
            webhooks=[k.V1MutatingWebhook(
                name="configmaps.test.kresume.dev", admission_review_versions=["v1"], side_effects="None",
                failure_policy="Fail", timeout_seconds=10,
                client_config=k.AdmissionregistrationV1WebhookClientConfig(
                    url=f"https://127.0.0.1:{webhook_server.port}/mutate", ca_bundle=webhook_server.tls.ca_bundle),
                object_selector=k.V1LabelSelector(match_labels={"kresume-test/webhook": marker}),
                rules=[k.V1RuleWithOperations(operations=["CREATE"], api_groups=[""], api_versions=["v1"],
                                              resources=["configmaps"])],
            )],
        ))  # fmt: skip
        try:
            # The apiserver picks up webhook configurations through an informer: retry until it is in effect.
            deadline, annotations = time.monotonic() + 30, None
            while not annotations and time.monotonic() < deadline:
                cm = core.create_namespaced_config_map(k8s_namespace, k.V1ConfigMap(metadata=k.V1ObjectMeta(
                    generate_name="cm-", labels={"kresume-test/webhook": marker})))  # fmt: skip
                annotations = cm.metadata.annotations
                if not annotations:
                    time.sleep(0.3)
        finally:
            adm.delete_mutating_webhook_configuration(name)
    assert annotations == {"test.kresume.dev/mutated": "yes"}
    request = webhook_server.reviews[-1]["request"]
    assert (request["kind"]["kind"], request["namespace"], request["operation"]) == ("ConfigMap", k8s_namespace,
                                                                                     "CREATE")
