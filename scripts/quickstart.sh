#!/usr/bin/env bash
# Floe on one machine: a local Kafka broker with sample Debezium events, and Floe pointed at it
# with the embedded local catalog.
#
# 1. starts the local Kafka (tansu) from scripts/test-env.sh (installed on first use);
# 2. produces sample change events for inventory.customers to dbserver1.inventory.customers;
# 3. writes quickstart/connector.toml (local catalog in quickstart/floe-data);
# 4. builds Floe and runs it against that config.
#
# Stop the broker afterwards with: scripts/test-env.sh down kafka
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export FLOE_CACHE=${FLOE_CACHE:-$HOME/.cache/floe}

scripts/test-env.sh up kafka
# shellcheck source=/dev/null
source "$FLOE_CACHE/env/env.sh"

TOPIC=dbserver1.inventory.customers
"$FLOE_TEST_PYTHON" scripts/fixtures/produce_sample.py --brokers "$FLOE_TEST_KAFKA" --topic "$TOPIC" --count 100

mkdir -p quickstart
cat >quickstart/connector.toml <<TOML
# Written by scripts/quickstart.sh. Every key is documented in connector.toml.example.
[kafka]
brokers = "$FLOE_TEST_KAFKA"
group_id = "floe-quickstart"
topics = ["$TOPIC"]

[[tables.route]]
topic = "$TOPIC"
table = "inventory.customers"

[catalog]
type = "local"
path = "quickstart/floe-data"

[flush]
interval = "2s"
commit_interval = "5s"

[metrics]
listen = "127.0.0.1:9464"
TOML
echo "wrote quickstart/connector.toml"

cargo build --locked --quiet --bin floe
FLOE=${CARGO_TARGET_DIR:-target}/debug/floe

# The checks Floe can do today; `floe run` (streaming into the table) is being built and says
# so when called.
"$FLOE" check --config quickstart/connector.toml
echo
echo "Next, once the streaming runtime lands: $FLOE run --config quickstart/connector.toml"
