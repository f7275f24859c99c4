#!/bin/sh
# Entrypoint of the kresume sidecar (installed as /usr/local/bin/kresume-sidecar by the Dockerfile).
# The operator injects the sidecar with `command: [kresume, sidecar]`; this script is the same command for
# running the image by hand (`docker run --entrypoint kresume-sidecar ...`). See sidecar/README.md.
set -eu
exec kresume sidecar "$@"
