"""``kresume dev node``: a local node agent for development (stands in for kubelet + scheduler).

See :mod:`kresume.devtools.node.agent`. Images are ignored; containers are local processes.
"""

from kresume.devtools.node.agent import NodeAgent, NodeSettings
from kresume.devtools.node.podrunner import PodRunner

__all__ = ["NodeAgent", "NodeSettings", "PodRunner"]
