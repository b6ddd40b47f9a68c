#!/usr/bin/env bash
# The whole test suite: installs Prometheus and Alertmanager if missing, checks formatting and
# lints, then runs every test (unit, property, and integration tests against real Prometheus).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo run --locked --quiet -- check rules/
cargo test --locked --all-targets
