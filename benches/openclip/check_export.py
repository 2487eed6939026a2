"""`vlp export openclip` checked by OpenCLIP itself: loads an exported directory with
`open_clip.create_model_and_transforms("local-dir:DIR")` and compares what it computes with vlp.

Two checks:
  --fixture tests/fixtures/openclip-tiny   embeddings of the fixture's images and captions against
                                           the ones OpenCLIP computed before the import (the whole
                                           round trip OpenCLIP → vlp → OpenCLIP)
  --data data/emoji --run eval/emoji-s0/emoji-s0.test.t2i.run
                                           a model vlp trained: OpenCLIP's text→image scores for the
                                           (query, image) pairs of vlp's own TREC run, with the
                                           exported tokenizer.json's ids and the export's resize
                                           (PIL's bilinear or bicubic, antialiased), against the
                                           scores vlp wrote
Usage: python3 benches/openclip/check_export.py DIR (--fixture F | --data D --run R)
Needs: torch, open_clip_torch==3.3.0, tokenizers, pillow, numpy.
"""
import argparse, json, os
import numpy as np
import torch
import open_clip
from PIL import Image

ap = argparse.ArgumentParser()
ap.add_argument("dir")
ap.add_argument("--fixture")
ap.add_argument("--data")
ap.add_argument("--run")
a = ap.parse_args()
torch.set_num_threads(2)
model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{a.dir}")
model.eval()
cfg = json.load(open(os.path.join(a.dir, "open_clip_config.json")))
pre = cfg["preprocess_cfg"]
size = cfg["model_cfg"]["vision_cfg"]["image_size"]
mean, std = torch.tensor(pre["mean"]).view(3, 1, 1), torch.tensor(pre["std"]).view(3, 1, 1)


def pixels(im):
    im = im.convert("RGBA")
    im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im).convert("RGB")
    w, h = im.size
    side = min(w, h)
    im = im.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
    if side != size:
        im = im.resize((size, size), Image.BICUBIC if pre["interpolation"] == "bicubic" else Image.BILINEAR)
    x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (x - mean) / std


if a.fixture:
    e = json.load(open(os.path.join(a.fixture, "expected.json")))
    tok = open_clip.get_tokenizer("ViT-B-32")
    with torch.no_grad():
        fi = model.encode_image(torch.stack([pixels(Image.open(os.path.join(a.fixture, n))) for n in e["images"]]), normalize=True)
        ft = model.encode_text(tok(e["captions"]), normalize=True)
    gi = (fi - torch.tensor(e["image_embeddings"])).abs().max().item()
    gt = (ft - torch.tensor(e["text_embeddings"])).abs().max().item()
    print(f"RESULT fixture image_gap={gi:.2e} text_gap={gt:.2e}")
else:
    from tokenizers import Tokenizer
    tk = Tokenizer.from_file(os.path.join(a.dir, "tokenizer.json"))
    ctx = cfg["model_cfg"]["text_cfg"]["context_length"]
    tk.enable_truncation(max_length=ctx)
    pad = tk.padding["pad_id"] if tk.padding else 0
    tk.enable_padding(length=ctx, pad_id=pad)
    texts = {x["id"]: x["text"] for x in map(json.loads, open(os.path.join(a.data, "test.texts.jsonl")))}
    images = {x["id"]: x["image"] for x in map(json.loads, open(os.path.join(a.data, "test.jsonl")))}
    rows = [l.split() for l in open(a.run)]
    queries = sorted({r[0] for r in rows})[:200]
    docs = sorted({r[2] for r in rows if r[0] in queries})
    with torch.no_grad():
        ids = torch.tensor([e.ids for e in tk.encode_batch([texts[q] for q in queries])], dtype=torch.long)
        ft = model.encode_text(ids, normalize=True)
        fi = torch.cat([model.encode_image(torch.stack([pixels(Image.open(os.path.join(a.data, images[d]))) for d in docs[k:k + 256]]), normalize=True)
                        for k in range(0, len(docs), 256)])
    qi, di = {q: i for i, q in enumerate(queries)}, {d: i for i, d in enumerate(docs)}
    sims = ft @ fi.T
    gaps = [abs(sims[qi[r[0]], di[r[2]]].item() - float(r[4])) for r in rows if r[0] in qi]
    top_agree = np.mean([sims[qi[q]].argmax().item() == di[next(r[2] for r in rows if r[0] == q and r[3] == "1")] for q in queries])
    print(f"RESULT run pairs={len(gaps)} max_score_gap={max(gaps):.2e} mean_score_gap={np.mean(gaps):.2e} top1_agreement={top_agree:.3f}")
