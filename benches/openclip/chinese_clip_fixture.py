"""Reference outputs of Chinese-CLIP itself (`cn_clip` 1.6), for `vlp import chinese-clip`'s
parity test: a random-initialised tiny `cn_clip.clip.model.CLIP` (its own ViT and BERT code),
saved as Chinese-CLIP saves training checkpoints ({"epoch", "step", "state_dict": {"module." +
key}}), with the embeddings it gives for four images and six captions and `cn_clip.clip.tokenize`'s
ids for a fixed list of strings.

  DIR/vision.json, DIR/text.json   the model configs (cn_clip's format)
  DIR/checkpoint.pt                the checkpoint (f16 weights, to keep the fixture small)
  DIR/vocab.txt                    cn_clip's vocabulary (RoBERTa-wwm-ext, 21,128 tokens)
  DIR/images/*.png, DIR/expected.json

Usage: python3 benches/openclip/chinese_clip_fixture.py [--out tests/fixtures/chinese-clip-tiny]
       python3 benches/openclip/chinese_clip_fixture.py --rn --out tests/fixtures/chinese-clip-rn-tiny   (ModifiedResNet, as RN50)
       python3 benches/openclip/chinese_clip_fixture.py --real --rn --out /tmp/cn-rn50   (RN50 + RBT3, f32, by hand)
       python3 benches/openclip/chinese_clip_fixture.py --real --out /tmp/cn-vit-b-16   (ViT-B-16 + RoBERTa-wwm-ext-base, f32, by hand)
Needs: torch, cn_clip==1.6.0, pillow, numpy.
"""
import argparse, json, os, shutil
import numpy as np
import torch
import cn_clip
from cn_clip.clip import tokenize
from cn_clip.clip.model import CLIP
from PIL import Image, ImageDraw

ap = argparse.ArgumentParser()
ap.add_argument("--out", default="tests/fixtures/chinese-clip-tiny")
ap.add_argument("--real", action="store_true", help="Chinese-CLIP's ViT-B-16 (RN50 with --rn) and RoBERTa-wwm-ext-base (RBT3) configs, f32")
ap.add_argument("--rn", action="store_true", help="a ModifiedResNet image tower (`vision_layers` a list, as RN50.json writes it)")
a = ap.parse_args()
torch.manual_seed(0)
vision = {"embed_dim": 32, "image_resolution": 32, "vision_layers": 2, "vision_width": 64, "vision_patch_size": 8, "vision_head_width": 32}
text = {"vocab_size": 21128, "text_attention_probs_dropout_prob": 0.1, "text_hidden_act": "gelu", "text_hidden_dropout_prob": 0.1,
        "text_hidden_size": 32, "text_initializer_range": 0.02, "text_intermediate_size": 128, "text_max_position_embeddings": 64,
        "text_num_attention_heads": 2, "text_num_hidden_layers": 2, "text_type_vocab_size": 2}
if a.rn:
    vision = {"embed_dim": 32, "image_resolution": 64, "vision_layers": "[1,1,1,1]", "vision_width": 8, "vision_patch_size": None,
              "vision_head_width": 32}
if a.real:
    configs = os.path.join(os.path.dirname(cn_clip.__file__), "clip", "model_configs")
    vision = json.load(open(os.path.join(configs, "RN50.json" if a.rn else "ViT-B-16.json")))
    text = json.load(open(os.path.join(configs, "RBT3-chinese.json" if a.rn else "RoBERTa-wwm-ext-base-chinese.json")))
built = dict(vision)
if isinstance(built["vision_layers"], str):  # cn_clip's create_model evaluates RN50's "[3,4,6,3]"; so does this
    built["vision_layers"] = json.loads(built["vision_layers"])
model = CLIP(**built, **text).eval()
dtype = torch.float32 if a.real else torch.float16
with torch.no_grad():
    for p in model.parameters():
        p.normal_(0, 0.2) if p.dim() < 2 else None  # LayerNorm (and BatchNorm) gains and biases away from 1 and 0
        p.copy_(p.to(dtype).float())
    for m in model.modules():  # BatchNorm's statistics as a trained model has them
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.running_mean.copy_(m.running_mean.to(dtype).float())
            m.running_var.copy_(m.running_var.to(dtype).float())
os.makedirs(os.path.join(a.out, "images"), exist_ok=True)
json.dump(vision, open(os.path.join(a.out, "vision.json"), "w"), indent=1)
json.dump(text, open(os.path.join(a.out, "text.json"), "w"), indent=1)
state = {f"module.{k}": (v.to(dtype) if v.is_floating_point() else v) for k, v in model.state_dict().items()}
torch.save({"epoch": 1, "step": 10, "name": "tiny", "state_dict": state}, os.path.join(a.out, "checkpoint.pt"))
shutil.copy(os.path.join(os.path.dirname(cn_clip.__file__), "clip", "vocab.txt"), os.path.join(a.out, "vocab.txt"))

size = vision["image_resolution"]
rng = np.random.default_rng(1)
mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)
names, pixels = [], []
for i, colour in enumerate([(220, 30, 30), (30, 160, 60), (40, 60, 200), (240, 200, 20)]):
    im = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(im)
    (d.ellipse if i % 2 else d.rectangle)([4 + i, 6, size - 5, size - 3 - i], fill=colour)
    im = Image.fromarray(np.clip(np.asarray(im, dtype=np.int64) + rng.integers(-12, 13, (size, size, 3)), 0, 255).astype(np.uint8))
    names.append(f"images/{i}.png")
    im.save(os.path.join(a.out, names[-1]))
    pixels.append((torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1) - mean) / std)
strings = ["一只在草地上奔跑的小狗", "红色的圆形", "蓝色方块，黄色背景。", "A Photo of a CAT", "café naïve résumé",
           "混合 mixed 文本 text 123", "😀 表情符号 👍", "标点！？（括号）「引号」……", "数字 2024 年 12 月", "",
           "很长的句子" * 20]
captions = strings[:6]
with torch.no_grad():
    fi = model.encode_image(torch.stack(pixels))
    ft = model.encode_text(tokenize(captions, context_length=52))
    fi, ft = fi / fi.norm(dim=-1, keepdim=True), ft / ft.norm(dim=-1, keepdim=True)
json.dump({"cn_clip": cn_clip.__version__ if hasattr(cn_clip, "__version__") else "1.6.0", "torch": torch.__version__,
           "images": names, "image_embeddings": fi.tolist(), "captions": captions, "text_embeddings": ft.tolist(),
           "strings": strings, "token_ids": tokenize(strings, context_length=52).tolist()},
          open(os.path.join(a.out, "expected.json"), "w"))
print("wrote", a.out)
