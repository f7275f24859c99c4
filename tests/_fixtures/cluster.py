"""Control-plane fixtures: one real etcd + kube-apiserver + kube-controller-manager per test session.

``control_plane`` starts only when a test asks for it (session-scoped fixtures are created on first use) and is
stopped at session end. Missing binaries FAIL the test with the command that fetches them; they never skip.
The controller-manager runs without the node lifecycle controller: Nodes that tests create (there is no kubelet
to heartbeat) are never marked Unknown or tainted, so their pods are not evicted during a long session.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator

import pytest

from kresume.devtools.cluster import AssetsMissingError, ControlPlane, ControlPlaneSettings

SESSION_SETTINGS = ControlPlaneSettings(controller_manager_flags=("--controllers=*,-nodelifecycle",))


@contextlib.contextmanager
def started_plane(settings: ControlPlaneSettings) -> Iterator[ControlPlane]:
    """Start a control plane for a fixture; missing binaries FAIL the test with the command that fetches them."""
    plane = ControlPlane(settings)
    try:
        plane.start()
    except AssetsMissingError as exc:
        pytest.fail(f"{exc}\nRun: scripts/k8s-assets.sh", pytrace=False)
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """A started :class:`~kresume.devtools.cluster.ControlPlane` shared by the session (admin = system:masters)."""
    with started_plane(SESSION_SETTINGS) as plane:
        yield plane


@pytest.fixture
def k8s_namespace(control_plane: ControlPlane, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the test (``t-<test>-<random>``, <= 63 chars); deleted afterwards.

    Deletion is not awaited: the namespace controller finishes it in the background.
    """
    slug = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"t-{slug}-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", name)
    try:
        yield name
    finally:
        control_plane.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)
