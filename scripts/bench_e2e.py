#!/usr/bin/env python3
"""The end-to-end benchmark (run it through scripts/bench-e2e.sh, which builds and installs).

One fixed workload, at QoS 0 and at QoS 1: DEVICES simulated devices in 10 sites publish
MESSAGES JSON messages (a nanosecond timestamp and three float fields) on
sensors/<site>/<device>/<measurement> to a Mosquitto started here on a free port. The
publisher is `telemetry-simulator blast` (PUBLISHER=blast, the default): it encodes every
PUBLISH packet first and streams them over BLAST_CONNECTIONS (2) connections as fast as the
broker takes them (at QoS 1 keeping at most INFLIGHT unacknowledged per connection, the
broker's max_inflight_messages), so that the broker, not the publisher, sets the pace.
PUBLISHER=mqtt uses `telemetry-simulator mqtt` over CONNECTIONS (10) connections instead
(the yardstick of 2026-12-06). In the same run, RUNS times, interleaved:

1. the broker's limit: a subscriber that throws away what it receives (SUBSCRIBER=discard,
   `telemetry-simulator discard`, the default; or SUBSCRIBER=mosquitto_sub, its output
   counted and thrown away), timed from the first publish until it has every message;
2. the collector, once per sink setting in SINKS (space-separated; each a comma-separated
   list of `local` and `influxdb`; default "local,influxdb local influxdb": both sinks,
   then each alone), with its InfluxDB v2 sink to a VictoriaMetrics started here, timed from
   the first publish until every sink has written every reading; then the local store and
   VictoriaMetrics are read back and must hold every field value.

Every run prints the CPU seconds of every process (publisher, broker, subscriber or
collector, VictoriaMetrics), per field value too, the publisher's own time, the collector's
peak RSS (VmHWM) and the load average when it started (the machine may be shared). Then
the medians per sink setting. GZIP=true|false sets the sink's `gzip` (by default off: the
server is on this machine); COLLECTOR=path measures another binary; PROFILE="perf record
... --" runs the collector under a profiler; LOGS=dir keeps every collector log;
EXTRA_CONFIG="[journal]\nack_batch = 256" appends TOML to the collector's configuration. Nothing
here is a pass/fail test: the figures go to BENCHMARKS.md.
"""

import json
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
import urllib.parse
import urllib.request

BIN = os.environ["BIN"]
DEVICES = int(os.environ.get("DEVICES", "1000"))
MESSAGES = int(os.environ.get("MESSAGES", "500000"))
RUNS = int(os.environ.get("RUNS", "3"))
QOS_LIST = [int(q) for q in os.environ.get("QOS", "0 1").split()]
INFLIGHT = int(os.environ.get("INFLIGHT", "1000"))
CONNECTIONS = int(os.environ.get("CONNECTIONS", "10"))
BLAST_CONNECTIONS = int(os.environ.get("BLAST_CONNECTIONS", "2"))
PUBLISHER = os.environ.get("PUBLISHER", "blast")
SUBSCRIBER = os.environ.get("SUBSCRIBER", "discard")
SETTINGS = [tuple(x.split(",")) for x in os.environ.get("SINKS", "local,influxdb local influxdb").split()]
FIELDS = 3
VALUES = MESSAGES * FIELDS
BROKER_PID = [0]
VM_PID = [0]
STALL = 10.0  # seconds without progress: the rest is lost (QoS 0 under overload)
SEQ = [0]  # collector runs so far: each publishes its own measurement, counted back alone


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


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


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


def cpu_of(pid):
    return proc_cpu_rss(pid)[0]


def wait_child(p):
    """Waits for a child; returns its CPU seconds (user + system) over its whole life."""
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


def read_until(stream, word, what):
    lines = []
    for line in stream:
        line = line.decode(errors="replace").strip()
        lines.append(line)
        if line == word:
            return lines
    sys.exit(f"{what} ended before `{word}`: {lines}")


