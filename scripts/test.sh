#!/usr/bin/env bash
# The whole test suite: installs Prometheus and Alertmanager if missing, checks formatting and
# lints, then runs every test (unit, property, and integration tests against real Prometheus).
set -euo pipefail
cd "$(dirname "$0")/.."
# The whole suite is CI's one build from scratch: incremental caches would only add GBs to its
# disk (iterate with `cargo test --test it NAME::`, which keeps them).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
bash scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo run --locked --quiet -- check rules/ deploy/rules/
# Prometheus recording/alerting rules beside the canaryd policies, and their unit tests.
promtool check rules rules/prometheus/*.yml
promtool test rules rules/prometheus/tests/*.test.yml
# Test binaries run side by side (cargo-nextest, when installed: most real-server tests wait on
# ticks and scrapes, so four at a time on two cores); the benches run once each in test mode.
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked --lib --bins --tests --examples --no-fail-fast
  cargo test --locked --benches --no-fail-fast
else
  cargo test --locked --all-targets --no-fail-fast
fi
