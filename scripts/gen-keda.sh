#!/usr/bin/env bash
# Regenerate the KEDA external scaler's Python code from lastream_stream/keda/externalscaler.proto
# (checked in; tests/keda/test_keda_scaler.py fails when it no longer matches the proto).
# Usage: scripts/gen-keda.sh [OUT_DIR]   (default: lastream_stream/keda)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-lastream_stream/keda}
.venv/bin/python -m grpc_tools.protoc -I lastream_stream/keda --python_out="$out" --grpc_python_out="$out" \
  lastream_stream/keda/externalscaler.proto
# grpc_tools writes an absolute import of the message module; the package needs it relative.
sed -i 's/^import externalscaler_pb2 as/from lastream_stream.keda import externalscaler_pb2 as/' "$out/externalscaler_pb2_grpc.py"
