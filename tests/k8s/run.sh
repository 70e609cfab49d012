#!/usr/bin/env bash
# Runs the tests of deploy/k8s (see tests/k8s/README.md): installs the
# pinned npm packages with `npm ci` when node_modules is missing or older
# than package-lock.json, then `node --test`. Exits non-zero when a test
# fails; skips (exit 0, saying why) without Node.js 20+ and npm.
#
#   SLUICE_BIN=$PWD/build/sluice bash tests/k8s/run.sh
#
# Without SLUICE_BIN the test that runs the manifests' commands is skipped;
# without kubectl, every test that renders the kustomizations is.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "tests/k8s: SKIP: node and npm are not installed (Node.js 20 or later is needed)"
  exit 0
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
  echo "tests/k8s: SKIP: node $(node --version) is too old (Node.js 20 or later is needed)"
  exit 0
fi

# npm ci once per package-lock.json: the stamp holds the hash of the lock
# that node_modules was installed from.
stamp=node_modules/.sluice-lock-sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -d node_modules ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  npm ci --no-audit --no-fund
  echo "$want" >"$stamp"
fi

exec node --test
