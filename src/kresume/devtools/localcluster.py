"""A local cluster with real nodes: etcd + kube-apiserver + kube-controller-manager + kube-scheduler
(:class:`~kresume.devtools.cluster.ControlPlane`) and one or more containerd + kubelet nodes
(:class:`~kresume.devtools.kubelet.RealNode`), all on loopback. Typical use::

    with LocalCluster() as lc:
        lc.plane.kubectl("run", "p", "--image=...", "--overrides={...hostNetwork...}")

The API server runs the ServiceAccount admission plugin here (pods get their token, as on any cluster) and,
with ``pod_security`` (the default), PodSecurityPolicy admission with the policies of
:mod:`kresume.devtools.podsecurity` (namespaces labelled ``pod-security.kubernetes.io/enforce: restricted`` get
only the ``restricted`` profile; create namespaces with :meth:`LocalCluster.create_namespace`); the
controller-manager runs its node lifecycle controller (a lost node turns NotReady). :meth:`LocalCluster.stop` stops
the nodes first (every container removed, every mount and folder they made gone), then the control plane.
:func:`available` says whether this machine can run it (root, containerd, the node binaries).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import yaml

from kresume.devtools import podsecurity
from kresume.devtools.cluster import AssetsMissingError, ControlPlane, ControlPlaneSettings, find_assets
from kresume.devtools.kubelet import RealNode, RealNodeSettings, images, nodelock, preflight

PLANE_SETTINGS = ControlPlaneSettings(
    scheduler=True,
    # ServiceAccount admission ON (pods get tokens: the operator runs in-cluster with the chart's RBAC); a node
    # monitor grace of 20 s instead of 40 s, so a lost node turns NotReady sooner.
    disabled_admission_plugins=(),
    apiserver_flags=podsecurity.APISERVER_FLAGS,
    controller_manager_flags=("--node-monitor-grace-period=20s", "--pod-eviction-timeout=30s",
                              *podsecurity.CONTROLLER_MANAGER_FLAGS),
)


def available(address: str = RealNodeSettings.address) -> str | None:
    """None when a real node can run here, else one line saying what is missing and how to get it, or which
    process already runs a real node with ``address`` (:mod:`kresume.devtools.kubelet.nodelock`)."""
    busy = nodelock.holder(address)
    if busy is not None:
        return str(nodelock.NodeAddressBusy(address, busy))
    try:
        assets = find_assets(extra=("kubelet", "kube-scheduler"))
    except AssetsMissingError:
        assets = None
    problems = preflight.missing(assets)
    return preflight.explain(problems) if problems else None


@dataclass(frozen=True)
class LocalClusterSettings:
    """``nodes``: one :class:`RealNodeSettings` per node (addresses must differ: 127.0.0.1, 127.0.0.2, …)."""

    plane: ControlPlaneSettings = PLANE_SETTINGS
    nodes: tuple[RealNodeSettings, ...] = (RealNodeSettings(),)
    images: tuple[images.Archive, ...] = field(default=())
    """Images every node imports (in addition to each node's own)."""
    pod_security: bool = True
    """Install the PodSecurityPolicies (the plane's flags must enable the admission plugin, as
    :data:`PLANE_SETTINGS` does) and let ``default`` and ``kube-system`` use the privileged one."""


class LocalCluster:
    """``plane`` (the control plane) and ``nodes`` (started :class:`RealNode` objects); a context manager."""

    def __init__(self, settings: LocalClusterSettings | None = None) -> None:
        self.settings = settings or LocalClusterSettings()
        self.plane = ControlPlane(self.settings.plane)
        self.nodes: list[RealNode] = []
        self.problems: list[str] = []
        """What the last :meth:`stop` could not clean up (empty when clean)."""

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> LocalCluster:
        """Start the control plane, then each node (until Ready). A failed start stops what it started."""
        try:
            self.plane.start()
            if self.settings.pod_security:
                self._apply(podsecurity.policies())
                for ns in ("default", "kube-system"):
                    self.create_namespace(ns)
            for ns in self.settings.nodes:
                s = RealNodeSettings(**{**ns.__dict__, "images": (*self.settings.images, *ns.images)})
                node = RealNode(self.plane, s)
                self.nodes.append(node)
                node.start()
        except BaseException:
            self.stop()
            raise
        return self

    def _apply(self, objs: list[dict]) -> None:
        self.plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(objs))

    def create_namespace(self, name: str, *, restricted: bool = False, labels: dict[str, str] | None = None) -> None:
        """Create (or update) namespace ``name``: labelled for PodSecurity ``restricted`` when ``restricted``,
        else with the RoleBinding that lets its ServiceAccounts use the privileged policy."""
        self._apply(podsecurity.namespace_objects(name, restricted=restricted, labels=labels))

    def stop(self) -> list[str]:
        """Stop every node (newest first), then the control plane; returns (and keeps in ``problems``) what
        could not be cleaned up."""
        problems: list[str] = []
        while self.nodes:
            node = self.nodes.pop()
            with contextlib.suppress(Exception):
                problems += node.stop()
        self.plane.stop()
        self.problems = problems
        return problems
