"""OpenCLIP's side of vlp's step-by-step parity harness.

Builds an OpenCLIP model from a model-config JSON with OpenCLIP's own code and initialisation,
trains it for --steps steps the way `open_clip_train` does (AdamW with its weight-decay split,
warmup + cosine learning rate, optional global-norm clipping, the logit scale clamped to
[0, ln 100] after each step, `ClipLoss`), and writes everything vlp needs to repeat the run:

  DIR/config.json        the model config and the recipe (lr, warmup, wd, betas, eps, clip, ...)
  DIR/init.safetensors   the initial state dict (f32), OpenCLIP's names
  DIR/final.safetensors  the state dict after the last step
  DIR/batches.safetensors  images [steps*batch, 3, S, S] f32 (normalised) and ids [steps*batch, ctx] i64
  DIR/losses.json        the loss of every step (before its update), in f32 and, as the floor of
                         float noise, the same run repeated in f64 from the same start

The batches are a learnable toy task (each pair's image is its class's pattern plus noise, its
text the class's tokens): what is compared is the arithmetic of the model, loss and optimizer,
not the data. Text ids end with the end token = vocab_size - 1 (OpenCLIP pools at the argmax id)
and are padded with 0 after it.

Usage (a developer runs it; CI reads the committed fixture):
  python3 benches/openclip/parity.py --config benches/openclip/parity-tiny.json --steps 100 --out DIR
Needs: torch, open_clip_torch==3.3.0, safetensors, numpy.
"""
import argparse, json, math, os
import numpy as np
import torch
import open_clip
from open_clip.loss import ClipLoss
from safetensors.torch import save_file

ap = argparse.ArgumentParser()
ap.add_argument("--config", required=True, help="an OpenCLIP model config JSON")
ap.add_argument("--out", required=True)
ap.add_argument("--steps", type=int, default=100)
ap.add_argument("--batch", type=int, default=32)
ap.add_argument("--lr", type=float, default=1e-3)
ap.add_argument("--warmup", type=int, default=10)
ap.add_argument("--wd", type=float, default=0.2)
ap.add_argument("--beta1", type=float, default=0.9)
ap.add_argument("--beta2", type=float, default=0.98)
ap.add_argument("--eps", type=float, default=1e-6)
ap.add_argument("--clip", type=float, default=0.0, help="global gradient-norm clipping; 0 = off (OpenCLIP's default)")
ap.add_argument("--classes", type=int, default=24)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--threads", type=int, default=2)
a = ap.parse_args()
torch.set_num_threads(a.threads)
os.makedirs(a.out, exist_ok=True)
cfg = json.load(open(a.config))

torch.manual_seed(a.seed)
model = open_clip.CLIP(embed_dim=cfg["embed_dim"], vision_cfg=cfg["vision_cfg"], text_cfg=cfg["text_cfg"])
init = {k: v.detach().clone().float().contiguous() for k, v in model.state_dict().items()}
save_file(init, os.path.join(a.out, "init.safetensors"))

# The toy task.
size = cfg["vision_cfg"]["image_size"]
ctx, vocab = cfg["text_cfg"]["context_length"], cfg["text_cfg"]["vocab_size"]
rng = np.random.default_rng(a.seed)
patterns = rng.standard_normal((a.classes, 3, size // 4, size // 4)).astype(np.float32)
patterns = patterns.repeat(4, axis=2).repeat(4, axis=3)
words = rng.integers(1, vocab - 1, size=(a.classes, 4))
n = a.steps * a.batch
labels = rng.integers(0, a.classes, size=n)
images = (patterns[labels] + 0.5 * rng.standard_normal((n, 3, size, size))).astype(np.float32)
ids = np.zeros((n, ctx), dtype=np.int64)
for i, c in enumerate(labels):
    k = 2 + rng.integers(0, 3)  # 2 to 4 words, then the end token
    toks = list(words[c][:k]) + [vocab - 1]
    ids[i, : len(toks)] = toks
save_file({"images": torch.from_numpy(images), "ids": torch.from_numpy(ids)}, os.path.join(a.out, "batches.safetensors"))


def lr_at(step):
    # open_clip_train.scheduler.cosine_lr: warmup base*(step+1)/warmup, then cosine to 0.
    if step < a.warmup:
        return a.lr * (step + 1) / a.warmup
    e, es = step - a.warmup, a.steps - a.warmup
    return 0.5 * (1 + math.cos(math.pi * e / es)) * a.lr


def train(model, dtype):
    model = model.to(dtype).train()
    # open_clip_train.main: no weight decay for ndim < 2 and for bn/ln/bias/logit_scale names.
    exclude = lambda n, p: p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n
    named = list(model.named_parameters())
    groups = [
        {"params": [p for n, p in named if exclude(n, p) and p.requires_grad], "weight_decay": 0.0},
        {"params": [p for n, p in named if not exclude(n, p) and p.requires_grad], "weight_decay": a.wd},
    ]
    opt = torch.optim.AdamW(groups, lr=a.lr, betas=(a.beta1, a.beta2), eps=a.eps)
    loss_fn = ClipLoss()
    losses = []
    for step in range(a.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        sl = slice(step * a.batch, (step + 1) * a.batch)
        img = torch.from_numpy(images[sl]).to(dtype)
        txt = torch.from_numpy(ids[sl])
        out = model(img, txt)
        if isinstance(out, dict):
            out = (out["image_features"], out["text_features"], out["logit_scale"])
        loss = loss_fn(out[0], out[1], out[2])
        opt.zero_grad()
        loss.backward()
        if a.clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip, norm_type=2.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        losses.append(float(loss))
    return model, losses


reference = open_clip.CLIP(embed_dim=cfg["embed_dim"], vision_cfg=cfg["vision_cfg"], text_cfg=cfg["text_cfg"])
reference.load_state_dict(init)
reference, losses_f64 = train(reference, torch.float64)
model, losses = train(model, torch.float32)
save_file({k: v.detach().float().contiguous() for k, v in model.state_dict().items()}, os.path.join(a.out, "final.safetensors"))
recipe = {k: getattr(a, k) for k in ("steps", "batch", "lr", "warmup", "wd", "beta1", "beta2", "eps", "clip", "seed")}
json.dump({"model": cfg, "recipe": recipe, "open_clip": open_clip.__version__, "torch": torch.__version__},
          open(os.path.join(a.out, "config.json"), "w"), indent=1)
json.dump({"f32": losses, "f64": losses_f64}, open(os.path.join(a.out, "losses.json"), "w"))
gap = max(abs(x - y) for x, y in zip(losses, losses_f64))
print(f"RESULT steps={a.steps} first={losses[0]:.6f} last={losses[-1]:.6f} f32_vs_f64_max_gap={gap:.2e}")
