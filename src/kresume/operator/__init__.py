"""The kresume operator: a kopf application with the ``inject-pod`` mutating webhook (``kresume operator``).

Facts for deployment — ports (webhook 9443 at ``/inject-pod``, liveness 8080 ``/healthz``, metrics 9090
``/metrics``), flags and env (``KRESUME_*``), the RBAC verbs with reasons, the webhook configuration the
chart owns, and how Events and ``CheckpointRun`` status are written — are in ``docs/operator.md``.

Modules: ``handlers`` (thin kopf wiring, ``register(registry, config)``), ``admission`` (the decision per
pod), ``resolution`` (budgeted store lookup + cache), ``decisions`` and ``credentials`` (pure rules),
``kube`` (the few API calls of our own), ``notes`` (admission findings waiting for their pod),
``settings`` (dataclasses), ``runner``/``cli`` (``kresume operator``), ``webhook`` (kopf's server plus
the request-namespace fix-up), ``devtls`` (the self-signed pair when no TLS files are given), ``metrics``.
Running it as a process against a local cluster (tests, demo, benchmarks) is ``kresume.devtools.operator_process``.
"""
