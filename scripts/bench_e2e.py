#!/usr/bin/env python3
"""The end-to-end benchmark (run it through scripts/bench-e2e.sh, which builds and installs).

One fixed workload, at QoS 0 and at QoS 1: DEVICES simulated devices in 10 sites publish
MESSAGES JSON messages (a nanosecond timestamp and three float fields) on
sensors/<site>/<device>/env to a Mosquitto started here on a free port. In the same run:

1. the broker's limit: `mosquitto_sub -t 'sensors/#'` with its output counted and thrown
   away, timed from the first publish until it has every message;
2. the collector, with the local store and an InfluxDB v2 sink to a VictoriaMetrics started
   here, timed from the first publish until every reading is in the local store (and, after,
   in VictoriaMetrics); its CPU seconds (user + system, from /proc) per million field values,
   and its peak RSS (VmHWM).

Each is run RUNS times; the medians and the ratio collector / broker limit are printed, and
every run's figures with them. GZIP=true|false sets the sink's `gzip` (by default off: the
server is on this machine). Nothing here is a pass/fail test: the figures go to
BENCHMARKS.md.
"""

import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

BIN = os.environ["BIN"]
DEVICES = int(os.environ.get("DEVICES", "1000"))
MESSAGES = int(os.environ.get("MESSAGES", "500000"))
RUNS = int(os.environ.get("RUNS", "3"))
QOS_LIST = [int(q) for q in os.environ.get("QOS", "0 1").split()]
INFLIGHT = int(os.environ.get("INFLIGHT", "1000"))
CONNECTIONS = int(os.environ.get("CONNECTIONS", "10"))
SINKS = os.environ.get("SINKS", "local,influxdb").split(",")
FIELDS = 3
BROKER_PID = [0]
VM_PID = [0]
STALL = 10.0  # seconds without progress: the rest is lost (QoS 0 under overload)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} did not listen on {port}")