def publish(port, qos, measurement, watch):
    """Publishes the workload. `watch` maps names to pids whose CPU is taken just before
    the first publish. Returns (the monotonic time of the first publish, the publisher's
    time, its CPU seconds from the first publish on, the CPU snapshot of `watch`)."""
    samples = MESSAGES // DEVICES
    common = ["--port", str(port), "--devices", str(DEVICES), "--sites", "10",
              "--count", str(samples), "--qos", str(qos), "--format", "json", "--no-counter",
              "--measurement", measurement]
    if PUBLISHER == "blast":
        p = subprocess.Popen(
            [f"{BIN}/telemetry-simulator", "blast", *common, "--connections",
             str(BLAST_CONNECTIONS), "--window", str(INFLIGHT), "--go-on-stdin"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        read_until(p.stdout, "ready", "the publisher")  # encoded and connected
        own0 = cpu_of(p.pid)
        before = {k: cpu_of(pid) for k, pid in watch.items()}
        start = time.monotonic()
        p.stdin.write(b"go\n")
        p.stdin.flush()
    else:
        own0 = 0.0
        before = {k: cpu_of(pid) for k, pid in watch.items()}
        start = time.monotonic()
        p = subprocess.Popen(
            [f"{BIN}/telemetry-simulator", "mqtt", *common, "--connections", str(CONNECTIONS),
             "--max-inflight", "1000"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = p.stdout.read().decode()
    cpu = wait_child(p) - own0
    took = time.monotonic() - start
    if p.returncode != 0:
        sys.exit(f"the publisher failed with {p.returncode}: {out}")
    return start, took, cpu, before


def broker_limit(procs, port, qos):
    """Messages per second a subscriber that discards everything receives."""
    if SUBSCRIBER == "discard":
        sub = procs.start(
            [f"{BIN}/telemetry-simulator", "discard", "--port", str(port), "--topic", "sensors/#",
             "--qos", str(qos), "--count", str(MESSAGES), "--idle", f"{STALL}s"],
            stdout=subprocess.PIPE)
        read_until(sub.stdout, "subscribed", "the discarding subscriber")
        watch = {"broker": BROKER_PID[0], "victoria-metrics": VM_PID[0], "subscriber": sub.pid}
        start, pub_time, pub_cpu, before = publish(port, qos, "env", watch)
        out = sub.stdout.read().decode()
        sub_cpu = wait_child(sub)
        end = time.monotonic()
        m = re.search(r"received (\d+) of \d+ messages; .* last ([0-9.]+) s ago", out)
        if sub.returncode != 0 or not m:
            sys.exit(f"the discarding subscriber failed: {out}")
        got, last = int(m.group(1)), end - float(m.group(2))
        after = {"subscriber": sub_cpu}
    else:
        sub = procs.start(
            ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-t", "sensors/#", "-q",
             str(qos), "-i", f"limit-{time.monotonic_ns()}"], stdout=subprocess.PIPE)
        counted = [0, time.monotonic()]

        def count():
            while True:
                chunk = sub.stdout.read1(1 << 16)
                if not chunk:
                    return
                counted[0] += chunk.count(b"\n")
                counted[1] = time.monotonic()

        threading.Thread(target=count, daemon=True).start()
        time.sleep(0.5)  # mosquitto_sub has no "subscribed" signal; it subscribes on connect
        watch = {"broker": BROKER_PID[0], "victoria-metrics": VM_PID[0], "subscriber": sub.pid}
        start, pub_time, pub_cpu, before = publish(port, qos, "env", watch)
        while counted[0] < MESSAGES and time.monotonic() - counted[1] < STALL:
            time.sleep(0.01)
        after = {"subscriber": cpu_of(sub.pid)}
        sub.terminate()
        sub.wait()
        got, last = counted
    cpu = {"publisher": pub_cpu}
    for k, pid in watch.items():
        cpu[k] = after.get(k, None) if k in after else cpu_of(pid)
        cpu[k] -= before[k]
    return {"got": got, "elapsed": last - start, "publisher_time": pub_time, "cpu": cpu}


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


def stored_locally(collector_bin, store):
    """Field values in a local store, read back through `telemetry-collector query`."""
    out = subprocess.run([collector_bin, "query", "--store", store, "--summary", "--format", "csv"],
                         check=True, capture_output=True, text=True).stdout
    return sum(int(line.split(",")[2]) for line in out.splitlines()[1:] if line)


def stored_in_vm(vm_port, measurement):
    """Field values of `measurement` in VictoriaMetrics, read back through its export API.
    What it has just taken may take a moment to be searchable (new series): read again
    until every value is there or the count stops growing for 5 s."""
    query = urllib.parse.urlencode({"match[]": f'{{__name__=~"{measurement}_.*"}}'})
    count, last_change = -1, time.monotonic()
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{vm_port}/internal/force_flush", timeout=30).read()
        except OSError as e:
            print(f"  (VictoriaMetrics force_flush: {e})")
        with urllib.request.urlopen(f"http://127.0.0.1:{vm_port}/api/v1/export?{query}", timeout=60) as r:
            now = sum(len(json.loads(line)["values"]) for line in r if line.strip())
        if now != count:
            count, last_change = now, time.monotonic()
        if count >= VALUES or time.monotonic() - last_change > 5.0:
            return count
        time.sleep(0.2)


def collector_run(work, procs, port, vm_port, qos, sinks):
    SEQ[0] += 1
    measurement = f"m{SEQ[0]:02d}"  # as long as "env": the same bytes on the wire
    http_port = free_port()
    data = os.path.join(work, f"data-{time.monotonic_ns()}")
    config = os.path.join(work, "collector.toml")
    sink_conf = ""
    if "local" not in sinks:
        sink_conf += "[sinks.local]\nenabled = false\n"
    if "influxdb" in sinks:
        sink_conf += f"""
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
{sink_conf}
{os.environ.get("EXTRA_CONFIG", "")}
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
    sinks_names = (["local"] if "local" in sinks else []) + (
        ["influxdb:vm"] if "influxdb" in sinks else [])
    watch = {"broker": BROKER_PID[0], "victoria-metrics": VM_PID[0], "collector": c.pid}
    start, pub_time, pub_cpu, before = publish(port, qos, measurement, watch)
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
    cpu = {"publisher": pub_cpu}
    for k, pid in watch.items():
        cpu[k] = cpu_of(pid) - before[k]
    rss = proc_cpu_rss(c.pid)[1]
    final = metrics(http_port)
    received, commits = final.get("received", 0), final.get("commits", 0)
    reads = ", ".join(f"{k[5:]} {v}" for k, v in sorted(final.items()) if k.startswith("read "))
    # FOOTPRINT_WAIT=12 leaves the collector idle that long first: the local store settles
    # (compacts what it had not yet) 10 s after writes stop.
    time.sleep(float(os.environ.get("FOOTPRINT_WAIT", "0")))
    c.send_signal(signal.SIGINT if prefix else signal.SIGTERM)
    c.wait(timeout=60)
    log.close()
    if os.environ.get("LOGS"):
        # LOGS=dir keeps each run's collector log (measurement mNN: the run's number).
        os.makedirs(os.environ["LOGS"], exist_ok=True)
        shutil.copy(log.name, os.path.join(os.environ["LOGS"], f"collector-{measurement}-qos{qos}.log"))
    footprint = {name: file_size(os.path.join(data, name))
                 for name in ["store.db", "store.db-wal", "journal.db", "journal.db-wal"]}
    verified = {}
    if "local" in sinks:
        # The pages in use: the file less its free pages (which the next writes reuse).
        import sqlite3
        db = sqlite3.connect(f"file:{os.path.join(data, 'store.db')}?mode=ro", uri=True)
        pages = [db.execute(f"PRAGMA {p}").fetchone()[0]
                 for p in ("page_size", "page_count", "freelist_count")]
        db.close()
        footprint["store.db in use"] = pages[0] * (pages[1] - pages[2])
        verified["local"] = stored_locally(collector_bin, os.path.join(data, "store.db"))
    if "influxdb" in sinks:
        verified["victoria-metrics"] = stored_in_vm(vm_port, measurement)
        footprint["vm"] = dir_size(os.path.join(work, "vm"))
    elapsed = max((t for _, t in done.values()), default=float("nan"))
    stored = min((n for n, _ in done.values()), default=0)
    shutil.rmtree(data, ignore_errors=True)
    return {
        "received": received,
        "commits": commits,
        "reads": reads,
        "stored": stored,
        "elapsed": elapsed,
        "per_sink": {s: t for s, (_, t) in done.items()},
        "publisher_time": pub_time,
        "all_received": all_received,
        "cpu": cpu,
        "rss": rss,
        "footprint": footprint,
        "verified": verified,
    }


def file_size(path):
    return os.path.getsize(path) if os.path.exists(path) else 0


def dir_size(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def per_value(cpu):
    return ", ".join(f"{k} {v:.2f} s = {v / VALUES * 1e6:.2f} µs" for k, v in cpu.items())


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
        publisher = (f"blast over {BLAST_CONNECTIONS} connections" if PUBLISHER == "blast"
                     else f"simulator mqtt over {CONNECTIONS} connections")
        print(f"# {DEVICES} devices, {MESSAGES} messages of {FIELDS} float fields, publisher "
              f"{publisher}, subscriber {SUBSCRIBER}, sink settings "
              f"{' '.join(','.join(x) for x in SETTINGS)}, mosquitto max_inflight_messages "
              f"{INFLIGHT}, {os.cpu_count()} cores, collector "
              f"{os.environ.get('COLLECTOR', BIN + '/telemetry-collector')}", flush=True)
        for qos in QOS_LIST:
            limits, rows = [], {x: [] for x in SETTINGS}
            for run in range(RUNS):
                load = loadavg()
                lim = broker_limit(procs, port, qos)
                lim["rate"] = lim["got"] / lim["elapsed"]
                limits.append(lim)
                print(f"QoS {qos} run {run + 1} (load {load}): broker limit {lim['rate']:,.0f} msg/s "
                      f"({lim['got']} of {MESSAGES} in {lim['elapsed']:.2f} s; publisher "
                      f"{lim['publisher_time']:.2f} s); CPU {per_value(lim['cpu'])} per field value",
                      flush=True)
                order = SETTINGS[run % len(SETTINGS):] + SETTINGS[:run % len(SETTINGS)]
                for sinks in order:
                    load = loadavg()
                    r = collector_run(work, procs, port, vm_port, qos, sinks)
                    rate = r["stored"] / r["elapsed"]
                    r["ratio"] = rate / lim["rate"]
                    r["load"] = load
                    rows[sinks].append(r)
                    stored_ok = ("" if all(v == VALUES for v in r["verified"].values()) else
                                 " MISSING" if any(v < VALUES for v in r["verified"].values())
                                 else " DUPLICATES")
                    print(f"  {','.join(sinks)} (load {load}): {r['elapsed']:.2f} s "
                          f"({', '.join(f'{s} {t:.2f}' for s, t in r['per_sink'].items())}), "
                          f"ratio {r['ratio']:.2f}; publisher {r['publisher_time']:.2f} s; "
                          f"all received by {r['all_received']:.2f} s; {r['stored']} stored of "
                          f"{r['received']} received, {MESSAGES} sent; read back: "
                          f"{', '.join(f'{k} {v}' for k, v in r['verified'].items())} field values"
                          f"{stored_ok}; {r['commits']} journal commits; entries "
                          f"read: {r['reads']}; peak RSS {r['rss'] / 2**20:.1f} MiB", flush=True)
                    print(f"    CPU {per_value(r['cpu'])} per field value", flush=True)
                    fp = r["footprint"]
                    print("    footprint: " + ", ".join(
                        f"{k} {v:,} bytes ({v / VALUES:.2f} per field value)" for k, v in fp.items())
                          + (" (VictoriaMetrics' directory holds every run so far)" if "vm" in fp else ""),
                          flush=True)
            med = statistics.median
            lim_rate = med(x["rate"] for x in limits)
            print(f"QoS {qos}, medians of {RUNS}: broker limit {lim_rate:,.0f} msg/s "
                  f"({med(x['elapsed'] for x in limits):.2f} s, publisher "
                  f"{med(x['publisher_time'] for x in limits):.2f} s); CPU µs per field value: "
                  + ", ".join(f"{k} {med(x['cpu'][k] for x in limits) / VALUES * 1e6:.2f}"
                              for k in limits[0]["cpu"]), flush=True)
            for sinks, rs in rows.items():
                each = lambda f: ", ".join(f"{f(r):.2f}" for r in rs)
                cpus = "; ".join(
                    f"{k} {med(r['cpu'][k] for r in rs) / VALUES * 1e6:.2f} "
                    f"({each(lambda r: r['cpu'][k] / VALUES * 1e6)})" for k in rs[0]["cpu"])
                loads = "; ".join(r["load"] for r in rs)
                print(f"  {','.join(sinks)}: {med(r['elapsed'] for r in rs):.2f} s, ratio "
                      f"{med(r['ratio'] for r in rs):.2f} ({each(lambda r: r['ratio'])}); publisher "
                      f"{med(r['publisher_time'] for r in rs):.2f} s ({each(lambda r: r['publisher_time'])}); "
                      f"CPU µs per field value: {cpus}; peak RSS {med(r['rss'] for r in rs) / 2**20:.1f} MiB "
                      f"({each(lambda r: r['rss'] / 2**20)}); load averages {loads}", flush=True)
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
