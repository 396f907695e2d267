#!/usr/bin/env bash
# The one test command (README.md): installs what the tests need, then runs every suite:
# unit tests, the stream-store conformance suite on the embedded log and on a real
# Kafka-protocol broker (tansu), the MockCluster fault tests, and the end-to-end tests.
# A missing broker fails the run; nothing is skipped.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install-test-broker.sh
bash scripts/install-promtool.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace --no-fail-fast
