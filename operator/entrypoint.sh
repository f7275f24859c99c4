#!/bin/sh
# Entrypoint of the kresume operator container (installed as /usr/local/bin/kresume-operator by the Dockerfile).
# Runs `kresume operator` (kopf handlers in kresume.operator) with the container's arguments; every flag also
# reads its KRESUME_* environment variable. See operator/README.md.
set -eu
exec kresume operator "$@"
