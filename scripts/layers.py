"""The collector's import graph by top-level module (non-test code): each module and the
modules it uses, then its layers (a module uses only modules of lower layers). Exits 1 when
two modules use each other, directly or around a cycle: data flows one way in the tree.

    python3 scripts/layers.py [collector/src]
"""
import os, re, sys
root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), '..', 'collector', 'src')
mods = {os.path.splitext(n)[0] for n in os.listdir(root) if n.endswith('.rs') or os.path.isdir(os.path.join(root, n))}
mods -= {'lib', 'main', 'mutate'}
def strip_tests(text):
    lines = text.split('\n'); out = []; i = 0
    while i < len(lines):
        if lines[i].strip().startswith('#[cfg(test)]'):
            j = i + 1
            while j < len(lines) and lines[j].strip().startswith('#['): j += 1
            if j < len(lines) and re.match(r'\s*(pub(\(\w+\))? )?mod \w+ \{', lines[j]):
                # skip the block by brace depth
                depth = 0; k = j
                while k < len(lines):
                    depth += lines[k].count('{') - lines[k].count('}')
                    if depth == 0 and k >= j and '{' in ''.join(lines[j:k+1]): break
                    k += 1
                i = k + 1; continue
        out.append(lines[i]); i += 1
    return '\n'.join(out)
edges = {m: set() for m in mods}
for dp, dns, fns in os.walk(root):
    for fn in fns:
        if not fn.endswith('.rs'): continue
        p = os.path.join(dp, fn); rel = os.path.relpath(p, root)
        top = rel.split(os.sep)[0]; top = os.path.splitext(top)[0]
        if top not in mods or fn in ('tests.rs', 'crash_tests.rs') or 'fixtures' in rel.split(os.sep) or fn.endswith('_tests.rs'): continue
        text = strip_tests(open(p).read())
        text = '\n'.join(l for l in text.split('\n') if not l.strip().startswith('//'))
        for m in re.finditer(r'crate::(\{[^}]*\}|\w+)', text):
            g = m.group(1)
            names = re.findall(r'(?:^|[{,]\s*)(\w+)', g) if g.startswith('{') else [g]
            for n in names:
                if n in mods and n != top: edges[top].add(n)
for m in sorted(edges):
    print(f"{m:10} -> {', '.join(sorted(edges[m])) or '(none)'}")
# cycles: strongly connected components (Tarjan)
idx = {}; low = {}; st = []; on = set(); sccs = []; c = [0]
sys.setrecursionlimit(10000)
def sc(v):
    idx[v] = low[v] = c[0]; c[0] += 1; st.append(v); on.add(v)
    for w in edges[v]:
        if w not in idx: sc(w); low[v] = min(low[v], low[w])
        elif w in on: low[v] = min(low[v], idx[w])
    if low[v] == idx[v]:
        comp = []
        while True:
            w = st.pop(); on.discard(w); comp.append(w)
            if w == v: break
        sccs.append(comp)
for v in sorted(edges):
    if v not in idx: sc(v)
cyc = [s for s in sccs if len(s) > 1]
print("cycles:", cyc or "none")
if cyc:
    sys.exit(1)
else:
    layer = {}
    def L(v):
        if v not in layer: layer[v] = 1 + max((L(w) for w in edges[v]), default=-1)
        return layer[v]
    for v in edges: L(v)
    for n in range(max(layer.values()) + 1):
        print(f"layer {n}: {', '.join(sorted(v for v in layer if layer[v] == n))}")
