#!/usr/bin/env python3
"""Independent Iceberg table reader for Floe integration tests.

Floe's Rust tests run this as a subprocess so that tables written by Floe are
checked by readers that share no code with Floe: DuckDB's iceberg extension
and pyiceberg.

Subcommands
-----------
duckdb               read a table from its metadata.json with DuckDB iceberg_scan()
pyiceberg-sql        open a table through a pyiceberg SqlCatalog; dump schema,
                     snapshots and rows
pyiceberg-write-sample
                     create ns + small table with pyiceberg and append 3 rows
pyiceberg-append     append JSON rows to a table of a pyiceberg SqlCatalog
pyiceberg-static     open a table from its metadata.json (pyiceberg StaticTable,
                     local or s3://); dump as pyiceberg-sql does
pyiceberg-rest-append
                     append JSON rows to a table of an Iceberg REST catalog
                     (SigV4-signed, as an outside writer)

Output: exactly one JSON document on stdout. On error: a message on stderr
and exit status 1 (2 for bad command-line usage).

Value encoding (the same for both readers; conversion is driven by the Arrow
type of each column, so the two readers agree for the same Iceberg type):
  null                       -> null
  boolean                    -> true / false
  int / long (any integer)   -> JSON integer
  double                     -> JSON number (shortest round-trip repr)
  float (32-bit)             -> JSON number, shortest text that parses back
                                to the same float32 (1.1f -> 1.1, not
                                1.100000023841858)
  NaN / +inf / -inf          -> the strings "NaN", "Infinity", "-Infinity"
  decimal(p, s)              -> string, plain notation, exactly s fraction
                                digits ("10.50", "-3.25", "0.00")
  string                     -> string
  uuid                       -> string, canonical lower-case 8-4-4-4-12
  binary / fixed(L)          -> string, lower-case hex without prefix
                                ("01ff"); NOT base64
  date                       -> "YYYY-MM-DD"
  time                       -> "HH:MM:SS.ffffff" (9 digits for ns)
  timestamp                  -> "YYYY-MM-DDTHH:MM:SS.ffffff" (always 6
                                fraction digits; 9 for timestamp_ns)
  timestamptz                -> same, in UTC, suffixed "+00:00"
  list                       -> JSON array
  struct                     -> JSON object {field: value}
  map                        -> JSON object; keys are converted as above and
                                then stringified if not already strings
                                (int key 1 -> "1")

Rows are JSON arrays in column order. Rows are sorted in Python by the
--order-by columns (ascending) followed by all remaining output columns as
tie-breakers; nulls sort last, NaN after all numbers. Sorting uses the native
values (decimals numerically, timestamps chronologically), not the JSON text.
"""

import argparse
import decimal
import glob
import importlib.util
import json
import math
import os
import struct
import sys
import uuid
from datetime import date, datetime, timedelta, timezone
from urllib.parse import unquote, urlparse


class UsageError(Exception):
    pass


# --------------------------------------------------------------------------
# Arrow -> native Python values (sortable) -> JSON values
# --------------------------------------------------------------------------

class MapVal(list):
    """List of (key, value) pairs; rendered as a JSON object."""


_EPOCH = datetime(1970, 1, 1)
_EPOCH_DATE = date(1970, 1, 1)
_UNIT_PER_SEC = {"s": 1, "ms": 1000, "us": 1_000_000, "ns": 1_000_000_000}


def _f32_text(x):
    """Shortest decimal text that round-trips to the same float32."""
    target = struct.pack("<f", x)
    for prec in range(1, 18):
        s = "%.*g" % (prec, x)
        if struct.pack("<f", float(s)) == target:
            return float(s)
    return x


