#!/usr/bin/env bash
# The whole test suite: installs Prometheus and Alertmanager if missing, checks formatting and
# lints, then runs every test (unit, property, and integration tests against real Prometheus).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo run --locked --quiet -- check rules/ deploy/rules/
# Prometheus recording/alerting rules beside the canaryd policies, and their unit tests.
promtool check rules rules/prometheus/*.yml
promtool test rules rules/prometheus/tests/*.test.yml
cargo test --locked --all-targets --no-fail-fast
