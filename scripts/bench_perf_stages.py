#!/usr/bin/env python3
"""Where the collector's CPU goes, by stage, from a `perf record --call-graph dwarf` profile.

    perf script --inline -i perf.data | python3 scripts/bench_perf_stages.py [--pid PID]

With LTO most of our functions are inlined into the runtime's task poll: `--inline` (slow:
addr2line) shows them, by their bare names. A bare name is given the module of the one
file under collector/src that defines a function of that name (names defined in several
files are left out), and matched as `collector::<module>::<name>`.

Each sample is given to the first of STAGES below that any frame of its stack matches
(inclusive: SQLite under the store's compaction counts as compaction, under the journal
writer as the journal, and so on); a sample with no frame of ours (the runtime parked, the
kernel, a stack the unwinder could not follow) goes by what it shows. Prints the
share of the samples per stage, then the top leaf symbols (self time). `--pid` keeps the
samples of one process (perf also records its own children).
"""

import collections
import re
import sys

# (stage, pattern on a symbol), in priority order: a sample goes to the first stage any of
# whose patterns matches any frame of its stack (inclusive: SQLite under the compaction is
# the compaction's, the readings a sink decodes are that sink's).
STAGES = [
    ("local store: compaction", r"collector::sinks::local::store.*(compact|merge|settle|tail)"),
    ("local store: insert (SQLite, chunks, series ids)", r"collector::sinks::local::"),
    ("InfluxDB sink: line protocol encoding", r"collector::sinks::line_protocol::"),
    ("InfluxDB sink: HTTP body and client (reqwest, hyper)", r"^(reqwest|hyper|hyper_util|h2|http_body)::"),
    ("InfluxDB sink: other", r"collector::sinks::influxdb::"),
    ("journal: sinks' reads and commits", r"JournalReader|load_next_entry"),
    ("journal: writer (encode, insert, commit, fsync)", r"collector::journal::"),
    ("sinks: runner, batch visits", r"collector::sinks::"),
    ("MQTT: payload parsing (JSON, fields, timestamps)", r"collector::payload::"),
    ("MQTT: rumqttc (socket reads, packet decoding, PUBACK writes)", r"^rumqttc::"),
    ("MQTT: source (envelopes, topics, acks, counters)", r"collector::(sources|mqtt)::"),
    ("metrics, device table", r"collector::metrics::"),
    ("HTTP server (/metrics)", r"collector::(http|dashboard)::|^axum::"),
    ("pipeline, channel", r"collector::(pipeline|batcher|task)::"),
    ("other collector code", r"^collector::|^telemetry_collector::"),
]
# Only for a stack with no frame of ours (often a stack the unwinder could not follow up).
FALLBACKS = [
    ("SQLite (no caller of ours on the stack)", r"^(sqlite3|rusqlite::|wal|seekAnd|full_fsync|unixSync|pager|btree)"),
    ("tokio runtime (scheduling, parking)", r"^tokio::"),
    ("allocator (no caller of ours on the stack)", r"^(malloc|free|realloc|_int_malloc|_int_free|cfree)"),
]
COMPILED = [(name, re.compile(p)) for name, p in STAGES]
COMPILED_FALLBACKS = [(name, re.compile(p)) for name, p in FALLBACKS]
HEADER = re.compile(r"^\s*(\S.*?)\s+(\d+)(?:/(\d+))?\s+(?:\[\d+\]\s+)?[\d.]+:")
FRAME = re.compile(r"^\s+[0-9a-f]+\s+(.*?)\s+\((.*)\)$")


def inline_names(src):
    """Bare function name -> `collector::<module>::<name>`, for names defined in one file."""
    import os
    seen = collections.defaultdict(set)
    for d, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(d, f)
            module = os.path.relpath(path, src)[:-3].replace(os.sep, "::")
            module = re.sub(r"(::)?mod$", "", module)
            with open(path, encoding="utf-8") as fh:
                for m in re.finditer(r"\bfn\s+([a-z_][a-z0-9_]*)", fh.read()):
                    seen[m.group(1)].add(module)
    return {name: f"collector::{mods.pop()}::{name}" for name, mods in seen.items() if len(mods) == 1}


NAMES = {}


def qualify(sym, dso):
    if dso != "inlined" or "::" in sym.split("<")[0]:
        return sym
    bare = re.sub(r"[<{].*$", "", sym)
    return NAMES.get(bare, sym)


def stage_of(frames):
    for name, pattern in COMPILED:
        if any(pattern.search(sym) for sym, _ in frames):
            return name
    for sym, _ in frames:
        for name, pattern in COMPILED_FALLBACKS:
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
    import os
    NAMES.update(inline_names(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "collector", "src")))
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
            leaves[next((f for f, d in frames if d != "inlined"), frames[0][0])] += 1
            comms[comm] += 1

    for line in sys.stdin:
        if not line.strip():
            flush()
            frames = []
            continue
        m = FRAME.match(line)
        if m and not HEADER.match(line):
            frames.append((qualify(clean(m.group(1)), m.group(2)), m.group(2)))
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
    print("\nby stage (inclusive, first match in priority order):")
    for name, n in stages.most_common():
        print(f"  {n / total:6.1%}  {name}")
    print("\ntop leaf symbols (self):")
    for sym, n in leaves.most_common(25):
        print(f"  {n / total:6.1%}  {sym[:140]}")


if __name__ == "__main__":
    main()
