#!/usr/bin/env bash
# An external CDS Hooks client for tests/hooks/test_external_client.py: healthchain's
# SandboxClient, in a virtual environment of its own (its pins clash with ours).
# Idempotent: skips the install when the pinned version is already there.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=.venv-healthchain
version=0.16.1
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('healthchain') != '$version')" 2>/dev/null; then
  echo "healthchain $version: present"
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install -q "healthchain==$version"
echo "healthchain $version: installed in $venv"
