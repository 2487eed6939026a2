"""PyTorch's products at a ViT-B/32 block's shapes (batch 32: 1600 rows), with the bias, as
`torch.addmm` runs them on the CPU: the peer of `cargo run --release -p vlp-model --example vit_ops`.

    python3 benches/openclip/gemm_bench.py [--threads 2]
"""
import argparse
import time

import torch

parser = argparse.ArgumentParser()
parser.add_argument("--threads", type=int, default=2)
args = parser.parse_args()
torch.set_num_threads(args.threads)
rows = 32 * 50
for name, k, n in [("q, k, v fused", 768, 2304), ("MLP in", 768, 3072), ("MLP out", 3072, 768)]:
    x, w, b = torch.randn(rows, k), torch.randn(k, n) * 0.02, torch.randn(n) * 0.02
    torch.addmm(b, x, w)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(3):
            torch.addmm(b, x, w)
        best = min(best, (time.perf_counter() - start) / 3)
    print(f"  torch addmm: {name} (k {k}, n {n}) {best * 1e3:8.2f} ms {2 * rows * k * n / best / 1e9:6.1f} GFLOP/s")
print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
