#!/usr/bin/env python3
"""Pillow peer of `vlp bench decode`: decode, convert to RGB (alpha on white), center square
crop, resize to SIZE (bilinear), normalise with CLIP's mean/std into float32 CHW, over every
image file under DIR, with a pool of worker processes. Prints images/s as JSON.

    python benches/decode_pillow.py DIR [--size 224] [--repeat 3] [--workers 2]
"""
import argparse, json, os, sys, time
from multiprocessing import Pool

import numpy as np
from PIL import Image

MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32).reshape(3, 1, 1)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32).reshape(3, 1, 1)
SIZE = 224


def process(path):
    im = Image.open(path)
    if im.mode in ("RGBA", "LA", "P"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
    im = im.convert("RGB")
    w, h = im.size
    s = min(w, h)
    box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    im = im.resize((SIZE, SIZE), Image.BILINEAR, box=box)
    x = np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 255.0
    return ((x - MEAN) / STD).shape[0]


def init(size):
    global SIZE
    SIZE = size


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    a = ap.parse_args()
    files = sorted(os.path.join(r, f) for r, _, fs in os.walk(a.dir) for f in fs
                   if f.lower().endswith((".png", ".jpg", ".jpeg", ".webp")))
    if not files:
        sys.exit(f"{a.dir}: no images")
    with Pool(a.workers, initializer=init, initargs=(a.size,)) as pool:
        pool.map(process, files, chunksize=16)  # warm-up pass (page cache, workers)
        t = time.perf_counter()
        for _ in range(a.repeat):
            pool.map(process, files, chunksize=16)
        secs = time.perf_counter() - t
    print(json.dumps({"files": len(files), "size": a.size, "workers": a.workers, "seconds": round(secs, 3),
                      "images_per_s": round(len(files) * a.repeat / secs, 1)}))


if __name__ == "__main__":
    main()
