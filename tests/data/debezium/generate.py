#!/usr/bin/env python3
"""Writes the generated Debezium decoder corpus next to this file (run it after changing it).

These records are generated, not captured: they cover combinations the captured corpus in
tests/data/captured/ lacks (every logical type in one table, TOAST placeholders, schema
changes, SQL Server, malformed records). Their shapes follow the converters' code, checked
against the captured records: the JsonConverter's {"schema", "payload"} wrapper and its type
names (FLOAT32 and FLOAT64 are "float" and "double"), Connect field order, `source` blocks per
connector, Debezium's logical type names and parameters. Each .jsonl file is one
stream of Kafka records, one {"key": ..., "value": ...} per line (null = absent / tombstone),
read in order as partition 0, offsets 0.. by src/decode/tests.rs.
"""
import base64
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
DBZ = "2.7.3.Final"


def f(field, typ, optional=True, name=None, version=None, parameters=None, **extra):
    d = {"type": typ}
    d.update(extra)
    d["optional"] = optional
    if name:
        d["name"] = name
    if version:
        d["version"] = version
    if parameters:
        d["parameters"] = parameters
    d["field"] = field
    return d


def struct(fields, name=None, optional=True, field=None, version=None):
    d = {"type": "struct", "fields": fields, "optional": optional}
    if name:
        d["name"] = name
    if version:
        d["version"] = version
    if field:
        d["field"] = field
    return d


def dec(field, scale, precision=None, optional=True):
    p = {"scale": str(scale)}
    if precision is not None:
        p["connect.decimal.precision"] = str(precision)
    return f(field, "bytes", optional, "org.apache.kafka.connect.data.Decimal", 1, p)


