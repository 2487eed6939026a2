"""The tables of BENCHMARKS.md's "Learning beside OpenCLIP" from the runs that
`benches/emoji_vs_openclip.sh` left: for each seed and direction, OpenCLIP's and vlp's test-split
NDCG@5/10/20 and MAP (graded qrels) and R@1 (grade-2 qrels, as `vlp eval` counts it), with the
paired randomization test's p-value of each difference (`vlp trec-eval --compare`), then the mean
over seeds.

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
    out = subprocess.run([vlp, "trec-eval", qrels, a, "--compare", b, *sum((["-m", m] for m in ms), [])],
                         check=True, capture_output=True, text=True).stdout
    rows = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 6 and parts[0] != "measure":
            rows[parts[0]] = (float(parts[1]), float(parts[2]), float(parts[4]))
    return rows


tmp = tempfile.mkdtemp()
table = {}
for d in ("t2i", "i2t"):
    qrels = os.path.join(data, f"test.{d}.qrels")
    exact = os.path.join(tmp, f"test.{d}.grade2.qrels")
    with open(qrels) as f, open(exact, "w") as g:
        g.writelines(l for l in f if l.split()[3] == "2")
    for s in seeds:
        a = f"runs/openclip-{name}-s{s}/test.{d}.run"
        b = f"eval/{name}-s{s}/{name}-s{s}.test.{d}.run"
        rows = compare(qrels, a, b, ["ndcg_cut.5,10,20", "map"])
        rows.update(compare(exact, a, b, ["success.1"]))
        table[(d, s)] = rows

for d, label in (("t2i", "text→image"), ("i2t", "image→text")):
    print(f"\n{label} (A = OpenCLIP, B = vlp; p: paired randomization test of B − A, 10,000 permutations)\n")
    print("| seed | " + " | ".join(f"{m} OpenCLIP | vlp | p" for _, m in measures) + " |")
    print("|---|" + "---|---|---|" * len(measures))
    for s in seeds:
        r = table[(d, s)]
        print(f"| {s} | " + " | ".join(f"{r[k][0]:.4f} | {r[k][1]:.4f} | {r[k][2]:.3f}" for k, _ in measures) + " |")
    mean = lambda k, i: sum(table[(d, s)][k][i] for s in seeds) / len(seeds)
    print("| mean | " + " | ".join(f"{mean(k, 0):.4f} | {mean(k, 1):.4f} | " for k, _ in measures) + " |")
