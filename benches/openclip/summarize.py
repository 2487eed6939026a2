"""The tables of BENCHMARKS.md's "Learning beside OpenCLIP" from the runs that
`benches/emoji_vs_openclip.sh` left: for each seed and direction, OpenCLIP's and vlp's test-split
NDCG@5/10/20 and MAP (graded qrels) and R@1 (grade-2 qrels, as `vlp eval` counts it), with the
paired randomization test's p-value of each difference (`vlp trec-eval --compare`); then the
seeds pooled (each query's measure averaged over the seeds of each system, then the same test),
and the seed noise: each system's seeds against each other, which the per-seed test does not see.

Usage: python3 benches/openclip/summarize.py DATA NAME [SEEDS...]   (default seeds 0 1 2)
e.g.   python3 benches/openclip/summarize.py data/emoji emoji
Reads runs/openclip-NAME-sS/test.{t2i,i2t}.run and eval/NAME-sS/NAME-sS.test.{t2i,i2t}.run.
Environment: VLP (default target/release/vlp).
"""
import os, subprocess, sys, tempfile

data, name = sys.argv[1], sys.argv[2]
seeds = sys.argv[3:] or ["0", "1", "2"]
vlp = os.environ.get("VLP", "target/release/vlp")
measures = [("ndcg_cut_5", "NDCG@5"), ("ndcg_cut_10", "NDCG@10"), ("ndcg_cut_20", "NDCG@20"), ("map", "MAP"), ("success_1", "R@1")]


def compare(qrels, a, b, ms):
    a, b = ([a] if isinstance(a, str) else a), ([b] if isinstance(b, str) else b)
    out = subprocess.run([vlp, "trec-eval", qrels, *a, "--compare", *b, *sum((["-m", m] for m in ms), [])],
                         check=True, capture_output=True, text=True).stdout
    rows = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 6 and parts[0] != "measure":
            rows[parts[0]] = (float(parts[1]), float(parts[2]), float(parts[4]))
    return rows


tmp = tempfile.mkdtemp()
table, noise = {}, {}
peer = lambda s, d: f"runs/openclip-{name}-s{s}/test.{d}.run"
ours = lambda s, d: f"eval/{name}-s{s}/{name}-s{s}.test.{d}.run"
for d in ("t2i", "i2t"):
    qrels = os.path.join(data, f"test.{d}.qrels")
    exact = os.path.join(tmp, f"test.{d}.grade2.qrels")
    with open(qrels) as f, open(exact, "w") as g:
        g.writelines(l for l in f if l.split()[3] == "2")
    for s in seeds:
        a, b = peer(s, d), ours(s, d)
        rows = compare(qrels, a, b, ["ndcg_cut.5,10,20", "map"])
        rows.update(compare(exact, a, b, ["success.1"]))
        table[(d, s)] = rows
    a, b = [peer(s, d) for s in seeds], [ours(s, d) for s in seeds]
    rows = compare(qrels, a, b, ["ndcg_cut.5,10,20", "map"])
    rows.update(compare(exact, a, b, ["success.1"]))
    table[(d, "pooled")] = rows
    for system, path in (("OpenCLIP", peer), ("vlp", ours)):
        for i, x in enumerate(seeds):
            for y in seeds[i + 1:]:
                noise[(d, system, x, y)] = compare(qrels, path(x, d), path(y, d), ["ndcg_cut.10", "map"])

for d, label in (("t2i", "text→image"), ("i2t", "image→text")):
    print(f"\n{label} (A = OpenCLIP, B = vlp; p: paired randomization test of B − A, 10,000 permutations)\n")
    print("| seed | " + " | ".join(f"{m} OpenCLIP | vlp | p" for _, m in measures) + " |")
    print("|---|" + "---|---|---|" * len(measures))
    for s in seeds:
        r = table[(d, s)]
        print(f"| {s} | " + " | ".join(f"{r[k][0]:.4f} | {r[k][1]:.4f} | {r[k][2]:.3f}" for k, _ in measures) + " |")
    r = table[(d, "pooled")]
    print(f"| {len(seeds)} seeds pooled | " + " | ".join(f"**{r[k][0]:.4f}** | **{r[k][1]:.4f}** | **{r[k][2]:.3f}**" for k, _ in measures) + " |")

print("\nseed noise: one system's seeds against each other (A = the first seed, B = the second)\n")
print("| direction | system | seeds | NDCG@10 A | B | p | MAP A | B | p |")
print("|---|---|---|---|---|---|---|---|---|")
for (d, system, x, y), r in noise.items():
    n, m = r["ndcg_cut_10"], r["map"]
    print(f"| {d} | {system} | {x} vs {y} | {n[0]:.4f} | {n[1]:.4f} | {n[2]:.3f} | {m[0]:.4f} | {m[1]:.4f} | {m[2]:.3f} |")
