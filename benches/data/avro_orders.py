#!/usr/bin/env python3
"""Writes benches/data/avro_orders.json: the decode bench's `orders` event (line 1 of
tests/data/debezium/postgres/bench_orders.jsonl, JSON with its Connect schema) as Confluent's
AvroConverter would write it: the Avro schemas its Connect schemas map to
(scripts/fixtures/connect_avro.py), and key and value in Avro binary (fastavro, the encoder
confluent-kafka's AvroSerializer uses). The bench frames them with schema ids 1 and 2.

Run with the test venv: $FLOE_CACHE/venv/bin/python benches/data/avro_orders.py
"""

import io
import json
import pathlib
import sys

import fastavro

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts/fixtures"))
from connect_avro import avro_schema, avro_value  # noqa: E402


def encode(record):
    connect, payload = record["schema"], record["payload"]
    schema = avro_schema(connect)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema), avro_value(connect, payload))
    return schema, buf.getvalue()


def main():
    line = json.loads((ROOT / "tests/data/debezium/postgres/bench_orders.jsonl").open().readline())
    key_schema, key = encode(line["key"])
    value_schema, value = encode(line["value"])
    out = {"key_schema": json.dumps(key_schema), "value_schema": json.dumps(value_schema),
           "key": key.hex(), "value": value.hex()}
    (ROOT / "benches/data/avro_orders.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"key {len(key)} bytes, value {len(value)} bytes")


if __name__ == "__main__":
    main()
