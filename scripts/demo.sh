#!/usr/bin/env bash
# The showcase: installs Prometheus if missing, then runs `canaryd demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo run --release --locked -- demo "$@"