def _fmt_fraction(frac, unit):
    if unit == "ns":
        return "%09d" % frac
    # s / ms / us are all rendered with 6 digits
    return "%06d" % (frac * (1_000_000 // _UNIT_PER_SEC[unit]))


def _fmt_timestamp(v, unit, tz):
    per = _UNIT_PER_SEC[unit]
    secs, frac = divmod(v, per)
    dt = _EPOCH + timedelta(seconds=secs)
    s = "%04d-%02d-%02dT%02d:%02d:%02d.%s" % (dt.year, dt.month, dt.day, dt.hour, dt.minute,
                                              dt.second, _fmt_fraction(frac, unit))
    if tz is not None:
        s += "+00:00"  # Arrow stores instants normalized to UTC
    return s


def _fmt_time(v, unit):
    per = _UNIT_PER_SEC[unit]
    secs, frac = divmod(v, per)
    h, rem = divmod(secs, 3600)
    m, s = divmod(rem, 60)
    return "%02d:%02d:%02d.%s" % (h, m, s, _fmt_fraction(frac, unit))


def arrow_to_native(arr):
    """Convert a pyarrow Array to a list of sortable Python values."""
    import pyarrow as pa
    import pyarrow.types as pt

    t = arr.type
    if isinstance(t, pa.BaseExtensionType):
        storage = arr.storage
        if getattr(t, "extension_name", "") == "arrow.uuid":
            return [None if b is None else str(uuid.UUID(bytes=b)) for b in storage.to_pylist()]
        return arrow_to_native(storage)
    if pt.is_dictionary(t):
        return arrow_to_native(arr.dictionary_decode())
    if pt.is_null(t):
        return [None] * len(arr)
    if pt.is_boolean(t) or pt.is_integer(t):
        return arr.to_pylist()
    if pt.is_float32(t):
        return [None if x is None else (x if not math.isfinite(x) else _f32_text(x))
                for x in arr.to_pylist()]
    if pt.is_floating(t):
        return arr.to_pylist()
    if pt.is_decimal(t):
        return arr.to_pylist()  # decimal.Decimal with exponent == -scale
    if pt.is_string(t) or pt.is_large_string(t):
        return arr.to_pylist()
    if hasattr(pt, "is_string_view") and pt.is_string_view(t):
        return arr.cast(pa.string()).to_pylist()
    if hasattr(pt, "is_binary_view") and pt.is_binary_view(t):
        return arr.cast(pa.binary()).to_pylist()
    if pt.is_binary(t) or pt.is_large_binary(t) or pt.is_fixed_size_binary(t):
        return arr.to_pylist()  # bytes
    if pt.is_date32(t) or pt.is_date64(t):
        days = arr.cast(pa.date32()).cast(pa.int32()).to_pylist()
        out = []
        for d in days:
            if d is None:
                out.append(None)
            else:
                x = _EPOCH_DATE + timedelta(days=d)
                out.append("%04d-%02d-%02d" % (x.year, x.month, x.day))
        return out
    if pt.is_timestamp(t):
        raw = arr.cast(pa.int64()).to_pylist()
        return [None if v is None else _fmt_timestamp(v, t.unit, t.tz) for v in raw]
    if pt.is_time(t):
        raw = arr.cast(pa.int64()).to_pylist()
        return [None if v is None else _fmt_time(v, t.unit) for v in raw]
    if pt.is_map(t):
        offs = arr.offsets.to_pylist()
        keys = arrow_to_native(arr.keys)
        items = arrow_to_native(arr.items)
        valid = arr.is_valid().to_pylist()
        return [MapVal(zip(keys[offs[i]:offs[i + 1]], items[offs[i]:offs[i + 1]])) if valid[i] else None
                for i in range(len(arr))]
    if pt.is_list(t) or pt.is_large_list(t):
        offs = arr.offsets.to_pylist()
        vals = arrow_to_native(arr.values)
        valid = arr.is_valid().to_pylist()
        return [vals[offs[i]:offs[i + 1]] if valid[i] else None for i in range(len(arr))]
    if pt.is_fixed_size_list(t):
        n = t.list_size
        vals = arrow_to_native(arr.values)
        base = arr.offset * n
        valid = arr.is_valid().to_pylist()
        return [vals[base + i * n: base + (i + 1) * n] if valid[i] else None for i in range(len(arr))]
    if pt.is_struct(t):
        names = [t.field(i).name for i in range(t.num_fields)]
        children = [arrow_to_native(c) for c in arr.flatten()]
        valid = arr.is_valid().to_pylist()
        return [{n: c[i] for n, c in zip(names, children)} if valid[i] else None
                for i in range(len(arr))]
    raise UsageError("unsupported Arrow type in result: %s" % t)


def table_to_native_columns(table):
    """pyarrow Table -> list of columns, each a list of native values."""
    cols = []
    for col in table.columns:
        vals = []
        for chunk in col.chunks:
            vals.extend(arrow_to_native(chunk))
        cols.append(vals)
    return cols


def sort_key(v):
    if v is None:
        return (1,)
    if isinstance(v, float):
        return (0, (1, 0.0) if math.isnan(v) else (0, v))
    if isinstance(v, MapVal):
        return (0, tuple((sort_key(k), sort_key(x)) for k, x in v))
    if isinstance(v, dict):
        return (0, tuple(sort_key(x) for x in v.values()))
    if isinstance(v, list):
        return (0, tuple(sort_key(x) for x in v))
    return (0, v)


def to_json_value(v):
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "Infinity" if v > 0 else "-Infinity"
        return v
    if isinstance(v, decimal.Decimal):
        return format(v, "f")
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).hex()
    if isinstance(v, MapVal):
        out = {}
        for k, x in v:
            jk = to_json_value(k)
            out[jk if isinstance(jk, str) else json.dumps(jk)] = to_json_value(x)
        return out
    if isinstance(v, dict):
        return {k: to_json_value(x) for k, x in v.items()}
    if isinstance(v, list):
        return [to_json_value(x) for x in v]
    raise UsageError("cannot encode value of Python type %s" % type(v).__name__)


def rows_from_table(table, order_by):
    names = table.column_names
    cols = table_to_native_columns(table)
    rows = [list(r) for r in zip(*cols)] if cols else []
    for c in order_by:
        if c not in names:
            raise UsageError("--order-by column %r is not in the output columns %s" % (c, names))
    idx = [names.index(c) for c in order_by]
    idx += [i for i in range(len(names)) if i not in idx]
    rows.sort(key=lambda r: tuple(sort_key(r[i]) for i in idx))
    return [[to_json_value(v) for v in r] for r in rows]


def split_list(s):
    if s is None:
        return []
    return [x.strip() for x in s.split(",") if x.strip()]


def emit(doc):
    sys.stdout.write(json.dumps(doc, allow_nan=False))
    sys.stdout.write("\n")
    sys.stdout.flush()


# --------------------------------------------------------------------------
# DuckDB
# --------------------------------------------------------------------------

def _sql_str(s):
    return "'" + str(s).replace("'", "''") + "'"


def _sql_ident(s):
    return '"' + s.replace('"', '""') + '"'


def find_extension(name, duckdb_version):
    """Locate <name>.duckdb_extension inside the duckdb-extension-<name> wheel."""
    pkg = "duckdb_extension_" + name
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("Python package %s is not installed (pip install duckdb-extension-%s==%s)"
                         % (pkg, name, duckdb_version))
    for root in spec.submodule_search_locations:
        exact = os.path.join(root, "extensions", "v" + duckdb_version, name + ".duckdb_extension")
        if os.path.isfile(exact):
            return exact
    found = []
    for root in spec.submodule_search_locations:
        found += glob.glob(os.path.join(root, "extensions", "*", name + ".duckdb_extension"))
    raise UsageError("no %s.duckdb_extension for DuckDB v%s in package %s (found: %s)"
                     % (name, duckdb_version, pkg, found or "none"))


def local_path(location):
    if location.startswith("file:"):
        p = urlparse(location)
        if p.netloc not in ("", "localhost"):
            raise UsageError("unsupported file URL (remote host): %s" % location)
        return unquote(p.path)
    return location


def cmd_duckdb(args):
    import duckdb

    loc = args.metadata
    is_s3 = loc.startswith("s3://") or loc.startswith("s3a://")
    if is_s3:
        if loc.startswith("s3a://"):
            loc = "s3://" + loc[len("s3a://"):]
        if not args.s3_endpoint:
            raise UsageError("s3:// metadata location needs --s3-endpoint host:port")
    else:
        loc = local_path(loc)
        if not os.path.isfile(loc):
            raise UsageError("metadata file not found: %s" % loc)

    # No INSTALL, no writes to any extension directory: extensions are LOADed
    # straight from the wheel files, so parallel processes cannot race, and
    # auto-install is off so nothing ever tries the network.
    con = duckdb.connect(":memory:", config={
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "threads": args.threads,
    })
    ver = duckdb.__version__.lstrip("v")
    to_load = ["avro", "iceberg"] + (["httpfs"] if is_s3 else [])
    for ext in to_load:
        con.execute("LOAD " + _sql_str(find_extension(ext, ver)))
    con.execute("SET TimeZone = 'UTC'")

    if is_s3:
        endpoint = args.s3_endpoint
        for pfx in ("http://", "https://"):
            if endpoint.startswith(pfx):
                endpoint = endpoint[len(pfx):]
        parts = ["TYPE s3", "ENDPOINT " + _sql_str(endpoint.rstrip("/")),
                 "URL_STYLE 'path'", "USE_SSL false"]
        if args.s3_key is not None:
            parts.append("KEY_ID " + _sql_str(args.s3_key))
        if args.s3_secret is not None:
            parts.append("SECRET " + _sql_str(args.s3_secret))
        parts.append("REGION " + _sql_str(args.s3_region or "us-east-1"))
        con.execute("CREATE SECRET floe_s3 (%s)" % ", ".join(parts))

    scan_args = [_sql_str(loc)]
    if args.snapshot_id is not None:
        scan_args.append("snapshot_from_id => %d" % args.snapshot_id)
    cols = split_list(args.columns)
    select = ", ".join(_sql_ident(c) for c in cols) if cols else "*"
    if args.timing:
        emit(time_reads(con, "iceberg_scan(%s)" % ", ".join(scan_args), args.timing))
        return
    where = " WHERE %s" % args.filter if args.filter else ""
    rel = con.sql("SELECT %s FROM iceberg_scan(%s)%s" % (select, ", ".join(scan_args), where))
    columns = [{"name": n, "type": str(t)} for n, t in zip(rel.columns, rel.types)]
    table = rel.to_arrow_table()
    rows = rows_from_table(table, split_list(args.order_by))
    doc = {"columns": columns, "rows": rows}
    if args.filter:
        # What the plan read, with and without the filter: pruning at work.
        source = "iceberg_scan(%s)" % ", ".join(scan_args)
        doc["files_read"] = files_read(con, "SELECT * FROM %s%s" % (source, where))
        doc["files_total"] = files_read(con, "SELECT * FROM %s" % source)
    emit(doc)


def files_read(con, sql):
    """The number of files DuckDB's iceberg scan read for `sql` (from EXPLAIN ANALYZE)."""
    import re

    plan = "\n".join(row[1] for row in con.sql("EXPLAIN ANALYZE " + sql).fetchall())
    found = re.findall(r"Total Files Read:\s*(\d+)", plan)
    if len(found) != 1:
        raise UsageError("no single 'Total Files Read' in DuckDB's plan:\n%s" % plan)
    return int(found[0])


def time_reads(con, source, runs):
    """Best-of-`runs` milliseconds of `count(*)` and of a full scan of `source`."""
    import time

    def best(sql):
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            result = con.sql(sql).to_arrow_table()
            times.append((time.perf_counter() - start) * 1000)
        return min(times), result

    count_ms, count = best("SELECT count(*) AS n FROM %s" % source)
    scan_ms, scan = best("SELECT * FROM %s" % source)
    return {"rows": count.column(0)[0].as_py(), "scanned": scan.num_rows,
            "count_ms": round(count_ms, 2), "scan_ms": round(scan_ms, 2)}


# --------------------------------------------------------------------------
# pyiceberg
# --------------------------------------------------------------------------

def open_sql_catalog(args):
    from pyiceberg.catalog.sql import SqlCatalog

    props = {"uri": args.uri, "warehouse": args.warehouse}
    if args.s3_endpoint:
        ep = args.s3_endpoint
        if "://" not in ep:
            ep = "http://" + ep
        props["s3.endpoint"] = ep
        props["s3.region"] = args.s3_region or "us-east-1"
        props["s3.force-virtual-addressing"] = "false"
    if args.s3_key is not None:
        props["s3.access-key-id"] = args.s3_key
    if args.s3_secret is not None:
        props["s3.secret-access-key"] = args.s3_secret
    return SqlCatalog(args.catalog_name, **props)


def _jsonable(v):
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if hasattr(v, "value"):  # enums
        return v.value
    return str(v)


def map_keys(value):
    """Keys of an Arrow map as pyarrow returns it (a list of (key, value) pairs)."""
    if not value:
        return []
    if isinstance(value, dict):
        return sorted(value.keys())
    return sorted(k for k, _ in value)


def referenced_files(table):
    """Every file the table's metadata references, sorted: the current metadata file, the
    metadata log, and per snapshot its manifest list, manifests and live data and delete
    files."""
    md = table.metadata
    paths = {table.metadata_location}
    paths.update(entry.metadata_file for entry in md.metadata_log)
    for snapshot in md.snapshots:
        paths.add(snapshot.manifest_list)
        for manifest in snapshot.manifests(table.io):
            paths.add(manifest.manifest_path)
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
                paths.add(entry.data_file.file_path)
    return sorted(paths)


def describe_files(table):
    """The current snapshot's data and delete files as pyiceberg sees them, with the Parquet
    codec of each (local files only) and which columns have lower/upper bounds."""
    import pyarrow.parquet as pq

    out = []
    for task_file in table.inspect.files().to_pylist():
        path = task_file["file_path"]
        codec = None
        local = local_path(path) if not path.startswith("s3") else None
        if local and os.path.isfile(local):
            md = pq.ParquetFile(local).metadata
            codec = md.row_group(0).column(0).compression if md.num_row_groups else None
        out.append({
            "file_path": path,
            "file_size_in_bytes": task_file["file_size_in_bytes"],
            "content": task_file["content"],
            "record_count": task_file["record_count"],
            "equality_ids": task_file.get("equality_ids"),
            "lower_bounds": map_keys(task_file.get("lower_bounds")),
            "upper_bounds": map_keys(task_file.get("upper_bounds")),
            "codec": codec,
        })
    out.sort(key=lambda f: (f["content"], f["record_count"]))
    return out


def partition_dict(record):
    """A file's partition record (a pyarrow struct as a dict) with JSON values."""
    def value(v):
        return v.isoformat() if hasattr(v, "isoformat") else to_json_value(v)
    return {k: value(v) for k, v in (record or {}).items()}


def describe_partitions(table):
    """The current snapshot's data files with their partition values (from the manifests),
    and every position-delete file whose partition is not that of the data files it points
    into (read from the delete file itself)."""
    import pyarrow.parquet as pq

    files = table.inspect.files().to_pylist()
    data = {f["file_path"]: partition_dict(f["partition"]) for f in files if f["content"] == 0}
    mismatches = []
    deletes = []
    for f in files:
        if f["content"] != 1:
            continue
        own = partition_dict(f["partition"])
        deletes.append(own)
        with table.io.new_input(f["file_path"]).open() as stream:
            targets = set(pq.read_table(stream, columns=["file_path"]).column(0).to_pylist())
        for target in sorted(targets):
            if data.get(target) != own:
                mismatches.append({"delete_file": f["file_path"], "partition": own,
                                   "data_file": target, "data_partition": data.get(target)})
    checked, wrong = check_data_partitions(table)
    return {
        "data": sorted(({"partition": p, "path": path} for path, p in data.items()),
                       key=lambda d: d["path"]),
        "position_deletes": sorted(deletes, key=json.dumps),
        "position_delete_mismatches": mismatches,
        "rows_checked": checked,
        "data_partition_mismatches": wrong,
    }


def check_data_partitions(table):
    """Recomputes every row's partition tuple of every live data file with pyiceberg's own
    (pure Python: murmur3 from mmh3, date arithmetic) transforms and compares it with the
    file's partition in its manifest entry. Returns (rows checked, mismatches)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    snapshot = table.current_snapshot()
    if snapshot is None:
        return 0, []
    schema = table.schema()
    specs = table.specs()
    checked, wrong = 0, []
    for manifest in snapshot.manifests(table.io):
        if manifest.content.value != 0:
            continue
        spec = specs[manifest.partition_spec_id]
        fields = [(schema.find_field(f.source_id), f.transform) for f in spec.fields]
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
            f = entry.data_file
            if not fields:
                continue
            expected = [f.partition[i] for i in range(len(fields))]
            with table.io.new_input(f.file_path).open() as stream:
                rows = pq.read_table(stream, columns=[src.name for src, _ in fields])
            columns = []
            for (src, transform), column in zip(fields, rows.columns):
                # pyiceberg's transforms take its internal form: micros and days as integers.
                if pa.types.is_timestamp(column.type):
                    column = column.cast(pa.timestamp("us", tz=column.type.tz)).cast(pa.int64())
                elif pa.types.is_date(column.type):
                    column = column.cast(pa.int32())
                apply = transform.transform(src.field_type)
                columns.append([apply(v) for v in column.to_pylist()])
            for values in zip(*columns):
                checked += 1
                if list(values) != expected:
                    wrong.append({"file": f.file_path, "partition": [str(v) for v in expected],
                                  "row_values": [str(v) for v in values]})
                    break
    return checked, wrong


def describe_filtered(table, expression, columns, order_by):
    """The rows a scan with a row filter returns, and how many data files it plans against
    how many the snapshot has: partition pruning at work (or wrong partition values)."""
    scan = table.scan(row_filter=expression, **({"selected_fields": tuple(columns)} if columns else {}))
    planned = len(list(scan.plan_files()))
    total = sum(1 for f in table.inspect.files().to_pylist() if f["content"] == 0)
    arrow = scan.to_arrow()
    if columns:
        arrow = arrow.select(columns)
    return {"rows": rows_from_table(arrow, order_by), "planned_files": planned,
            "data_files": total}


def cmd_pyiceberg_sql(args):
    catalog = open_sql_catalog(args)
    describe_table(catalog.load_table(args.table), args)


def s3_properties(args):
    """pyiceberg FileIO properties for --s3-endpoint / --s3-key / --s3-secret / --s3-region."""
    props = {}
    if args.s3_endpoint:
        ep = args.s3_endpoint
        if "://" not in ep:
            ep = "http://" + ep
        props["s3.endpoint"] = ep
        props["s3.region"] = args.s3_region or "us-east-1"
        props["s3.force-virtual-addressing"] = "false"
    if args.s3_key is not None:
        props["s3.access-key-id"] = args.s3_key
    if args.s3_secret is not None:
        props["s3.secret-access-key"] = args.s3_secret
    return props


def cmd_pyiceberg_static(args):
    from pyiceberg.table import StaticTable

    loc = args.metadata
    if loc.startswith("s3a://"):
        loc = "s3://" + loc[len("s3a://"):]
    if not loc.startswith("s3://"):
        loc = local_path(loc)
    table = StaticTable.from_metadata(loc, properties=s3_properties(args))
    describe_table(table, args)


def cmd_pyiceberg_rest_append(args):
    """Append rows to a table of a SigV4-signed Iceberg REST catalog, as an outside writer."""
    import pyarrow as pa
    from pyiceberg.catalog.rest import RestCatalog

    props = {
        "uri": args.uri,
        "rest.sigv4-enabled": "true",
        "rest.signing-name": args.signing_name,
        "rest.signing-region": args.s3_region or "us-east-1",
        "client.access-key-id": args.s3_key,
        "client.secret-access-key": args.s3_secret,
        "client.region": args.s3_region or "us-east-1",
    }
    if args.warehouse:
        props["warehouse"] = args.warehouse
    props.update(s3_properties(args))
    catalog = RestCatalog("rest", **props)
    table = catalog.load_table(args.table)
    rows = json.loads(args.rows)
    write_rows(table, pa.Table.from_pylist(rows, schema=table.schema().as_arrow()), args.rewrite)
    table = catalog.load_table(args.table)
    emit({"metadata_location": table.metadata_location,
          "snapshot_id": table.metadata.current_snapshot_id,
          "rows_written": len(rows)})


def describe_table(table, args):
    """Schema, snapshots and rows of a pyiceberg table, as one JSON document."""
    md = table.metadata
    schema = table.schema()

    doc = {
        "metadata_location": table.metadata_location,
        "format_version": md.format_version,
        "table_uuid": str(md.table_uuid),
        "location": md.location,
        "current_snapshot_id": md.current_snapshot_id,
        "schema_id": schema.schema_id,
        "schema": [{"id": f.field_id, "name": f.name, "type": str(f.field_type),
                    "required": f.required} for f in schema.fields],
        "identifier_fields": sorted(schema.identifier_field_names()),
        "identifier_field_ids": list(schema.identifier_field_ids),
        "partition_spec": [{"source_id": f.source_id, "field_id": f.field_id,
                            "name": f.name, "transform": str(f.transform)}
                           for f in table.spec().fields],
        "properties": dict(md.properties),
        "snapshots": [],
    }
    for s in md.snapshots:
        summ = s.summary
        doc["snapshots"].append({
            "snapshot_id": s.snapshot_id,
            "parent_id": s.parent_snapshot_id,
            "sequence_number": s.sequence_number,
            "timestamp_ms": s.timestamp_ms,
            "operation": _jsonable(summ.operation) if summ is not None else None,
            "summary": {k: _jsonable(v) for k, v in (summ.additional_properties.items()
                                                       if summ is not None else [])},
        })

    current = table.current_snapshot()
    if current is not None:
        doc["manifests"] = [{"path": m.manifest_path,
                             "content": m.content.name.lower(),
                             "length": m.manifest_length,
                             "added_files": m.added_files_count,
                             "existing_files": m.existing_files_count}
                            for m in current.manifests(table.io)]

    if args.files:
        doc["files"] = describe_files(table)
    if getattr(args, "partitions", False):
        doc["partitions"] = describe_partitions(table)
    if getattr(args, "filter", None):
        doc["filtered"] = describe_filtered(table, args.filter, split_list(args.columns),
                                            split_list(args.order_by))
    if getattr(args, "referenced", False):
        doc["referenced"] = referenced_files(table)

    cols = split_list(args.columns)
    try:
        scan_kw = {}
        if cols:
            scan_kw["selected_fields"] = tuple(cols)
        if args.snapshot_id is not None:
            scan_kw["snapshot_id"] = args.snapshot_id
        arrow = table.scan(**scan_kw).to_arrow()
        if cols:  # keep the requested column order
            arrow = arrow.select(cols)
        doc["columns"] = arrow.column_names
        doc["rows"] = rows_from_table(arrow, split_list(args.order_by))
    except UsageError:
        raise
    except Exception as e:  # e.g. equality deletes are not supported by pyiceberg
        doc["rows_error"] = "%s: %s" % (type(e).__name__, e)
    emit(doc)


SAMPLE_ROWS = [
    # id, name, amount, ts (UTC)
    (1, "alice", "10.50", datetime(2024, 1, 1, 0, 0, 0, tzinfo=timezone.utc)),
    (2, "bob", "-3.25", datetime(2024, 6, 15, 12, 34, 56, 789012, tzinfo=timezone.utc)),
    (3, None, None, None),
]


def cmd_pyiceberg_write_sample(args):
    import pyarrow as pa
    from pyiceberg.exceptions import NamespaceAlreadyExistsError
    from pyiceberg.schema import Schema
    from pyiceberg.types import (DecimalType, LongType, NestedField, StringType,
                                 TimestamptzType)

    catalog = open_sql_catalog(args)
    parts = args.table.rsplit(".", 1)
    if len(parts) != 2:
        raise UsageError("--table must be namespace.table, got %r" % args.table)
    ns = parts[0]
    try:
        catalog.create_namespace(ns)
    except NamespaceAlreadyExistsError:
        pass
    schema = Schema(
        NestedField(1, "id", LongType(), required=True),
        NestedField(2, "name", StringType(), required=False),
        NestedField(3, "amount", DecimalType(10, 2), required=False),
        NestedField(4, "ts", TimestamptzType(), required=False),
        identifier_field_ids=[1],
    )
    table = catalog.create_table(args.table, schema=schema,
                                 partition_spec=partition_spec(schema, args.partition or []),
                                 properties={"format-version": str(args.format_version)})
    arrow_schema = pa.schema([
        pa.field("id", pa.int64(), nullable=False),
        pa.field("name", pa.string()),
        pa.field("amount", pa.decimal128(10, 2)),
        pa.field("ts", pa.timestamp("us", tz="UTC")),
    ])
    data = pa.Table.from_pylist([
        {"id": i, "name": n, "amount": None if a is None else decimal.Decimal(a), "ts": t}
        for i, n, a, t in SAMPLE_ROWS
    ], schema=arrow_schema)
    table.append(data)
    table = catalog.load_table(args.table)
    emit({"metadata_location": table.metadata_location,
          "snapshot_id": table.metadata.current_snapshot_id,
          "rows_written": len(SAMPLE_ROWS)})


def partition_spec(schema, fields):
    """A pyiceberg PartitionSpec from fields written as Floe's config writes them:
    `col`, `day(col)`, `bucket(8, col)`, `truncate(4, col)`, ..."""
    import re
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.transforms import (BucketTransform, DayTransform, HourTransform,
                                      IdentityTransform, MonthTransform, TruncateTransform,
                                      YearTransform)

    simple = {"identity": IdentityTransform, "year": YearTransform, "month": MonthTransform,
              "day": DayTransform, "hour": HourTransform}
    out = []
    for i, text in enumerate(fields):
        m = re.fullmatch(r"\s*(\w+)\s*\(\s*(?:(\d+)\s*,\s*)?(\w+)\s*\)\s*|\s*(\w+)\s*", text)
        if not m:
            raise UsageError("bad partition field %r" % text)
        func, n, col = (m.group(1), m.group(2), m.group(3)) if m.group(1) else ("identity", None, m.group(4))
        if func == "bucket":
            transform, suffix = BucketTransform(int(n)), "_bucket"
        elif func == "truncate":
            transform, suffix = TruncateTransform(int(n)), "_trunc"
        elif func in simple and n is None:
            transform, suffix = simple[func](), ("" if func == "identity" else "_" + func)
        else:
            raise UsageError("bad partition field %r" % text)
        source = schema.find_field(col)
        out.append(PartitionField(source_id=source.field_id, field_id=1000 + i,
                                  transform=transform, name=col + suffix))
    return PartitionSpec(*out)


def write_rows(table, rows, rewrite):
    """Append `rows`; with `rewrite`, replace every file of the table by new files holding its
    rows and `rows`, as a compaction by another engine would (deletes applied, new positions)."""
    import pyarrow as pa

    if not rewrite:
        table.append(rows)
        return
    current = table.scan().to_arrow().cast(rows.schema)
    table.overwrite(pa.concat_tables([current, rows]))


def cmd_pyiceberg_append(args):
    """Append rows (a JSON list of objects) to an existing table, as an outside writer."""
    import pyarrow as pa

    catalog = open_sql_catalog(args)
    table = catalog.load_table(args.table)
    rows = json.loads(args.rows)
    arrow_schema = table.schema().as_arrow()
    write_rows(table, pa.Table.from_pylist(rows, schema=arrow_schema), args.rewrite)
    table = catalog.load_table(args.table)
    emit({"metadata_location": table.metadata_location,
          "snapshot_id": table.metadata.current_snapshot_id,
          "rows_written": len(rows)})


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        sys.stderr.write("iceberg_read.py: error: %s\n" % message)
        sys.exit(2)


def _add_s3(p):
    p.add_argument("--s3-endpoint", help="host:port of an S3-compatible endpoint (plain HTTP)")
    p.add_argument("--s3-key", help="access key id")
    p.add_argument("--s3-secret", help="secret access key")
    p.add_argument("--s3-region", help="region (default us-east-1)")


def _add_read_opts(p):
    p.add_argument("--order-by", help="comma-separated columns to sort by first (then all others)")
    p.add_argument("--partitions", action="store_true",
                   help="also list data files' partition values and check position deletes' own")
    p.add_argument("--filter", help="also scan with this row filter (pyiceberg expression "
                   "syntax) and count the data files planned")
    p.add_argument("--columns", help="comma-separated columns to output, in this order")
    p.add_argument("--snapshot-id", type=int, help="read this snapshot instead of the current one")


def _add_catalog(p):
    p.add_argument("--uri", required=True, help="SQLAlchemy URI, e.g. sqlite:////tmp/x/catalog.db")
    p.add_argument("--warehouse", required=True, help="warehouse location, e.g. file:///tmp/x/wh")
    p.add_argument("--table", required=True, help="namespace.table")
    p.add_argument("--catalog-name", default="default", help="catalog name (default: default)")


def build_parser():
    ap = _Parser(prog="iceberg_read.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    d = sub.add_parser("duckdb", help="read with DuckDB iceberg_scan()")
    d.add_argument("--metadata", required=True,
                   help="metadata.json location: local path, file:// URL or s3://bucket/key")
    _add_s3(d)
    _add_read_opts(d)
    d.add_argument("--threads", type=int, default=2, help="DuckDB threads (default 2)")
    d.add_argument("--timing", type=int, metavar="RUNS",
                   help="print best-of-RUNS milliseconds of count(*) and a full scan, not rows")
    d.set_defaults(func=cmd_duckdb)

    r = sub.add_parser("pyiceberg-sql", help="read through pyiceberg SqlCatalog")
    _add_catalog(r)
    r.add_argument("--files", action="store_true",
                   help="also describe the current snapshot's files (codec, bounds)")
    r.add_argument("--referenced", action="store_true",
                   help="also list every file the table's metadata references")
    _add_s3(r)
    _add_read_opts(r)
    r.set_defaults(func=cmd_pyiceberg_sql)

    w = sub.add_parser("pyiceberg-write-sample", help="create a sample table with pyiceberg")
    _add_catalog(w)
    _add_s3(w)
    w.add_argument("--format-version", type=int, default=2, choices=[1, 2],
                   help="table format version (pyiceberg 0.12 cannot write v3)")
    w.add_argument("--partition", action="append",
                   help="a partition field, e.g. 'day(ts)' or 'bucket(8, id)' (repeatable)")
    w.set_defaults(func=cmd_pyiceberg_write_sample)

    a = sub.add_parser("pyiceberg-append", help="append JSON rows to a table with pyiceberg")
    _add_catalog(a)
    _add_s3(a)
    a.add_argument("--rows", required=True, help='JSON list of row objects, e.g. [{"id": 1}]')
    a.add_argument("--rewrite", action="store_true",
                   help="rewrite the whole table into new files (a compaction) with the rows added")
    a.set_defaults(func=cmd_pyiceberg_append)

    st = sub.add_parser("pyiceberg-static",
                        help="open a table from its metadata.json with pyiceberg StaticTable")
    st.add_argument("--metadata", required=True,
                    help="metadata.json location: local path, file:// URL or s3://bucket/key")
    st.add_argument("--files", action="store_true",
                    help="also describe the current snapshot's files (codec, bounds)")
    st.add_argument("--referenced", action="store_true",
                   help="also list every file the table's metadata references")
    _add_s3(st)
    _add_read_opts(st)
    st.set_defaults(func=cmd_pyiceberg_static)

    ra = sub.add_parser("pyiceberg-rest-append",
                        help="append JSON rows to a table of a SigV4 Iceberg REST catalog")
    ra.add_argument("--uri", required=True, help="the REST catalog's base URI")
    ra.add_argument("--warehouse", help="warehouse (e.g. s3://table-bucket)")
    ra.add_argument("--table", required=True, help="namespace.table")
    ra.add_argument("--signing-name", default="s3tables", help="SigV4 signing name")
    _add_s3(ra)
    ra.add_argument("--rows", required=True, help='JSON list of row objects, e.g. [{"id": 1}]')
    ra.add_argument("--rewrite", action="store_true",
                   help="rewrite the whole table into new files (a compaction) with the rows added")
    ra.set_defaults(func=cmd_pyiceberg_rest_append)
    return ap


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except UsageError as e:
        sys.stderr.write("iceberg_read.py %s: error: %s\n" % (args.cmd, e))
        return 1
    except Exception as e:
        sys.stderr.write("iceberg_read.py %s: error: %s: %s\n" % (args.cmd, type(e).__name__, e))
        if os.environ.get("ICEBERG_READ_TRACEBACK"):
            import traceback
            traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
