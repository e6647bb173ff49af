#!/usr/bin/env python3
"""Writes benches/data/avro_orders.json: the decode bench's `orders` event (line 1 of
tests/data/debezium/postgres/bench_orders.jsonl, JSON with its Connect schema) as Confluent's
AvroConverter would write it: the Avro schemas its Connect schemas map to (records with
`connect.name`, optional fields as a union with null, Connect's Decimal as bytes with the
decimal logical type, `connect.version` / `connect.parameters` kept), and key and value in
Avro binary (fastavro, the encoder confluent-kafka's AvroSerializer uses). The bench frames
them with schema ids 1 and 2.

Run with the test venv: $FLOE_CACHE/venv/bin/python benches/data/avro_orders.py
"""

import base64
import io
import json
import pathlib

import fastavro

ROOT = pathlib.Path(__file__).resolve().parents[2]
PRIMITIVE = {"int8": "int", "int16": "int", "int32": "int", "int64": "long", "float32": "float",
             "float64": "double", "float": "float", "double": "double", "boolean": "boolean",
             "string": "string", "bytes": "bytes"}


def avro_schema(connect, defined):
    name = connect.get("name")
    if connect["type"] == "struct":
        if name in defined:
            return name
        defined.add(name)
        namespace, _, short = name.rpartition(".")
        avro = {"type": "record", "name": short, "namespace": namespace,
                "fields": [avro_field(f, defined) for f in connect["fields"]]}
    else:
        avro = {"type": PRIMITIVE[connect["type"]]}
        if connect["type"] in ("int8", "int16"):
            avro["connect.type"] = connect["type"]
        if name == "org.apache.kafka.connect.data.Decimal":
            params = connect["parameters"]
            avro.update({"logicalType": "decimal", "scale": int(params["scale"]),
                         "precision": int(params.get("connect.decimal.precision", 38))})
    if "version" in connect:
        avro["connect.version"] = connect["version"]
    if "parameters" in connect:
        avro["connect.parameters"] = connect["parameters"]
    if name:
        avro["connect.name"] = name
    return avro


def avro_field(connect, defined):
    avro = avro_schema(connect, defined)
    if connect.get("optional"):
        return {"name": connect["field"], "type": ["null", avro], "default": None}
    return {"name": connect["field"], "type": avro}


def avro_value(connect, value):
    """The payload value as fastavro takes it (bytes from base64, decimals unscaled)."""
    if value is None:
        return None
    if connect["type"] == "struct":
        return {f["field"]: avro_value(f, value.get(f["field"])) for f in connect["fields"]}
    if connect["type"] == "bytes":
        raw = base64.b64decode(value)
        if connect.get("name") == "org.apache.kafka.connect.data.Decimal":
            from decimal import Decimal
            scale = int(connect["parameters"]["scale"])
            return Decimal(int.from_bytes(raw, "big", signed=True)).scaleb(-scale)
        return raw
    return value


def encode(record):
    connect, payload = record["schema"], record["payload"]
    schema = avro_schema(connect, set())
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
