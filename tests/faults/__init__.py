"""The fault campaign (issue 16): faults injected on real servers, invariants read back from the store and
the API server, one table. Run ``python -m tests.faults --seed S --faults N`` (docs/reliability.md) or the
seeded small campaign in the normal suite (``tests/faults/test_faults_*.py``).

Inside, modules import each other as ``faults.*`` and the shared fixtures as ``_fixtures.*`` (``tests/`` is on
``sys.path``: pytest's ``pythonpath``, and ``__main__`` adds it).
"""