def b64_unscaled(v):
    n = max(1, (v.bit_length() + 8) // 8)
    return base64.b64encode(v.to_bytes(n, "big", signed=True)).decode()


def b64(b):
    return base64.b64encode(b).decode()


COMMON_SOURCE = [
    f("version", "string", False),
    f("connector", "string", False),
    f("name", "string", False),
    f("ts_ms", "int64", False),
    f("snapshot", "string", True, "io.debezium.data.Enum", 1,
      {"allowed": "true,first,first_in_data_collection,last_in_data_collection,last,false,incremental"},
      default="false"),
    f("db", "string", False),
    f("sequence", "string"),
    f("ts_us", "int64"),
    f("ts_ns", "int64"),
]
SOURCE_SCHEMAS = {
    "postgresql": struct(COMMON_SOURCE + [
        f("schema", "string", False), f("table", "string", False), f("txId", "int64"),
        f("lsn", "int64"), f("xmin", "int64")],
        "io.debezium.connector.postgresql.Source", False, "source"),
    "mysql": struct(COMMON_SOURCE + [
        f("table", "string"), f("server_id", "int64", False), f("gtid", "string"),
        f("file", "string", False), f("pos", "int64", False), f("row", "int32", False),
        f("thread", "int64"), f("query", "string")],
        "io.debezium.connector.mysql.Source", False, "source"),
    "sqlserver": struct(COMMON_SOURCE + [
        f("schema", "string", False), f("table", "string", False), f("change_lsn", "string"),
        f("commit_lsn", "string"), f("event_serial_no", "int64")],
        "io.debezium.connector.sqlserver.Source", False, "source"),
}


def source(connector, server, db, table, ts_ms, snapshot="false", schema=None, **pos):
    s = {"version": DBZ, "connector": connector, "name": server, "ts_ms": ts_ms,
         "snapshot": snapshot, "db": db, "sequence": None, "ts_us": ts_ms * 1000,
         "ts_ns": ts_ms * 1000000}
    if connector == "postgresql":
        s.update({"schema": schema, "table": table, "txId": pos.get("txId"),
                  "lsn": pos.get("lsn"), "xmin": None})
        s["sequence"] = json.dumps([None, str(pos.get("lsn"))])
    elif connector == "mysql":
        s.update({"table": table, "server_id": 223344, "gtid": None,
                  "file": pos.get("file", "mysql-bin.000003"), "pos": pos["pos"],
                  "row": pos.get("row", 0), "thread": 7, "query": None})
    else:
        s.update({"schema": schema, "table": table, "change_lsn": pos.get("change_lsn"),
                  "commit_lsn": pos.get("commit_lsn"), "event_serial_no": pos.get("serial")})
    return s


class Table:
    def __init__(self, connector, server, db, schema, table, columns, key_columns):
        self.connector, self.server, self.db, self.schema, self.table = (
            connector, server, db, schema, table)
        self.columns = columns
        self.key_columns = key_columns
        prefix = ".".join(x for x in [server, schema if connector != "mysql" else db, table])
        self.prefix = prefix
        self.topic = prefix

    def value_schema(self):
        row = lambda fld: struct(self.columns, self.prefix + ".Value", True, fld)
        return struct([
            row("before"), row("after"), SOURCE_SCHEMAS[self.connector],
            f("op", "string", False), f("ts_ms", "int64"), f("ts_us", "int64"),
            f("ts_ns", "int64"),
            struct([f("id", "string", False), f("total_order", "int64", False),
                    f("data_collection_order", "int64", False)], "event.block", True,
                   "transaction", 1),
        ], self.prefix + ".Envelope", False, None, 2)

    def key_schema(self):
        cols = [c for c in self.columns if c["field"] in self.key_columns]
        return struct(cols, self.prefix + ".Key", False)

    def key(self, row, with_schema=True):
        payload = {k: row[k] for k in self.key_columns}
        return {"schema": self.key_schema(), "payload": payload} if with_schema else payload

    def event(self, op, before, after, ts_ms, with_schema=True, snapshot="false", **pos):
        payload = {
            "before": before, "after": after,
            "source": source(self.connector, self.server, self.db, self.table, ts_ms,
                             snapshot, self.schema, **pos),
            "op": op, "ts_ms": ts_ms + 7, "ts_us": (ts_ms + 7) * 1000,
            "ts_ns": (ts_ms + 7) * 1000000, "transaction": None,
        }
        return {"schema": self.value_schema(), "payload": payload} if with_schema else payload


def write(path, records):
    full = os.path.join(HERE, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w") as out:
        for key, value in records:
            out.write(json.dumps({"key": key, "value": value}, separators=(",", ":")) + "\n")


# --- PostgreSQL ------------------------------------------------------------------------
pg_customers = Table("postgresql", "dbserver1", "postgres", "inventory", "customers", [
    f("id", "int32", False, default=0),
    f("first_name", "string", False),
    f("last_name", "string", False),
    f("email", "string", False),
], ["id"])
r1 = {"id": 1001, "first_name": "Sally", "last_name": "Thomas", "email": "sally.thomas@acme.com"}
r2 = {"id": 1004, "first_name": "Anne", "last_name": "Kretchmar", "email": "annek@noanswer.org"}
r2u = dict(r2, first_name="Anne Marie")
write("postgres/customers_stream.jsonl", [
    (pg_customers.key(r1), pg_customers.event("r", None, r1, 1559033904000, snapshot="first", txId=555, lsn=24023128)),
    (pg_customers.key(r2), pg_customers.event("c", None, r2, 1559033904863, txId=556, lsn=24023200)),
    (pg_customers.key(r2), pg_customers.event("u", r2, r2u, 1559033905863, txId=557, lsn=24023300)),
    (pg_customers.key(r1), pg_customers.event("d", r1, None, 1559033906863, txId=558, lsn=24023400)),
    (pg_customers.key(r1), None),
    (None, pg_customers.event("t", None, None, 1559033907863, txId=559, lsn=24023500)),
    (pg_customers.key(r2), None),
])
# Same stream with schemas.enable=false on both converters.
write("postgres/customers_schemaless.jsonl", [
    (pg_customers.key(r1, False), pg_customers.event("r", None, r1, 1559033904000, False, "first", txId=555, lsn=24023128)),
    (pg_customers.key(r2, False), pg_customers.event("c", None, r2, 1559033904863, False, txId=556, lsn=24023200)),
    (pg_customers.key(r2, False), pg_customers.event("u", r2, dict(r2u, score=4.5), 1559033905863, False, txId=557, lsn=24023300)),
    (pg_customers.key(r1, False), pg_customers.event("d", r1, None, 1559033906863, False, txId=558, lsn=24023400)),
    (pg_customers.key(r1, False), None),
])

# Every PostgreSQL column type with a logical type (time.precision.mode=adaptive,
# decimal.handling.mode=precise, hstore.handling.mode=map).
pg_types = Table("postgresql", "dbserver1", "postgres", "public", "all_types", [
    f("id", "int64", False),
    f("small", "int16"),
    f("big", "int64"),
    f("real_col", "float"),
    f("double_col", "double"),
    f("flag", "boolean"),
    f("name", "string"),
    f("raw", "bytes"),
    dec("price", 2, 10),
    dec("huge", 0, 50),
    f("any_numeric", "struct", True, "io.debezium.data.VariableScaleDecimal", 1,
      fields=[f("scale", "int32", False), f("value", "bytes", False)]),
    f("day", "int32", True, "io.debezium.time.Date", 1),
    f("clock", "int64", True, "io.debezium.time.MicroTime", 1),
    f("created", "int64", True, "io.debezium.time.MicroTimestamp", 1),
    f("created_tz", "string", True, "io.debezium.time.ZonedTimestamp", 1),
    f("clock_tz", "string", True, "io.debezium.time.ZonedTime", 1),
    f("doc", "string", True, "io.debezium.data.Json", 1),
    f("xml_doc", "string", True, "io.debezium.data.Xml", 1),
    f("guid", "string", True, "io.debezium.data.Uuid", 1),
    f("mood", "string", True, "io.debezium.data.Enum", 1, {"allowed": "sad,ok,happy"}),
    f("bits", "bytes", True, "io.debezium.data.Bits", 1, {"length": "16"}),
    f("tags", "array", items={"type": "string", "optional": True}),
    f("attrs", "map", keys={"type": "string", "optional": False},
      values={"type": "string", "optional": True}),
    f("location", "struct", True, "io.debezium.data.geometry.Point", 1,
      fields=[f("x", "double", False), f("y", "double", False),
              f("wkb", "bytes"), f("srid", "int32")]),
    f("span", "int64", True, "io.debezium.time.MicroDuration", 1),
], ["id"])
all_pg = {
    "id": 1, "small": -32768, "big": 9223372036854775807, "real_col": 1.5,
    "double_col": -2.25e-5, "flag": True, "name": "zoë \"quoted\"", "raw": b64(b"\x00\x01\xfe\xff"),
    "price": b64_unscaled(1234567), "huge": b64_unscaled(12345678901234567890123456789012345678901234567890),
    "any_numeric": {"scale": 3, "value": b64_unscaled(-1234567)},
    "day": 19723, "clock": 45296789012, "created": 1704112496789012,
    "created_tz": "2024-01-01T14:34:56.789012+02:00", "clock_tz": "12:34:56.789Z",
    "doc": "{\"a\": [1, 2]}", "xml_doc": "<a>1</a>", "guid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    "mood": "happy", "bits": b64(bytes([0x0f, 0xa0])), "tags": ["red", None, "blue"],
    "attrs": {"color": "green", "size": None},
    "location": {"x": 1.5, "y": -2.0, "wkb": b64(b"\x01\x01\x00\x00\x00"), "srid": 4326},
    "span": 90061000000,
}
nulls_pg = {k: (None if k != "id" else 2) for k in all_pg}
write("postgres/all_types.jsonl", [
    (pg_types.key(all_pg), pg_types.event("c", None, all_pg, 1704112496000, txId=700, lsn=33227720)),
    (pg_types.key(nulls_pg), pg_types.event("c", None, nulls_pg, 1704112497000, txId=701, lsn=33227800)),
])

# Unchanged TOASTed columns (REPLICA IDENTITY DEFAULT: no before image).
pg_docs = Table("postgresql", "dbserver1", "postgres", "public", "documents", [
    f("id", "int32", False),
    f("title", "string"),
    f("body", "string"),
    f("payload", "bytes"),
    f("labels", "array", items={"type": "string", "optional": True}),
    f("meta", "string", True, "io.debezium.data.Json", 1),
], ["id"])
doc = {"id": 7, "title": "v2", "body": "__debezium_unavailable_value",
       "payload": b64(b"__debezium_unavailable_value"), "labels": ["__debezium_unavailable_value"],
       "meta": "__debezium_unavailable_value"}
write("postgres/toast.jsonl", [
    (pg_docs.key(doc), pg_docs.event("u", None, doc, 1704112500000, txId=800, lsn=33228000)),
])

# A column added between two events (ALTER TABLE ... ADD COLUMN phone).
pg_v2 = Table("postgresql", "dbserver1", "postgres", "inventory", "customers",
              pg_customers.columns + [f("phone", "string")], ["id"])
r3 = {"id": 1005, "first_name": "Ed", "last_name": "Walker", "email": "ed@walker.com"}
r4 = {"id": 1006, "first_name": "Jo", "last_name": "Kim", "email": "jo@kim.org", "phone": "+1 555 0100"}
write("postgres/schema_change.jsonl", [
    (pg_customers.key(r3), pg_customers.event("c", None, r3, 1704112600000, txId=900, lsn=33229000)),
    (pg_v2.key(r4), pg_v2.event("c", None, r4, 1704112601000, txId=901, lsn=33229100)),
])

# ExtractNewRecordState: add.fields=op,source.ts_ms,table,lsn; delete.handling.mode=rewrite.
flat_cols = pg_customers.columns + [f("__op", "string"), f("__source_ts_ms", "int64"),
                                    f("__table", "string"), f("__lsn", "int64"),
                                    f("__deleted", "string")]
flat_schema = struct(flat_cols, "dbserver1.inventory.customers.Value", False)


def flat(row, op, ts, lsn, deleted="false"):
    payload = dict(row, __op=op, __source_ts_ms=ts, __table="customers", __lsn=lsn,
                   __deleted=deleted)
    return {"schema": flat_schema, "payload": payload}


write("postgres/flattened.jsonl", [
    (pg_customers.key(r2), flat(r2, "c", 1559033904863, 24023200)),
    (pg_customers.key(r2), flat(r2u, "u", 1559033905863, 24023300)),
    (pg_customers.key(r2), flat(r2u, "d", 1559033906863, 24023400, "true")),
    (pg_customers.key(r2), None),
])

# A 20-column orders row for the benchmark, with and without the schema.
bench = Table("postgresql", "shop", "shop", "public", "orders", [
    f("id", "int64", False), f("customer_id", "int64", False), f("status", "string", False),
    dec("total", 2, 12), dec("tax", 2, 12), f("currency", "string"),
    f("created_at", "int64", False, "io.debezium.time.MicroTimestamp", 1),
    f("updated_at", "string", True, "io.debezium.time.ZonedTimestamp", 1),
    f("ship_date", "int32", True, "io.debezium.time.Date", 1),
    f("note", "string"), f("quantity", "int32"), f("weight", "double"),
    f("gift", "boolean"), f("coupon", "string"), f("address", "string"),
    f("city", "string"), f("zip", "string"), f("country", "string"),
    f("meta", "string", True, "io.debezium.data.Json", 1),
    f("ref", "string", True, "io.debezium.data.Uuid", 1),
], ["id"])
order = {"id": 98765, "customer_id": 4321, "status": "SHIPPED", "total": b64_unscaled(1234599),
         "tax": b64_unscaled(98765), "currency": "EUR", "created_at": 1704112496789012,
         "updated_at": "2024-01-01T12:35:00.123456Z", "ship_date": 19724,
         "note": "leave at the door, ring twice", "quantity": 3, "weight": 2.75, "gift": False,
         "coupon": None, "address": "Hauptstrasse 12", "city": "Berlin", "zip": "10115",
         "country": "DE", "meta": "{\"channel\":\"web\",\"ab\":\"b\"}",
         "ref": "7f1b1e3a-9c2d-4b8e-a6f0-3d2c1b0a9f8e"}
write("postgres/bench_orders.jsonl", [
    (bench.key(order), bench.event("c", None, order, 1704112496000, txId=1000, lsn=44000000)),
    (bench.key(order, False), bench.event("c", None, order, 1704112496000, False, txId=1000, lsn=44000000)),
])

# --- MySQL -----------------------------------------------------------------------------
my_customers = Table("mysql", "mysql-server-1", "inventory", None, "customers", [
    f("id", "int32", False), f("first_name", "string", False), f("last_name", "string", False),
    f("email", "string", False),
], ["id"])
m1 = {"id": 1004, "first_name": "Anne", "last_name": "Kretchmar", "email": "annek@noanswer.org"}
m1u = dict(m1, first_name="Anne Marie")
write("mysql/customers_stream.jsonl", [
    (my_customers.key(m1), my_customers.event("c", None, m1, 1465491411815, pos=154)),
    (my_customers.key(m1), my_customers.event("u", m1, m1u, 1465581029100, pos=484)),
    (my_customers.key(m1), my_customers.event("d", m1u, None, 1465581902300, pos=805)),
    (my_customers.key(m1), None),
])
my_types = Table("mysql", "mysql-server-1", "inventory", None, "all_types", [
    f("id", "int32", False),
    f("tiny", "int16"),
    f("yr", "int32", True, "io.debezium.time.Year", 1),
    f("d", "int32", True, "io.debezium.time.Date", 1),
    f("t", "int64", True, "io.debezium.time.MicroTime", 1),
    f("dt3", "int64", True, "io.debezium.time.Timestamp", 1),
    f("dt6", "int64", True, "io.debezium.time.MicroTimestamp", 1),
    f("ts", "string", True, "io.debezium.time.ZonedTimestamp", 1),
    dec("amount", 4, 19),
    f("status", "string", True, "io.debezium.data.Enum", 1, {"allowed": "new,paid,sent"}),
    f("perms", "string", True, "io.debezium.data.EnumSet", 1, {"allowed": "r,w,x"}),
    f("flags", "bytes", True, "io.debezium.data.Bits", 1, {"length": "12"}),
    f("doc", "string", True, "io.debezium.data.Json", 1),
    f("blob_col", "bytes"),
    f("bit1", "boolean"),
], ["id"])
my_all = {"id": 1, "tiny": -128, "yr": 2024, "d": -1, "t": 86399999999, "dt3": 1704112496789,
          "dt6": -1000001, "ts": "2024-01-01T12:34:56Z", "amount": b64_unscaled(-99999999),
          "status": "paid", "perms": "r,x", "flags": b64(bytes([0x05, 0x08])),
          "doc": "{\"k\":\"v\"}", "blob_col": b64(b"hello"), "bit1": True}
write("mysql/all_types.jsonl", [
    (my_types.key(my_all), my_types.event("r", None, my_all, 1704112496000, snapshot="last", pos=1000)),
])

# --- SQL Server ------------------------------------------------------------------------
ss_customers = Table("sqlserver", "server1", "testDB", "dbo", "customers", [
    f("id", "int32", False), f("first_name", "string", False), f("last_name", "string", False),
    f("email", "string", False),
], ["id"])
s1 = {"id": 1005, "first_name": "john", "last_name": "doe", "email": "john.doe@example.org"}
s1u = dict(s1, email="john.doe@example.com")
write("sqlserver/customers_stream.jsonl", [
    (ss_customers.key(s1), ss_customers.event("c", None, s1, 1559729468470, change_lsn="00000027:00000758:0003", commit_lsn="00000027:00000758:0005", serial=1)),
    (ss_customers.key(s1), ss_customers.event("u", s1, s1u, 1559729995937, change_lsn="00000027:00000ac0:0002", commit_lsn="00000027:00000ac0:0007", serial=2)),
    (ss_customers.key(s1), ss_customers.event("d", s1u, None, 1559730445243, change_lsn="00000027:00000db0:0005", commit_lsn="00000027:00000db0:0007", serial=1)),
    (ss_customers.key(s1), None),
])
ss_types = Table("sqlserver", "server1", "testDB", "dbo", "all_types", [
    f("id", "int32", False),
    f("dt2", "int64", True, "io.debezium.time.NanoTimestamp", 1),
    f("tm7", "int64", True, "io.debezium.time.NanoTime", 1),
    f("tm3", "int32", True, "io.debezium.time.Time", 1),
    f("dto", "string", True, "io.debezium.time.ZonedTimestamp", 1),
    f("small_dt", "int64", True, "io.debezium.time.Timestamp", 1),
    dec("cash", 4, 19),
    f("guid", "string"),
    f("active", "boolean"),
    f("ratio", "double"),
    f("cd", "int32", True, "org.apache.kafka.connect.data.Date", 1),
    f("ct", "int64", True, "org.apache.kafka.connect.data.Timestamp", 1),
], ["id"])
ss_all = {"id": 1, "dt2": 1704112496123456789, "tm7": 45296123456789, "tm3": 45296123,
          "dto": "2024-01-01T12:34:56.1234567-05:00", "small_dt": 1704112440000,
          "cash": b64_unscaled(922337203685477), "guid": "6F9619FF-8B86-D011-B42D-00C04FC964FF",
          "active": False, "ratio": 0.1, "cd": 19723, "ct": 1704112496789}
write("sqlserver/all_types.jsonl", [
    (ss_types.key(ss_all), ss_types.event("c", None, ss_all, 1704112496000, change_lsn="00000028:00000100:0002", commit_lsn="00000028:00000100:0003", serial=1)),
])

# --- Malformed input -------------------------------------------------------------------
# One case per line: {"case", "records": [{"key", "value"}]} with key and value as raw text
# (so that broken JSON can be stored); every record but the last decodes, the last fails.
def raw(v):
    return None if v is None else json.dumps(v, separators=(",", ":"))


good = pg_customers.event("c", None, r2, 1559033904863, txId=556, lsn=24023200)


def with_after(**changes):
    e = json.loads(json.dumps(good))
    e["payload"]["after"].update(changes)
    return e


def with_payload(**changes):
    e = json.loads(json.dumps(good))
    e["payload"].update(changes)
    return e


bad_schema = json.loads(json.dumps(good))
bad_schema["schema"]["fields"][1]["fields"][0]["type"] = "int128"
bad_schema["schema"]["fields"][0]["fields"][0]["type"] = "int128"
micro_time = Table("postgresql", "dbserver1", "postgres", "public", "shifts", [
    f("id", "int32", False), f("starts", "int64", True, "io.debezium.time.MicroTime", 1),
    f("at", "string", True, "io.debezium.time.ZonedTimestamp", 1), dec("amount", 2, 5)], ["id"])
mt = lambda **row: micro_time.event("c", None, dict({"id": 1, "starts": 0, "at": None, "amount": None}, **row), 1704112496000, txId=1, lsn=1)
mk = micro_time.key({"id": 1})
key = raw(pg_customers.key(r2))
cases = [
    ("truncated_json", [(key, raw(good)[:200])]),
    ("value_not_an_object", [(key, "[1,2,3]")]),
    ("unknown_op", [(key, raw(with_payload(op="x")))]),
    ("missing_op", [(key, raw({"schema": good["schema"], "payload": {k: v for k, v in good["payload"].items() if k != "op"}}))]),
    ("create_without_after", [(key, raw(with_payload(after=None)))]),
    ("string_for_int", [(key, raw(with_after(id="1004")))]),
    ("int_overflow", [(key, raw(with_after(id=3000000000)))]),
    ("number_for_string", [(key, raw(with_after(email=42)))]),
    ("unknown_connect_type", [(key, raw(bad_schema))]),
    ("time_of_day_out_of_range", [(raw(mk), raw(mt(starts=86400000000)))]),
    ("zoned_timestamp_garbage", [(raw(mk), raw(mt(at="yesterday")))]),
    ("decimal_not_base64", [(raw(mk), raw(mt(amount="12.34!")))]),
    ("decimal_over_precision", [(raw(mk), raw(mt(amount=b64_unscaled(10000000))))]),
    ("key_missing_for_keyed_table", [(key, raw(good)), (None, raw(good))]),
    ("key_is_null", [(raw({"schema": pg_customers.key_schema(), "payload": {"id": None}}), raw(good))]),
    ("key_not_json", [("id=1004", raw(good))]),
    ("key_does_not_match_the_row", [(raw(pg_customers.key({"id": 1005})), raw(good))]),
    ("tombstone_without_key", [(None, None)]),
]
os.makedirs(os.path.join(HERE, "malformed"), exist_ok=True)
with open(os.path.join(HERE, "malformed/cases.jsonl"), "w") as out:
    for name, records in cases:
        out.write(json.dumps({"case": name, "records": [{"key": k, "value": v} for k, v in records]},
                             separators=(",", ":")) + "\n")
print("corpus written")
