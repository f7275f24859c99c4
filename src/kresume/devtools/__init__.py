"""Development tools: local control plane, local object-store servers, local node agent, demo.

Nothing here runs in production; it exists so tests, the demo and the benchmarks use real parts
on one machine.
"""
