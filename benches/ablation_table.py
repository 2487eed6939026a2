#!/usr/bin/env python3
"""The ablation table of benches/ablation.sh, as BENCHMARKS.md prints it: one row per variant,
means over the seeds given, with the pooled paired randomization test of each variant against the
global baseline (`vlp trec-eval QRELS GLOBAL_RUNS... --compare VARIANT_RUNS...`, per query over
all seeds) for NDCG@10 and MAP, zero-shot top-1 (global embeddings, and token-level where the
model has it), training wall and CPU seconds and peak RSS from the logs.

    benches/ablation_table.py DATA TAG LOG_PREFIX SEED...
e.g. benches/ablation_table.py data/emoji emoji /tmp/abl-emoji 0 1 2   (logs /tmp/abl-emoji-s0.log ...)
Environment: VLP (default target/release/vlp).
"""
import os, re, subprocess, sys
from statistics import mean

data, tag, logs, seeds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
vlp = os.environ.get("VLP", "target/release/vlp")
variants = [("global", "global"), ("queue", "global + queue (BriVL)"), ("token", "global + token (FILIP)"),
            ("reduced", "global + reduced token (Wukong)"), ("all", "all together")]

def name(v, s): return f"abl-{tag}-{v}-s{s}"

def table_row(v, s):
    for line in open(f"eval/{name(v, s)}/table.md"):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == name(v, s) and cells[1] == "all":
            x = list(map(float, cells[2:]))
            # t2i ndcg5,10,20,map, i2t ndcg5,10,20,map, t2i R@1,R@5,R@10,MRR, i2t R@1,...
            return {"t2i": x[0:4] + [x[8]], "i2t": x[4:8] + [x[12]]}
    raise SystemExit(f"no row for {name(v, s)}")

log_text = {s: open(f"{logs}-s{s}.log").read() for s in seeds}

def zeroshot(v, s):
    got = {}
    for m in re.finditer(rf"\| {name(v, s)} \| (global|token-level)[^|]*\| ([0-9.]+) \|", log_text[s]):
        got[m.group(1)] = float(m.group(2))
    return got

def timing(v, s):
    m = re.search(rf"^{v}: wall ([0-9.]+) s, cpu ([0-9.]+) \+ ([0-9.]+) s, peak RSS ([0-9]+) KiB", log_text[s], re.M)
    return (float(m.group(1)), float(m.group(2)) + float(m.group(3)), int(m.group(4)) / 1024) if m else None

def pooled_p(v, d):
    base = [f"eval/{name('global', s)}/{name('global', s)}.test.{d}.run" for s in seeds]
    other = [f"eval/{name(v, s)}/{name(v, s)}.test.{d}.run" for s in seeds]
    out = subprocess.run([vlp, "trec-eval", f"{data}/test.{d}.qrels", *base, "-m", "ndcg_cut.10", "-m", "map", "--compare", *other],
                         capture_output=True, text=True, check=True).stdout
    p = {}
    for line in out.splitlines():
        f = line.split()
        if f and f[0] in ("ndcg_cut_10", "map"):
            p[f[0]] = float(f[4])
    return p

print("| variant | T→I NDCG@5 | NDCG@10 | NDCG@20 | MAP | R@1 | I→T NDCG@5 | NDCG@10 | NDCG@20 | MAP | R@1 | zero-shot top-1 | training wall (CPU) | peak RSS |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for v, label in variants:
    rows = [table_row(v, s) for s in seeds]
    cells = []
    for d in ("t2i", "i2t"):
        m = [mean(r[d][i] for r in rows) for i in range(5)]
        p = pooled_p(v, d) if v != "global" else {}
        fmt = lambda x, key: f"{x:.4f}" + (f" (p {p[key]:.4f})" if key in p else "")
        cells += [f"{m[0]:.4f}", fmt(m[1], "ndcg_cut_10"), f"{m[2]:.4f}", fmt(m[3], "map"), f"{m[4]:.3f}"]
    zs = [zeroshot(v, s) for s in seeds]
    z = f"{mean(x['global'] for x in zs):.3f}"
    if all("token-level" in x for x in zs):
        z += f" (token-level {mean(x['token-level'] for x in zs):.3f})"
    t = [timing(v, s) for s in seeds]
    t = [x for x in t if x]
    tc = f"{mean(x[0] for x in t):.0f} s ({mean(x[1] for x in t):.0f} s)" if t else "n/a"
    mem = f"{max(x[2] for x in t):.0f} MiB" if t else "n/a"
    print(f"| {label} | " + " | ".join(cells) + f" | {z} | {tc} | {mem} |")