class Procs:
    def __init__(self):
        self.procs = []

    def start(self, args, **kw):
        p = subprocess.Popen(args, **kw)
        self.procs.append(p)
        return p

    def stop_all(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


def simulator(port, qos):
    samples = MESSAGES // DEVICES
    return [
        f"{BIN}/telemetry-simulator", "mqtt", "--port", str(port), "--devices", str(DEVICES),
        "--sites", "10", "--count", str(samples), "--qos", str(qos), "--format", "json",
        "--no-counter", "--connections", str(CONNECTIONS), "--max-inflight", "1000",
    ]


def run_simulator(port, qos):
    """Runs the simulator to its end; returns its CPU seconds (user + system)."""
    p = subprocess.Popen(simulator(port, qos), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        sys.exit(f"the simulator failed with {p.returncode}")
    return usage.ru_utime + usage.ru_stime


def cpu_of(pid):
    return proc_cpu_rss(pid)[0]


def broker_limit(work, procs, port, qos):
    """Messages per second a subscriber that discards everything receives."""
    sub = procs.start(
        ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-t", "sensors/#", "-q", str(qos),
         "-i", f"limit-{time.monotonic_ns()}"],
        stdout=subprocess.PIPE,
    )
    got = [0, time.monotonic()]

    def count():
        while True:
            chunk = sub.stdout.read1(1 << 16)
            if not chunk:
                return
            got[0] += chunk.count(b"\n")
            got[1] = time.monotonic()

    reader = threading.Thread(target=count, daemon=True)
    reader.start()
    time.sleep(0.5)  # mosquitto_sub has no "subscribed" signal; it subscribes on connect
    broker0, sub0 = cpu_of(BROKER_PID[0]), cpu_of(sub.pid)
    start = time.monotonic()
    sim_cpu = run_simulator(port, qos)
    while got[0] < MESSAGES and time.monotonic() - got[1] < STALL:
        time.sleep(0.01)
    cpu = {"simulator": sim_cpu, "broker": cpu_of(BROKER_PID[0]) - broker0,
           "subscriber": cpu_of(sub.pid) - sub0}
    sub.terminate()
    sub.wait()
    return got[0], got[1] - start, cpu


def metrics(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        m = re.match(r'telemetry_collector_readings_written_total\{sink="([^"]+)"\} (\d+)', line)
        if m:
            out[m.group(1)] = int(m.group(2))
        m = re.match(r'telemetry_collector_journal_commits_total (\d+)', line)
        if m:
            out["commits"] = int(m.group(1))
        m = re.match(r'telemetry_collector_journal_entries_read_total\{sink="([^"]+)",from="([^"]+)"\} (\d+)', line)
        if m:
            out[f"read {m.group(1)} {m.group(2)}"] = int(m.group(3))
        m = re.match(r'telemetry_collector_messages_received_total\{[^}]*\} (\d+)', line)
        if m:
            out["received"] = out.get("received", 0) + int(m.group(1))
    return out


def proc_cpu_rss(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) * 1024
    return cpu, hwm


def collector_run(work, procs, port, vm_port, qos):
    http_port = free_port()
    data = os.path.join(work, f"data-{time.monotonic_ns()}")
    config = os.path.join(work, "collector.toml")
    sinks = ""
    if "local" not in SINKS:
        sinks += "[sinks.local]\nenabled = false\n"
    if "influxdb" in SINKS:
        sinks += f"""
[[sinks.influxdb]]
name = "vm"
url = "http://127.0.0.1:{vm_port}"
org = "bench"
bucket = "bench"
token = "bench"
""" + (f"gzip = {os.environ['GZIP']}\n" if "GZIP" in os.environ else "")
    with open(config, "w") as f:
        f.write(f"""
data_dir = "{data}"
[http]
listen = "127.0.0.1:{http_port}"
[[sources.mqtt]]
name = "bench"
host = "127.0.0.1"
port = {port}
client_id = "bench-collector-{time.monotonic_ns()}"
[[sources.mqtt.subscriptions]]
topic = "sensors/{{site}}/{{device}}/{{measurement}}"
qos = {qos}
format = "json"
{sinks}
""")
    log = open(os.path.join(work, "collector.log"), "w")
    # As the systemd unit runs it (MALLOC_ARENA_MAX=2: see the unit).
    env = dict(os.environ, NO_COLOR="1", MALLOC_ARENA_MAX="2")
    # PROFILE="perf record -g -o perf.data --" runs the collector under a profiler (its CPU
    # and RSS figures are then the profiler's, not to be quoted).
    prefix = os.environ.get("PROFILE", "").split()
    collector_bin = os.environ.get("COLLECTOR", f"{BIN}/telemetry-collector")
    c = procs.start(prefix + [collector_bin, "run", "-c", config], stderr=log, env=env)
    deadline = time.monotonic() + 30
    while "subscribed" not in open(log.name).read():
        if time.monotonic() > deadline or c.poll() is not None:
            sys.exit("the collector did not subscribe:\n" + open(log.name).read())
        time.sleep(0.05)
    sinks_names = (["local"] if "local" in SINKS else []) + (
        ["influxdb:vm"] if "influxdb" in SINKS else [])
    first = sinks_names[0]
    broker0, vm0 = cpu_of(BROKER_PID[0]), cpu_of(VM_PID[0])
    start = time.monotonic()
    sim_cpu = run_simulator(port, qos)
    published = time.monotonic() - start
    # Per sink: readings written, and when that number last grew.
    seen = {s: (0, start) for s in sinks_names}
    done = {}
    all_received = float("nan")
    while len(done) < len(sinks_names):
        m = metrics(http_port)
        now = time.monotonic()
        received = m.get("received", 0)
        if received >= MESSAGES and all_received != all_received:
            all_received = now - start
        for s in sinks_names:
            if m.get(s, 0) != seen[s][0]:
                seen[s] = (m.get(s, 0), now)
        for s in sinks_names:
            n, at = seen[s]
            complete = n >= MESSAGES or (received and n >= received and now - at > 2.0)
            if s not in done and complete:
                done[s] = (n, at - start)
        if all(now - at > STALL for _, at in seen.values()):
            break
        # /metrics renders a line per device (two per device: 20,000 lines at 10,000
        # devices): scraped every 20 ms all along, it would cost the collector several % of
        # its CPU, which Prometheus scraping every 15 s does not. Poll finely only near the end.
        near_end = min(n for n, _ in seen.values()) >= 0.8 * MESSAGES
        time.sleep(0.02 if near_end else 0.25)
    cpu, rss = proc_cpu_rss(c.pid)
    others = {"simulator": sim_cpu, "broker": cpu_of(BROKER_PID[0]) - broker0,
              "victoria-metrics": cpu_of(VM_PID[0]) - vm0}
    final = metrics(http_port)
    received, commits = final.get("received", 0), final.get("commits", 0)
    reads = ", ".join(f"{k[5:]} {v}" for k, v in sorted(final.items()) if k.startswith("read "))
    # FOOTPRINT_WAIT=12 leaves the collector idle that long first: the local store settles
    # (compacts what it had not yet) 10 s after writes stop.
    time.sleep(float(os.environ.get("FOOTPRINT_WAIT", "0")))
    c.send_signal(signal.SIGINT if prefix else signal.SIGTERM)
    c.wait(timeout=60)
    footprint = {name: file_size(os.path.join(data, name))
                 for name in ["store.db", "store.db-wal", "journal.db", "journal.db-wal"]}
    if os.path.exists(os.path.join(data, "store.db")):
        # The pages in use: the file less its free pages (which the next writes reuse).
        import sqlite3
        db = sqlite3.connect(f"file:{os.path.join(data, 'store.db')}?mode=ro", uri=True)
        pages = [db.execute(f"PRAGMA {p}").fetchone()[0]
                 for p in ("page_size", "page_count", "freelist_count")]
        db.close()
        footprint["store.db in use"] = pages[0] * (pages[1] - pages[2])
    if "influxdb" in SINKS:
        # What VictoriaMetrics holds in memory goes to its data parts first.
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{vm_port}/internal/force_flush", timeout=30).read()
        except OSError as e:
            print(f"  (VictoriaMetrics force_flush: {e})")
        footprint["vm"] = dir_size(os.path.join(work, "vm"))
        footprint["vm data parts"] = dir_size(os.path.join(work, "vm", "data"))
    stored, elapsed = done.get(first, (0, float("nan")))
    return {
        "received": received,
        "commits": commits,
        "reads": reads,
        "stored": stored,
        "elapsed": elapsed,
        "all_sinks": max((t for _, t in done.values()), default=float("nan")),
        "published": published,
        "all_received": all_received,
        "cpu": cpu,
        "rss": rss,
        "others": others,
        "footprint": footprint,
    }


def file_size(path):
    return os.path.getsize(path) if os.path.exists(path) else 0


def dir_size(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def main():
    work = tempfile.mkdtemp(prefix="bench-e2e-")
    procs = Procs()
    try:
        port = free_port()
        with open(os.path.join(work, "mosquitto.conf"), "w") as f:
            f.write(f"""user {os.environ.get('USER') or subprocess.check_output(['id', '-un']).decode().strip()}
listener {port} 127.0.0.1
allow_anonymous true
max_inflight_messages {INFLIGHT}
max_queued_messages 0
""")
        BROKER_PID[0] = procs.start(["/usr/sbin/mosquitto", "-c", os.path.join(work, "mosquitto.conf")],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).pid
        wait_port(port, "mosquitto")
        vm_port = free_port()
        VM_PID[0] = procs.start(["victoria-metrics", f"-httpListenAddr=127.0.0.1:{vm_port}",
                     f"-storageDataPath={work}/vm", "-loggerLevel=ERROR"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).pid
        wait_port(vm_port, "victoria-metrics")
        print(f"# {DEVICES} devices, {MESSAGES} messages of {FIELDS} float fields, "
              f"sinks {','.join(SINKS)}, mosquitto max_inflight_messages {INFLIGHT}, "
              f"{os.cpu_count()} cores")
        for qos in QOS_LIST:
            rows = []
            for run in range(RUNS):
                got, t, limit_cpu = broker_limit(work, procs, port, qos)
                limit = got / t
                r = collector_run(work, procs, port, vm_port, qos)
                rate = r["stored"] / r["elapsed"]
                values = r["stored"] * FIELDS
                cpu_us = r["cpu"] / values * 1e6 if values else float("nan")
                rows.append((limit, rate, rate / limit, cpu_us, r["rss"] / 2**20))
                print(f"QoS {qos} run {run + 1}: broker limit {limit:,.0f} msg/s ({got} of "
                      f"{MESSAGES} in {t:.2f} s); collector {rate:,.0f} readings/s "
                      f"({r['stored']} stored of {r['received']} received, {MESSAGES} sent, "
                      f"in {r['elapsed']:.2f} s; all sinks {r['all_sinks']:.2f} s; simulator "
                      f"done {r['published']:.2f} s, all received by {r['all_received']:.2f} s; "
                      f"{r['commits']} journal commits; entries read: {r['reads']}), "
                      f"ratio {rate / limit:.2f}, CPU {r['cpu']:.2f} s = {cpu_us:.2f} µs per "
                      f"field value, peak RSS {r['rss'] / 2**20:.1f} MiB", flush=True)
                fp = r["footprint"]
                per_value = lambda b: b / values if values else float("nan")
                print("  footprint after the run: " + ", ".join(
                          f"{k} {v:,} bytes ({per_value(v):.2f} per field value)"
                          for k, v in fp.items()) +
                      (" (VictoriaMetrics' directory holds every run so far)" if run else ""),
                      flush=True)
                # On saturated cores each run lasts about (CPU of everything) / cores: the
                # ratio the CPU alone predicts, to compare with the measured one.
                limit_total = sum(limit_cpu.values())
                run_total = sum(r["others"].values()) + r["cpu"]
                print(f"  CPU s, broker-limit run: " + ", ".join(
                          f"{k} {v:.2f}" for k, v in limit_cpu.items()) +
                      f"; collector run: " + ", ".join(
                          f"{k} {v:.2f}" for k, v in r["others"].items()) +
                      f", collector {r['cpu']:.2f}; CPU-predicted ratio "
                      f"{limit_total / run_total:.2f} (cores busy: limit run "
                      f"{limit_total / t / os.cpu_count():.0%}, collector run "
                      f"{run_total / r['elapsed'] / os.cpu_count():.0%})", flush=True)
            med = [statistics.median(c) for c in zip(*rows)]
            print(f"QoS {qos} median of {RUNS}: broker limit {med[0]:,.0f} msg/s, collector "
                  f"{med[1]:,.0f} readings/s ({med[1] * FIELDS:,.0f} field values/s), ratio "
                  f"{med[2]:.2f}, CPU {med[3]:.2f} µs per field value "
                  f"({med[3] * 1e6 / 1e6:.2f} CPU s per million), peak RSS {med[4]:.1f} MiB",
                  flush=True)
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
