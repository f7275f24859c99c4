# kresume developer entry points. `make demo` and `make test` each run the set-up first (idempotent).
.PHONY: setup demo test test-fast manifests bench clean

setup:
	scripts/setup.sh

demo: setup
	.venv/bin/kresume demo

test: setup
	.venv/bin/python -m pytest

# Pure/unit tests only (no servers): a quick loop while editing.
test-fast: setup
	KRESUME_TEST_BACKENDS=file,memory .venv/bin/python -m pytest -m "not slow" tests/store/test_store_pure.py tests/formats tests/injection tests/identity

bench: setup
	.venv/bin/python -m bench

clean:
	rm -rf .venv .cache .pytest_cache
