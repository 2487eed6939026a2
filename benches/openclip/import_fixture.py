"""Reference outputs of OpenCLIP itself, for `vlp import openclip`'s parity tests.

Builds a random-initialised `open_clip.CLIP` from an OpenCLIP model-config JSON (OpenCLIP's own
architecture code), rounds its weights to the dtype they are saved in, saves them as safetensors,
and writes the embeddings OpenCLIP gives for a few images and captions, with its tokenizer's ids
for a fixed list of strings (English, Chinese, emoji, punctuation, accents, over-long):

  DIR/config.json         the model config (OpenCLIP's format)
  DIR/weights.safetensors the state dict (f16 by default, to keep the committed fixture small)
  DIR/weights.bin         the same as torch.save writes it (with --config only: not committed)
  DIR/images/*.png        the images, at the model's input size (no resize on either side)
  DIR/expected.json       image and text embeddings (L2-normalised, f32), token ids

Usage (a developer runs it; CI only reads what it wrote):
  python3 benches/openclip/import_fixture.py --out tests/fixtures/openclip-tiny            # the committed one
  python3 benches/openclip/import_fixture.py --rn --out tests/fixtures/openclip-rn-tiny    # the committed ModifiedResNet one
  python3 benches/openclip/import_fixture.py --config RN50-quickgelu --dtype f32 --out /tmp/rn50  # real size, by hand
  python3 benches/openclip/import_fixture.py --config ViT-B-32 --dtype f32 --out /tmp/vitb32  # real size, by hand
Needs: torch, open_clip_torch==3.3.0, safetensors, pillow, numpy.
"""
import argparse, json, os
import numpy as np
import torch
import open_clip
from open_clip.factory import get_model_config
from PIL import Image, ImageDraw
from safetensors.torch import save_file

TINY = {
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}

# a ModifiedResNet (OpenCLIP's RN50 family) at the smallest size its code builds: four stages of
# one block, a 256-wide attention pool of 8 heads over a 2×2 grid
TINY_RN = {
    "embed_dim": 32,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}

STRINGS = [
    "a photo of a cat",
    "A Photo Of A CAT.",
    "  two   spaces\tand a tab\nand a newline  ",
    "it's what they'd've wanted, isn't it?",
    "红色的圆形",
    "一只在草地上奔跑的小狗",
    "混合 mixed 文本 text 123",
    "😀 grinning face 👍🏽 thumbs up 🇯🇵",
    "punctuation!!! ... ??? (brackets) [square] {curly} <angle> #hash @at $5.99 100%",
    "café naïve résumé Ångström façade",
    "Ελληνικά и русский текст",
    "numbers 1234567890 and 3.14159",
    "",
    " ".join(["an over-long caption that goes on"] * 20),
]


def images(size):
    out = []
    rng = np.random.default_rng(0)
    for i, colour in enumerate([(220, 30, 30), (30, 160, 60), (40, 60, 200), (240, 200, 20)]):
        im = Image.new("RGB", (size, size), (255, 255, 255))
        d = ImageDraw.Draw(im)
        a, b = sorted(rng.integers(2, size - 2, 2))
        if i % 2:
            d.ellipse([a // 2, a // 2, b, b], fill=colour)
        else:
            d.rectangle([a // 2, b // 3, b, size - 3], fill=colour)
        noise = rng.integers(-12, 13, (size, size, 3))
        out.append(Image.fromarray(np.clip(np.asarray(im, dtype=np.int64) + noise, 0, 255).astype(np.uint8)))
    return out


ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
ap.add_argument("--config", default=None, help="an OpenCLIP model name (ViT-B-32) or a JSON file; default: the tiny one")
ap.add_argument("--dtype", default="f16", choices=["f16", "f32"])
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--rn", action="store_true", help="the tiny ModifiedResNet instead of the tiny ViT")
a = ap.parse_args()
torch.manual_seed(a.seed)
if a.config is None:
    cfg = TINY_RN if a.rn else TINY
elif a.config.endswith(".json"):
    cfg = json.load(open(a.config))
else:
    cfg = get_model_config(a.config)
cfg = {k: v for k, v in cfg.items() if k in ("embed_dim", "vision_cfg", "text_cfg", "quick_gelu")}
model = open_clip.CLIP(**cfg).eval()
dtype = torch.float16 if a.dtype == "f16" else torch.float32
with torch.no_grad():
    # BatchNorm as a trained model has it: with its initial statistics (mean 0, variance 1) and
    # each block's last γ at 0, every block would be its shortcut and a fixture could not tell
    # whether the statistics were loaded
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0, 0.2)
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    for t in list(model.parameters()) + [b for b in model.buffers() if b.is_floating_point()]:
        t.copy_(t.to(dtype).float())
os.makedirs(os.path.join(a.out, "images"), exist_ok=True)
json.dump(cfg, open(os.path.join(a.out, "config.json"), "w"), indent=1)
state = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in model.state_dict().items()}
save_file(state, os.path.join(a.out, "weights.safetensors"))
if a.config is not None:  # the by-hand fixtures also get a torch.save copy (`open_clip_pytorch_model.bin`'s format)
    torch.save(state, os.path.join(a.out, "weights.bin"))

size = cfg["vision_cfg"]["image_size"]
names, pixels = [], []
mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN).view(3, 1, 1)
std = torch.tensor(open_clip.OPENAI_DATASET_STD).view(3, 1, 1)
for i, im in enumerate(images(size)):
    name = f"images/{i}.png"
    im.save(os.path.join(a.out, name))
    names.append(name)
    x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)
    pixels.append((x - mean) / std)
tok = open_clip.get_tokenizer("ViT-B-32")  # OpenCLIP's SimpleTokenizer, context 77
captions = STRINGS[:6]
with torch.no_grad():
    fi = model.encode_image(torch.stack(pixels), normalize=True)
    ft = model.encode_text(tok(captions), normalize=True)
ids = tok(STRINGS)
tokens = ids.tolist()  # [strings, 77], padded with 0
json.dump({
    "open_clip": open_clip.__version__, "torch": torch.__version__, "dtype": a.dtype,
    "images": names, "image_embeddings": fi.tolist(),
    "captions": captions, "text_embeddings": ft.tolist(),
    "strings": STRINGS, "token_ids": tokens,
}, open(os.path.join(a.out, "expected.json"), "w"))
print(f"wrote {a.out}: {sum(p.numel() for p in model.parameters())} parameters, {len(names)} images, {len(captions)} captions, {len(STRINGS)} strings")
