"""Shared pytest wiring: fixtures live in tests/_fixtures (importable because of `pythonpath`)."""

pytest_plugins = [
    "_fixtures.common",
    "_fixtures.objstores",
    "_fixtures.cluster",
    "_fixtures.faultproxy",
    "_fixtures.sockets",
    "_fixtures.operator",
]


def pytest_collection_modifyitems(config, items):
    """Tests marked ``campaign`` (many-repetition runs, tens of minutes) run only when ``-m`` names them."""
    if "campaign" in (config.getoption("markexpr") or ""):
        return
    kept = [i for i in items if i.get_closest_marker("campaign") is None]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i.get_closest_marker("campaign") is not None])
        items[:] = kept
