"""OpenCLIP trained on a vlp data set with a vlp recipe, for the side-by-side in BENCHMARKS.md.

Trains `open_clip.CLIP` (OpenCLIP's own model, initialisation, ClipLoss; AdamW with
open_clip_train's weight-decay split, warmup + cosine, the logit-scale clamp) on the train split of
a data set that `vlp data build` wrote, with the same things vlp's run used:
- token ids from the run's own `tokenizer.json` ([CLS] text [SEP], truncated to the context),
  pooled at the [SEP] token (OpenCLIP's `pool_type: eos`);
- a random caption per sample per epoch, a random resized crop of the configured scale on white,
  CLIP's mean and std;
then embeds the test split (center crop, first caption, every distinct text) and writes TREC runs
with the ids `vlp eval` uses, for `vlp trec-eval QRELS RUN --compare VLP_RUN`.

Usage:
  python3 benches/openclip/train_vlp_data.py --data data/emoji --run runs/emoji-s0 --out runs/openclip-emoji-s0 [--seed 0]
`--run` is the vlp run to copy the recipe from (its config.toml and tokenizer.json).
Needs: torch, torchvision, open_clip_torch==3.3.0, tokenizers, pillow, numpy (and tomllib, Python ≥ 3.11).
"""
import argparse, json, math, os, random, time, tomllib
import numpy as np
import torch
import open_clip
from open_clip.loss import ClipLoss
from PIL import Image
from tokenizers import Tokenizer
import torchvision.transforms as T

ap = argparse.ArgumentParser()
ap.add_argument("--data", required=True, help="a data set built by `vlp data build`")
ap.add_argument("--run", required=True, help="the vlp run whose recipe and tokenizer to use")
ap.add_argument("--out", required=True)
ap.add_argument("--seed", type=int, default=None, help="default: the vlp run's train.seed")
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--depth", type=int, default=1000, help="results per query in the runs")
a = ap.parse_args()
torch.set_num_threads(a.threads)
os.makedirs(a.out, exist_ok=True)

ckpt = open(os.path.join(a.run, "latest")).read().strip()
cfg = tomllib.load(open(os.path.join(a.run, ckpt, "config.toml"), "rb"))
tok = Tokenizer.from_file(os.path.join(a.run, ckpt, "tokenizer.json"))
m, t, data = cfg["model"], cfg["train"], cfg.get("data", {})
seed = t.get("seed", 0) if a.seed is None else a.seed
random.seed(seed)
np.random.seed(seed)
torch.manual_seed(seed)

img, txt = m["image"], m["text"]
if img["kind"] != "vit" or not txt["causal"] or txt["pool"] != "eos":
    raise SystemExit("this script mirrors ViT image towers and causal text towers pooled at the end token")
sep = tok.token_to_id("[SEP]")
if sep is None:
    raise SystemExit("the run's tokenizer has no [SEP]: only WordPiece tokenizers are mirrored here")
