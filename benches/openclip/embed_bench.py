"""OpenCLIP's side of `vlp bench embed`: the same model (a fixture directory written by
`import_fixture.py`, which `vlp import openclip` also reads), the same batches and captions,
PyTorch inference on CPU. Images from ready `[batch, 3, size, size]` tensors, texts from strings
with open_clip's own tokenizer (tokenizing included, as in vlp's figure).

Usage: python3 benches/openclip/embed_bench.py DIR [--batch 32] [--batches 8] [--threads 2]
       python3 benches/openclip/embed_bench.py --model ViT-B-32 --device cuda --batch 1024
(--model: open_clip's own architecture with random weights; on a card, throughput does not depend
on the weights. --device cuda reads each batch's embeddings back to the host, as vlp's does.)
Needs: torch, open_clip_torch==3.3.0, safetensors.
"""
import argparse, json, os, time
import torch
import open_clip

ap = argparse.ArgumentParser()
ap.add_argument("dir", nargs="?")
ap.add_argument("--model", help="an OpenCLIP model name, random weights (instead of DIR)")
ap.add_argument("--device", default="cpu")
ap.add_argument("--batch", type=int, default=32)
ap.add_argument("--batches", type=int, default=8)
ap.add_argument("--threads", type=int, default=2)
a = ap.parse_args()
torch.set_num_threads(a.threads)
if a.model:
    model = open_clip.create_model(a.model, pretrained=None).eval()
    s = model.visual.image_size
    s = s[0] if isinstance(s, (tuple, list)) else s
else:
    from safetensors.torch import load_file
    cfg = json.load(open(os.path.join(a.dir, "config.json")))
    model = open_clip.CLIP(**cfg).eval()
    model.load_state_dict({k: v.float() for k, v in load_file(os.path.join(a.dir, "weights.safetensors")).items()})
    s = cfg["vision_cfg"]["image_size"]
model = model.to(a.device)
tok = open_clip.get_tokenizer("ViT-B-32")
images = torch.randn(a.batch, 3, s, s, device=a.device)
things = ["dog", "red bicycle", "bowl of noodles", "mountain lake", "street market", "old clock", "paper lantern", "sailing boat"]
captions = [f"a photo of a {things[i % 8]} seen from the {['left', 'right'][i % 2]} side, picture number {i}" for i in range(a.batch * (a.batches + 1))]


def timed(f):
    f(0)
    t = time.perf_counter()
    for i in range(1, a.batches + 1):
        f(i)
    return time.perf_counter() - t


with torch.inference_mode():
    image_s = timed(lambda i: model.encode_image(images, normalize=True).cpu())
    text_s = timed(lambda i: model.encode_text(tok(captions[i * a.batch:(i + 1) * a.batch]).to(a.device), normalize=True).cpu())
n = a.batch * a.batches
print(f"RESULT images_per_s={n / image_s:.1f} texts_per_s={n / text_s:.1f} batch={a.batch} batches={a.batches} image_size={s} threads={a.threads} device={a.device} torch={torch.__version__}")
