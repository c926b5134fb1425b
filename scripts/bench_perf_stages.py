#!/usr/bin/env python3
"""Where the collector's CPU goes, by stage, from a `perf record --call-graph dwarf` profile.

    perf script --no-inline -i perf.data | python3 scripts/bench_perf_stages.py [--pid PID]

Each sample is given to the innermost stage on its stack (walking from the leaf up, the
first frame that matches one of STAGES below): SQLite under the store's compaction counts
as compaction, under the journal writer as the journal, and so on; a sample with no frame
of ours (the runtime parked, the kernel) goes by its outermost known library. Prints the
share of the samples per stage, then the top leaf symbols (self time). `--pid` keeps the
samples of one process (perf also records its own children).
"""

import collections
import re
import sys

# (stage, pattern on a demangled symbol): the innermost matching frame wins.
STAGES = [
    ("rumqttc (MQTT client: read, decode, PUBACK writes)", r"^rumqttc::"),
    ("payload parsing (JSON, fields, timestamps)", r"collector::payload::"),
    ("line protocol encoding", r"collector::sinks::line_protocol::"),
    ("HTTP client (reqwest, hyper: body, socket)", r"^(reqwest|hyper|hyper_util|h2|http_body)::"),
    ("local store: compaction", r"collector::sinks::local::store::.*(compact|tail|merge|settle)"),
    ("local store: insert and other", r"collector::sinks::local::"),
    ("journal: sinks' reads and commits", r"collector::journal::JournalReader|collector::journal::.*(read|load_next|commit)"),
    ("journal: writer (append, commit, fsync)", r"collector::journal::"),
    ("InfluxDB sink (other)", r"collector::sinks::influxdb::"),
    ("sinks: runner, batches", r"collector::sinks::"),
    ("readings: encode, decode, batches", r"collector::reading::"),
    ("MQTT source (envelopes, acks, topics)", r"collector::(sources::mqtt|mqtt)::"),
    ("pipeline, channel (inlet/outlet)", r"collector::(pipeline|batcher|task)::"),
    ("metrics, device table", r"collector::metrics::"),
    ("HTTP server (/metrics)", r"collector::(http|dashboard)::|^axum::"),
    ("other collector code", r"^collector::|^telemetry_collector::"),
    ("SQLite (no caller of ours on the stack)", r"^sqlite3"),
    ("tokio runtime (scheduling, parking)", r"^tokio::"),
    ("allocator (no caller of ours on the stack)", r"^(malloc|free|realloc|_int_malloc|_int_free|cfree)"),
]
COMPILED = [(name, re.compile(p)) for name, p in STAGES]
HEADER = re.compile(r"^\s*(\S.*?)\s+(\d+)(?:/(\d+))?\s+(?:\[\d+\]\s+)?[\d.]+:")
FRAME = re.compile(r"^\s+[0-9a-f]+\s+(.*?)\s+\((.*)\)$")


def stage_of(frames):
    for sym, _ in frames:
        for name, pattern in COMPILED:
            if pattern.search(sym):
                return name
    # Nothing of ours: the kernel, libc, or unknown frames.
    dsos = {dso for _, dso in frames}
    if any("kernel" in d for d in dsos):
        return "kernel (no caller of ours on the stack)"
    return "unknown (unwinding failed)"


def clean(sym):
    sym = re.sub(r"\+0x[0-9a-f]+$", "", sym)
    return re.sub(r"::h[0-9a-f]{16}$", "", sym)


def main():
    want_pid = None
    if "--pid" in sys.argv:
        want_pid = sys.argv[sys.argv.index("--pid") + 1]
    stages, leaves, comms = collections.Counter(), collections.Counter(), collections.Counter()
    total = 0
    frames, pid, comm = [], None, None

    def flush():
        nonlocal total
        if frames and (want_pid is None or pid == want_pid):
            total += 1
            stages[stage_of(frames)] += 1
            leaves[frames[0][0]] += 1
            comms[comm] += 1

    for line in sys.stdin:
        if not line.strip():
            flush()
            frames = []
            continue
        m = FRAME.match(line)
        if m and not HEADER.match(line):
            frames.append((clean(m.group(1)), m.group(2)))
            continue
        h = HEADER.match(line)
        if h:
            flush()
            frames, comm, pid = [], h.group(1), h.group(2)
    flush()
    if not total:
        sys.exit("no samples")
    print(f"{total} samples; by thread name: "
          + ", ".join(f"{c} {n / total:.1%}" for c, n in comms.most_common(6)))
    print("\nby stage (innermost of ours on the stack):")
    for name, n in stages.most_common():
        print(f"  {n / total:6.1%}  {name}")
    print("\ntop leaf symbols (self):")
    for sym, n in leaves.most_common(25):
        print(f"  {n / total:6.1%}  {sym[:140]}")


if __name__ == "__main__":
    main()