ctx = txt["context_length"]
oc_cfg = {
    "embed_dim": m["embed_dim"],
    "vision_cfg": {"image_size": img["image_size"], "patch_size": img["patch_size"], "width": img["width"],
                   "layers": img["layers"], "head_width": img["width"] // img["heads"], "mlp_ratio": img.get("mlp_ratio", 4.0)},
    "text_cfg": {"context_length": ctx, "vocab_size": txt["vocab_size"], "width": txt["width"], "heads": txt["heads"],
                 "layers": txt["layers"], "mlp_ratio": txt.get("mlp_ratio", 4.0), "pool_type": "eos", "eos_id": sep},
}
model = open_clip.CLIP(**oc_cfg)
tok.enable_truncation(max_length=ctx)
tok.enable_padding(length=ctx, pad_id=tok.token_to_id("[PAD]") or 0, pad_token="[PAD]")


def encode(texts):
    return torch.tensor([e.ids for e in tok.encode_batch(texts)], dtype=torch.long)


mean = data.get("mean", [0.48145466, 0.4578275, 0.40821073])
std = data.get("std", [0.26862954, 0.26130258, 0.27577711])
scale = tuple(data.get("crop_scale", [0.9, 1.0]))
size = img["image_size"]
train_tf = T.Compose([T.RandomResizedCrop(size, scale=scale, interpolation=T.InterpolationMode.BILINEAR),
                      *( [T.RandomHorizontalFlip()] if data.get("hflip") else [] ),
                      T.ToTensor(), T.Normalize(mean, std)])
eval_tf = T.Compose([T.Resize(size, interpolation=T.InterpolationMode.BILINEAR), T.CenterCrop(size),
                     T.ToTensor(), T.Normalize(mean, std)])


def load(path):
    im = Image.open(os.path.join(a.data, path))
    im = im.convert("RGBA")
    white = Image.new("RGBA", im.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, im).convert("RGB")


def manifest(split):
    return [json.loads(l) for l in open(os.path.join(a.data, f"{split}.jsonl"))]


train = manifest("train")
train_images = [load(s["image"]) for s in train]
train_captions = [[c["text"] for c in s["captions"]] for s in train]

exclude = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n
named = list(model.named_parameters())
opt = torch.optim.AdamW(
    [{"params": [p for n, p in named if exclude(n, p)], "weight_decay": 0.0},
     {"params": [p for n, p in named if not exclude(n, p)], "weight_decay": t.get("weight_decay", 0.2)}],
    lr=t["lr"], betas=(t.get("beta1", 0.9), t.get("beta2", 0.98)), eps=t.get("eps", 1e-6))
steps, warmup, batch = t["steps"], t.get("warmup_steps", 0), t["batch_size"]
clip = t.get("grad_clip_norm", 1.0)


def lr_at(step):
    if step < warmup:
        return t["lr"] * (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup))) * t["lr"]


loss_fn = ClipLoss()
log = open(os.path.join(a.out, "train_log.jsonl"), "w")
model.train()
step, epoch, started = 0, 0, time.time()
while step < steps:
    order = np.random.permutation(len(train))
    for k in range(0, len(order) - batch + 1, batch):
        if step >= steps:
            break
        idx = order[k:k + batch]
        images = torch.stack([train_tf(train_images[i]) for i in idx])
        texts = encode([random.choice(train_captions[i]) for i in idx])
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        f_img, f_txt, scale_ = model(images, texts)
        loss = loss_fn(f_img, f_txt, scale_)
        opt.zero_grad()
        loss.backward()
        if clip and clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip, norm_type=2.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        step += 1
        log.write(json.dumps({"step": step, "epoch": epoch, "loss": float(loss), "lr": lr_at(step - 1),
                              "elapsed_s": time.time() - started}) + "\n")
    epoch += 1
log.close()
train_secs = time.time() - started

# The test split, as `vlp eval` ranks it: every image against every distinct text.
model.eval()
test = manifest("test")
texts = [json.loads(l) for l in open(os.path.join(a.data, "test.texts.jsonl"))]
with torch.no_grad():
    fi = torch.cat([model.encode_image(torch.stack([eval_tf(load(s["image"])) for s in test[k:k + 256]]), normalize=True)
                    for k in range(0, len(test), 256)])
    ft = torch.cat([model.encode_text(encode([x["text"] for x in texts[k:k + 256]]), normalize=True)
                    for k in range(0, len(texts), 256)])


def write_run(path, queries, docs, sims):
    depth = min(a.depth, len(docs))
    with open(path, "w") as f:
        for qi, q in enumerate(queries):
            scores, order = torch.topk(sims[qi], depth)
            for rank, (s, d) in enumerate(zip(scores.tolist(), order.tolist())):
                f.write(f"{q} Q0 {docs[d]} {rank + 1} {s:.6f} openclip\n")


image_ids, text_ids = [s["id"] for s in test], [x["id"] for x in texts]
sims = ft @ fi.T
write_run(os.path.join(a.out, "test.t2i.run"), text_ids, image_ids, sims)
write_run(os.path.join(a.out, "test.i2t.run"), image_ids, text_ids, sims.T)
json.dump({"model": oc_cfg, "steps": steps, "seed": seed, "train_seconds": train_secs, "final_loss": float(loss),
           "open_clip": open_clip.__version__, "torch": torch.__version__}, open(os.path.join(a.out, "summary.json"), "w"), indent=1)
print(f"RESULT steps={steps} final_loss={float(loss):.4f} train_seconds={train_secs:.0f}")
