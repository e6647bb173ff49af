#!/usr/bin/env python3
"""End-to-end throughput of `floe run`: Debezium events in tansu -> a table in the local catalog.

Loads N change events (PostgreSQL connector shape with the Connect schema envelope, ~2 KB each:
inserts, then updates of every third row, deletes and tombstones of every fifth) into a fresh
topic with P partitions, starts `floe run` on them, waits until the consumer group's committed
offsets reach the end of every partition, stops Floe with SIGTERM, and reports:

- events per CPU-second of the floe process (user + sys), the figure that matters: the test
  broker (tansu with SQLite) is slower than Floe, so wall-clock events/s measures the broker;
- wall-clock events/s, for reference;
- peak RSS of the floe process (its VmHWM, read from /proc while it runs);
- commits, data files and delete files per commit, from the table's snapshots.

With --backfill it runs `floe backfill` on the topic instead (it stops by itself at the end
offsets), for the peak RSS of a bounded load at default settings. With --no-schema the keys and
values are only the payload (the JsonConverter's schemas.enable=false), ~0.5 KB each.

Needs the test environment (scripts/test-env.sh up kafka) and a built floe binary.

Usage: benches/e2e.py [--events 100000] [--partitions 4] [--backfill] [--no-schema]
                      [--floe target/release/floe]
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def committed_reaches_end(brokers, topic, group, partitions):
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": brokers, "group.id": group, "enable.auto.commit": False})
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        committed = c.committed(tps, timeout=10)
        for tp in committed:
            _, high = c.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=10)
            if tp.offset < high:
                return False
        return True
    finally:
        c.close()


def topic_events(brokers, topic, partitions):
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": brokers, "group.id": "bench-watermarks"})
    try:
        return sum(c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions))
    finally:
        c.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000, help="approximate number of events")
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--floe", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "floe"))
    ap.add_argument("--backfill", action="store_true", help="run floe backfill instead of floe run")
    ap.add_argument("--no-schema", action="store_true",
                    help="events without the Connect schema envelope (schemas.enable=false)")
    ap.add_argument("--brokers", default=os.environ.get("FLOE_TEST_KAFKA", "127.0.0.1:19092"))
    args = ap.parse_args()
    if not os.path.exists(args.floe):
        sys.exit(f"no floe binary at {args.floe}: cargo build --release, or pass --floe")

    # produce_sample.py makes count inserts + count/3 updates + 2*count/5 deletes and tombstones.
    count = int(args.events / (1 + 1 / 3 + 2 / 5))
    topic = f"bench_{uuid.uuid4().hex[:8]}"
    group = f"bench_{uuid.uuid4().hex[:8]}"
    t0 = time.time()
    subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts/fixtures/produce_sample.py"), "--brokers", args.brokers,
         "--topic", topic, "--count", str(count), "--partitions", str(args.partitions)]
        + (["--no-schema"] if args.no_schema else []),
        check=True, stdout=subprocess.DEVNULL)
    produced_in = time.time() - t0

    work = tempfile.mkdtemp(prefix="floe-bench-")
    config = os.path.join(work, "connector.toml")
    with open(config, "w") as f:
        f.write(f"""
[kafka]
brokers = "{args.brokers}"
group_id = "{group}"
topics = ["{topic}"]
[[tables.route]]
topic = "{topic}"
table = "bench.customers"
[catalog]
type = "local"
path = "{work}/data"
[flush]
interval = "2s"
commit_interval = "5s"
[metrics]
enabled = false
""")
    log = open(os.path.join(work, "floe.log"), "w")
    start = time.time()
    if args.backfill:
        floe = subprocess.Popen([args.floe, "--log-format", "json", "backfill", "--config", config],
                                stderr=log, stdout=subprocess.DEVNULL)
        status, usage, peak = wait_with_peak(floe.pid)
        wall = time.time() - start
        if os.waitstatus_to_exitcode(status) != 0:
            sys.exit(f"floe backfill exited with {os.waitstatus_to_exitcode(status)}; see {work}/floe.log")
        report(args, work, produced_in, wall, usage, peak,
               topic_events(args.brokers, topic, args.partitions))
        return
    floe = subprocess.Popen([args.floe, "--log-format", "json", "run", "--config", config], stderr=log)
    peak = 0
    try:
        while not committed_reaches_end(args.brokers, topic, group, args.partitions):
            if floe.poll() is not None:
                sys.exit(f"floe exited early; see {work}/floe.log")
            peak = max(peak, vm_hwm_kib(floe.pid))
            time.sleep(0.5)
        wall = time.time() - start
        floe.send_signal(signal.SIGTERM)
        status, usage, at_end = wait_with_peak(floe.pid)
        peak = max(peak, at_end)
        floe.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if floe.returncode is None:
            floe.kill()
    if floe.returncode != 0:
        sys.exit(f"floe exited with {floe.returncode}; see {work}/floe.log")
    report(args, work, produced_in, wall, usage, peak, None)


def vm_hwm_kib(pid):
    """The process's own peak RSS so far (0 once it has exited)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def wait_with_peak(pid):
    """Waits for the child: its exit status, its own CPU time (wait4) and its peak RSS, read
    from /proc every 10 ms while it runs. wait4's ru_maxrss of a child is not its own: it
    includes this process's RSS at the fork."""
    peak = 0
    while True:
        peak = max(peak, vm_hwm_kib(pid))
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return status, usage, peak
        time.sleep(0.01)


def report(args, work, produced_in, wall, usage, peak_kib, events):
    """Prints the figures; `events` from the log's last line when None (floe run)."""
    cpu = usage.ru_utime + usage.ru_stime
    snapshots = []
    with open(os.path.join(work, "floe.log")) as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            fields = rec.get("fields", {})
            if fields.get("message") == "committed":
                snapshots.append(fields)
            if events is None and fields.get("message") == "floe run stopped":
                events = fields.get("records", 0)
    data_files = sum(s.get("data_files", 0) for s in snapshots)
    delete_files = sum(s.get("delete_files", 0) for s in snapshots)
    figures = {
        "mode": "backfill" if args.backfill else "run",
        "schema_envelope": not args.no_schema,
        "events": events,
        "partitions": args.partitions,
        "produce_seconds": round(produced_in, 1),
        "floe_wall_seconds": round(wall, 1),
        "floe_cpu_seconds": round(cpu, 2),
        "events_per_cpu_second": round(events / cpu) if cpu else None,
        "events_per_wall_second": round(events / wall) if wall else None,
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "commits": len(snapshots),
        "data_files_per_commit": round(data_files / len(snapshots), 2) if snapshots else None,
        "delete_files_per_commit": round(delete_files / len(snapshots), 2) if snapshots else None,
        "work_dir": work,
    }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
