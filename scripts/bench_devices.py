#!/usr/bin/env python3
"""Many devices at a steady pace (run it through scripts/bench-devices.sh, which builds).

Issue 20's scale scenario: DEVICES (100,000) MQTT devices in 10 sites, each publishing one
JSON reading (a nanosecond timestamp, three floats and the integer `count`: 4 fields, so
400,000 series at 100,000 devices; COUNTER=false leaves `count` out) every PERIOD seconds
(10), for MINUTES (30), at QoS QOS (1), through `telemetry-simulator mqtt --rate` over 10
connections, to a Mosquitto and a collector with SINKS (local,influxdb: the local store and
an InfluxDB v2 sink to a VictoriaMetrics) started here on free ports.

Every SAMPLE_EVERY seconds (60) it prints, for the interval just past: the readings the
collector received and wrote, its RSS (VmRSS) and peak RSS (VmHWM), the CPU seconds of the
collector, the broker, the simulator and VictoriaMetrics and the collector's per field
value written, the devices it does not track (`devices_untracked_total`), journal commits,
the load average, and how long a scrape of /metrics took and how large it was (it renders
two lines per device). At the end it waits until every sink has caught up, stops the
collector and reads the local store and VictoriaMetrics back: each must hold every field
value the broker acknowledged (QoS 1) or the collector received (QoS 0).

COLLECTOR=path measures another binary; EXTRA_CONFIG appends TOML to the collector's
configuration. A shorter trial: DEVICES=10000 MINUTES=2.
"""

import os
import re
import signal
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_e2e as e2e  # noqa: E402  (the servers, /proc and read-back helpers)

BIN = os.environ["BIN"]
DEVICES = int(os.environ.get("DEVICES", "100000"))
PERIOD = float(os.environ.get("PERIOD", "10"))
MINUTES = float(os.environ.get("MINUTES", "30"))
QOS = int(os.environ.get("QOS", "1"))
SAMPLE_EVERY = float(os.environ.get("SAMPLE_EVERY", "60"))
SINKS = os.environ.get("SINKS", "local,influxdb").split(",")
COUNTER = os.environ.get("COUNTER", "true") == "true"
INFLIGHT = int(os.environ.get("INFLIGHT", "1000"))
FIELDS = 4 if COUNTER else 3
MEASUREMENT = "env"


def scrape(port):
    """/metrics parsed, with how long the scrape took and its size."""
    t0 = time.monotonic()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=60) as r:
        text = r.read().decode()
    took = time.monotonic() - t0
    out = {"scrape_s": took, "scrape_bytes": len(text)}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r'telemetry_collector_readings_written_total\{sink="([^"]+)"\} (\d+)', line)
        if m:
            out[m.group(1)] = int(m.group(2))
            continue
        for name in ("messages_received_total", "devices_untracked_total", "journal_commits_total"):
            m = re.match(rf"telemetry_collector_{name}(\{{[^}}]*\}})? (\d+)", line)
            if m:
                out[name] = out.get(name, 0) + int(m.group(2))
    return out


