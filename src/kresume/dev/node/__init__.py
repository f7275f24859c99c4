"""``kresume dev node``: a local node agent for development (stands in for kubelet + scheduler).

See :mod:`kresume.dev.node.agent`. Images are ignored; containers are local processes.
"""

from kresume.dev.node.agent import NodeAgent, NodeSettings
from kresume.dev.node.podrunner import PodRunner

__all__ = ["NodeAgent", "NodeSettings", "PodRunner"]
