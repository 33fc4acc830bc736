#!/bin/sh
# Context hashing: cold vs metadata-cached, on a synthetic context (default 20000 files).
set -eu
cd "$(dirname "$0")/../.."
exec cargo run --release -q -p kiln-builder --example context_bench -- "${1:-20000}"
