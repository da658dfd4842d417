#!/usr/bin/env bash
# From a fresh clone: install, lint, build the Kubernetes binaries the first time, start the
# project's own Kafka broker (unless LASTREAM_KAFKA_BOOTSTRAP names one), run the whole test
# suite. Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# The Kubernetes tests' control plane: built once per machine, cached under $LASTREAM_HOME.
scripts/k8s-binaries.sh >/dev/null
if [ -z "${LASTREAM_KAFKA_BOOTSTRAP:-}" ] && ! .venv/bin/lastream kafka status >/dev/null 2>&1; then
  .venv/bin/lastream kafka start
  trap '.venv/bin/lastream kafka stop' EXIT  # only a broker this run started
fi
.venv/bin/python -m pytest "$@"
