"""Shared pytest wiring: fixtures live in tests/_fixtures (importable because of `pythonpath`)."""

pytest_plugins = [
    "_fixtures.common",
    "_fixtures.objstores",
    "_fixtures.cluster",
    "_fixtures.faultproxy",
    "_fixtures.operator",
]
