#!/usr/bin/env bash
# The test FHIR engine (tests/servers/fhir): pinned npm packages from package-lock.json.
# Idempotent: skips `npm ci` when node_modules already matches the lock file.
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=tests/servers/fhir
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends nodejs
  command -v npm >/dev/null 2>&1 || apt-get install -y -qq --no-install-recommends npm
fi
stamp="$dir/node_modules/.mprtm-lock.sha256"
want="$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "fhir engine: node_modules up to date"
  exit 0
fi
(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
echo "$want" > "$stamp"
echo "fhir engine: installed $(node --version) packages in $dir/node_modules"
