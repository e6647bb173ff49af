#!/usr/bin/env bash
# Runs Floe's whole test suite against the real fixtures on 127.0.0.1.
#
# Installs what is missing and starts the fixtures (scripts/test-env.sh up), runs the tests
# with cargo-nextest, and stops the fixtures again if this script started them. Extra
# arguments go to `cargo nextest run` (e.g. a filter: scripts/test.sh -E 'test(config)').
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export FLOE_CACHE=${FLOE_CACHE:-$HOME/.cache/floe}

command -v cargo-nextest >/dev/null || {
  echo "test.sh: cargo-nextest is required (cargo install cargo-nextest --locked)" >&2
  exit 1
}

started=no
if ! scripts/test-env.sh status >/dev/null 2>&1; then
  started=yes
fi
scripts/test-env.sh up
if [[ $started == yes ]]; then
  trap 'scripts/test-env.sh down' EXIT
fi
# shellcheck source=/dev/null
source "$FLOE_CACHE/env/env.sh"

cargo nextest run --locked --workspace "$@"