def main():
    work = tempfile.mkdtemp(prefix="bench-devices-")
    procs = e2e.Procs()
    try:
        port = e2e.free_port()
        with open(os.path.join(work, "mosquitto.conf"), "w") as f:
            f.write(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                    f"max_inflight_messages {INFLIGHT}\nmax_queued_messages 0\n")
        broker = procs.start(["/usr/sbin/mosquitto", "-c", os.path.join(work, "mosquitto.conf")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        e2e.wait_port(port, "mosquitto")
        vm = None
        vm_port = e2e.free_port()
        if "influxdb" in SINKS:
            vm = procs.start(["victoria-metrics", f"-httpListenAddr=127.0.0.1:{vm_port}",
                              f"-storageDataPath={work}/vm", "-loggerLevel=ERROR"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            e2e.wait_port(vm_port, "victoria-metrics")
        http_port = e2e.free_port()
        data = os.path.join(work, "data")
        sinks = "" if "local" in SINKS else "[sinks.local]\nenabled = false\n"
        if "influxdb" in SINKS:
            sinks += (f'[[sinks.influxdb]]\nname = "vm"\nurl = "http://127.0.0.1:{vm_port}"\n'
                      'org = "bench"\nbucket = "bench"\ntoken = "bench"\n')
        config = os.path.join(work, "collector.toml")
        with open(config, "w") as f:
            f.write(f'data_dir = "{data}"\n[http]\nlisten = "127.0.0.1:{http_port}"\n'
                    f'[pipeline]\nshutdown_timeout = "120s"\n'
                    f'[[sources.mqtt]]\nname = "bench"\nhost = "127.0.0.1"\nport = {port}\n'
                    f'client_id = "bench-devices"\n[[sources.mqtt.subscriptions]]\n'
                    f'topic = "sensors/{{site}}/{{device}}/{{measurement}}"\nqos = {QOS}\n'
                    f'format = "json"\n{sinks}\n{os.environ.get("EXTRA_CONFIG", "")}\n')
        log = open(os.path.join(work, "collector.log"), "w")
        collector_bin = os.environ.get("COLLECTOR", f"{BIN}/telemetry-collector")
        c = procs.start([collector_bin, "run", "-c", config], stderr=log,
                        env=dict(os.environ, NO_COLOR="1", MALLOC_ARENA_MAX="2"))
        deadline = time.monotonic() + 30
        while "subscribed" not in open(log.name).read():
            if time.monotonic() > deadline or c.poll() is not None:
                sys.exit("the collector did not subscribe:\n" + open(log.name).read())
            time.sleep(0.05)
        rate = DEVICES / PERIOD
        sim = procs.start(
            [f"{BIN}/telemetry-simulator", "mqtt", "--port", str(port), "--devices", str(DEVICES),
             "--sites", "10", "--interval", f"{PERIOD}s", "--rate", str(rate), "--duration",
             f"{MINUTES * 60}s", "--qos", str(QOS), "--format", "json", "--connections", "10",
             "--max-inflight", "1000", "--measurement", MEASUREMENT]
            + ([] if COUNTER else ["--no-counter"]),
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        pids = {"collector": c.pid, "broker": broker.pid, "simulator": sim.pid}
        if vm:
            pids["victoria-metrics"] = vm.pid
        print(f"# {DEVICES} devices, one reading of {FIELDS} fields each per {PERIOD:g} s "
              f"({rate:,.0f} messages/s, {rate * FIELDS:,.0f} field values/s, "
              f"{DEVICES * FIELDS:,} series), {MINUTES:g} minutes, QoS {QOS}, sinks "
              f"{','.join(SINKS)}, collector {collector_bin}", flush=True)
        start = time.monotonic()
        last_cpu = {k: e2e.cpu_of(p) for k, p in pids.items()}
        last_written, last_t = 0, start
        first_sink = "local" if "local" in SINKS else "influxdb:vm"
        while sim.poll() is None:
            time.sleep(max(0.0, last_t + SAMPLE_EVERY - time.monotonic()))
            if sim.poll() is not None:
                break
            now = time.monotonic()
            cpu = {k: e2e.cpu_of(p) for k, p in pids.items()}
            m = scrape(http_port)
            rss = _vm_rss(c.pid)
            hwm = e2e.proc_cpu_rss(c.pid)[1]
            written = m.get(first_sink, 0)
            values = (written - last_written) * FIELDS
            d = {k: cpu[k] - last_cpu[k] for k in cpu}
            per = d["collector"] / values * 1e6 if values else float("nan")
            print(f"{(now - start) / 60:5.1f} min: received {m.get('messages_received_total', 0):,}, "
                  f"written {written:,} ({values / (now - last_t):,.0f} field values/s); RSS "
                  f"{rss / 2**20:.1f} MiB (peak {hwm / 2**20:.1f}); CPU s "
                  + ", ".join(f"{k} {v:.2f}" for k, v in d.items())
                  + f"; collector {per:.2f} µs per field value; untracked devices' readings "
                  f"{m.get('devices_untracked_total', 0)}; commits {m.get('journal_commits_total', 0)}; "
                  f"/metrics {m['scrape_bytes'] / 2**20:.1f} MiB in {m['scrape_s']:.2f} s; load "
                  f"{e2e.loadavg()}", flush=True)
            last_cpu, last_written, last_t = cpu, written, now
        out = sim.stdout.read().decode().strip()
        print(f"simulator: {out}", flush=True)
        m = re.search(r"sent (\d+) of (\d+) messages \((\d+) acked|sent (\d+) of", out)
        sent = int(m.group(1) or m.group(4)) if m else 0
        acked = int(m.group(3)) if m and m.group(3) else None
        # Until every sink has what the collector received (or nothing moved for 10 s).
        names = (["local"] if "local" in SINKS else []) + (["influxdb:vm"] if "influxdb" in SINKS else [])
        seen, since = None, time.monotonic()
        while time.monotonic() - since < 10:
            m = scrape(http_port)
            now = (m.get("messages_received_total", 0),) + tuple(m.get(s, 0) for s in names)
            if now != seen:
                seen, since = now, time.monotonic()
            if all(v >= now[0] for v in now[1:]):
                break
            time.sleep(0.5)
        received = seen[0]
        hwm = e2e.proc_cpu_rss(c.pid)[1]
        c.send_signal(signal.SIGTERM)
        c.wait(timeout=180)
        want = (acked if QOS == 1 and acked is not None else received) * FIELDS
        check = {}
        if "local" in SINKS:
            check["local"] = e2e.stored_locally(collector_bin, os.path.join(data, "store.db"))
        if "influxdb" in SINKS:
            e2e.VALUES = want
            check["victoria-metrics"] = e2e.stored_in_vm(vm_port, MEASUREMENT)
        print(f"end: {sent:,} sent, {acked if acked is not None else 'n/a'} acked, "
              f"{received:,} received; peak RSS {hwm / 2**20:.1f} MiB; read back "
              + ", ".join(f"{k} {v:,}" for k, v in check.items())
              + f" field values, {want:,} expected"
              + ("" if all(v >= want for v in check.values()) else " MISSING"), flush=True)
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)


def _vm_rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


if __name__ == "__main__":
    main()
