#!/usr/bin/env bash
# Floe on one machine: a local Kafka broker with sample Debezium events, and Floe pointed at it
# with the embedded local catalog.
#
# 1. starts the local Kafka (tansu) from scripts/test-env.sh (installed on first use);
# 2. produces sample change events for inventory.customers to dbserver1.inventory.customers;
# 3. writes quickstart/connector.toml (local catalog in quickstart/floe-data);
# 4. builds Floe, checks the config, runs `floe run` until the table holds the events, prints
#    the table as DuckDB reads it, and stops Floe with SIGTERM.
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
"$FLOE_TEST_PYTHON" scripts/fixtures/produce_sample.py --brokers "$FLOE_TEST_KAFKA" --topic "$TOPIC" --count 100 --only-new-topic

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

"$FLOE" check --config quickstart/connector.toml
echo

# Stream the events into the table, read it back with DuckDB, then stop Floe with SIGTERM (it
# flushes and commits before it exits).
"$FLOE" --log-format pretty run --config quickstart/connector.toml 2>quickstart/floe.log &
FLOE_PID=$!
trap 'kill "$FLOE_PID" 2>/dev/null || true' EXIT
DATA=$(pwd)/quickstart/floe-data
read_table() {
  "$FLOE_TEST_PYTHON" tests/support/iceberg_read.py pyiceberg-sql --catalog-name floe \
    --uri "sqlite:///$DATA/catalog.db" --warehouse "file://$DATA/warehouse" \
    --table inventory.customers --columns id 2>/dev/null |
    "$FLOE_TEST_PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["metadata_location"])' 2>/dev/null
}
for _ in $(seq 60); do
  if METADATA=$(read_table) && [[ -n $METADATA ]]; then break; fi
  sleep 1
done
[[ -n ${METADATA:-} ]] || { echo "no table after 60s; see quickstart/floe.log" >&2; exit 1; }
sleep 6 # one more commit interval, so every produced event is in
METADATA=$(read_table)
echo "inventory.customers, read by DuckDB from $METADATA:"
"$FLOE_TEST_PYTHON" tests/support/iceberg_read.py duckdb --metadata "$METADATA" --order-by id \
  --columns id,email,balance |
  "$FLOE_TEST_PYTHON" -c 'import json,sys; rows=json.load(sys.stdin)["rows"]; print(len(rows), "rows; first 5:"); [print(" ", r) for r in rows[:5]]'
kill -TERM "$FLOE_PID"
wait "$FLOE_PID"
trap - EXIT
echo "floe stopped cleanly; its log is quickstart/floe.log"
