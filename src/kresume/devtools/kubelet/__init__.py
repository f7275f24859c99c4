"""A real node for local clusters: containerd + kubelet v1.20 (see :mod:`kresume.devtools.kubelet.node`), the
configuration they need (:mod:`.configs`), images built without a registry (:mod:`.images`, :mod:`.build`), and the
clean-up that leaves nothing behind (:mod:`.cleanup`). :mod:`kresume.devtools.localcluster` puts it together
with the control plane."""

from kresume.devtools.kubelet.node import NodeStartError, RealNode, RealNodeSettings

__all__ = ["NodeStartError", "RealNode", "RealNodeSettings"]
