"""`torch.save` files for `crates/vlp-model/tests/pytorch.rs`: vlp's reader against PyTorch's own
writer. Writes, into crates/vlp-model/tests/fixtures/torch/:
  flat.bin       a state dict as `torch.save(model.state_dict())` writes it: f32, f16, bf16, f64,
                 int64 tensors, a transposed (non-contiguous) view, a slice at a storage offset,
                 a 0-d scalar, two keys sharing one storage
  checkpoint.pt  a training checkpoint as Chinese-CLIP saves it: {"epoch", "step", "name",
                 "state_dict": {"module." + key: tensor}, "optimizer": {...}}
  expected.json  every tensor's shape and values (as f32)
Usage: python3 benches/openclip/torch_fixture.py   (torch 2.5; a developer runs it, CI reads it)
"""
import json, os
from collections import OrderedDict
import torch

out = "crates/vlp-model/tests/fixtures/torch"
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
base = torch.randn(4, 6)
sd = OrderedDict()
sd["visual.proj"] = torch.randn(3, 5)
sd["half.weight"] = torch.randn(2, 3).half()
sd["bf16.weight"] = torch.randn(5).bfloat16()
sd["double"] = torch.randn(2, 2).double()
sd["steps"] = torch.tensor([3, -7, 1 << 20])
sd["transposed"] = base.t()                 # stride (1, 6)
sd["sliced"] = base[1:3, 2:5]               # offset 8, stride (6, 1)
sd["logit_scale"] = torch.tensor(2.6592)    # 0-d
sd["shared_a"] = base[0]
sd["shared_b"] = base[3]
torch.save(sd, os.path.join(out, "flat.bin"))
param = torch.nn.Parameter(torch.randn(2, 2))
ck = {"epoch": 3, "step": 120, "name": "tiny", "loss": 0.25,
      "state_dict": OrderedDict((f"module.{k}", v) for k, v in list(sd.items())[:3] + [("param", param.data)]),
      "optimizer": {"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 1e-4}]}}
torch.save(ck, os.path.join(out, "checkpoint.pt"))
expect = lambda d: {k: {"shape": list(v.shape), "values": v.float().flatten().tolist()} for k, v in d.items()}
json.dump({"torch": torch.__version__, "flat": expect(sd),
           "checkpoint": expect(OrderedDict((k[len("module."):], v) for k, v in ck["state_dict"].items()))},
          open(os.path.join(out, "expected.json"), "w"))
print("wrote", out)


class Evil:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


# a file that would run code if unpickled by Python: vlp must refuse it by the global it names
import pickle, zipfile
with zipfile.ZipFile(os.path.join(out, "evil.pt"), "w", zipfile.ZIP_STORED) as z:
    z.writestr("evil/data.pkl", pickle.dumps({"w": Evil()}, protocol=2))
