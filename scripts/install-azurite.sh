#!/usr/bin/env bash
# Install the Azure Blob emulator Azurite into <repo>/.cache/azurite (idempotent).
#
#   scripts/install-azurite.sh            # install if missing, print the binary path
#   AZURITE_PREFIX=/some/dir scripts/install-azurite.sh
#
# Why pinned: on Node 20 an unpinned `npm install azurite` silently resolves to 3.35.0; the
# project tests against 3.37.0, which declares node>=22 but runs on Node 20 (EBADENGINE warning
# only). Source: ../shared/objstores/README.md (measured on this machine kind). kresume.devtools.objstores looks for the binary at
# <repo>/.cache/azurite/node_modules/.bin/azurite-blob (or $KRESUME_AZURITE, or PATH).
set -euo pipefail

VERSION=3.37.0
REPO=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${AZURITE_PREFIX:-$REPO/.cache/azurite}
BIN=$PREFIX/node_modules/.bin/azurite-blob
PKG=$PREFIX/node_modules/azurite/package.json

installed_version() {
  [ -f "$PKG" ] && node -e 'process.stdout.write(require(process.argv[1]).version)' "$PKG" 2>/dev/null || true
}

if [ -x "$BIN" ] && [ "$(installed_version)" = "$VERSION" ]; then
  echo "azurite $VERSION already installed: $BIN"
  exit 0
fi

command -v node >/dev/null || { echo "error: node is not on PATH (Azurite needs Node >= 20)" >&2; exit 1; }
command -v npm >/dev/null || { echo "error: npm is not on PATH" >&2; exit 1; }

mkdir -p "$PREFIX"
# A package.json here keeps npm from walking up into a parent folder's package.json.
[ -f "$PREFIX/package.json" ] || echo '{"private": true}' > "$PREFIX/package.json"
npm install --prefix "$PREFIX" --no-audit --no-fund --save-exact "azurite@$VERSION"

got=$(installed_version)
if [ "$got" != "$VERSION" ] || [ ! -x "$BIN" ]; then
  echo "error: expected azurite $VERSION at $BIN, found version '${got:-none}'" >&2
  exit 1
fi
echo "azurite $VERSION installed: $BIN"
