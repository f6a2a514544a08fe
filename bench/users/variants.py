#!/usr/bin/python3
"""Variants of the fresh held-out scenarios (make_scenarios.py --set fresh) for the recipes of
issue 15, all in the "holdout" half (nothing is tuned on them):

  bntrain  model.batchnorm: train, on three ResNet-with-BatchNorm jobs
  clip     optimizer.clip_grad_norm at half the full-batch gradient norm at w0 (1000 samples;
           mini-batch norms are larger, so early steps are clipped), on four jobs

Usage:
  /usr/bin/python3 bench/users/variants.py FRESH_DIR OUT_DIR bntrain|clip
  /usr/bin/python3 bench/users/run.py --scenarios OUT_DIR --half holdout --modes "default:"

The lists below were fixed before any result of these variants.
"""
import json
import os
import re
import sys

BNTRAIN = ["fresh2_resbn_ce_m5_b48_f0.35", "fresh_resbn_ce_m0_b96_f0.7", "fresh2_resbn_mse_m0_b48_f0.7"]
CLIP = ["fresh_tmlp_ce_m5_b48_f0.35", "fresh_wmlp_ce_m9_b24_f0.35_wd", "fresh_cnn_ce_m0_b96_f0.7",
        "fresh_cnn_mse_m0_b48_f0.7"]


def grad_norm(spec_path, loss):
    import torch
    import torch.nn.functional as F
    t = open(spec_path).read()
    base = os.path.dirname(spec_path)
    m = torch.jit.load(os.path.join(base, re.search(r"^model: (.*)$", t, re.M).group(1)))
    m.eval()
    obj = torch.load(os.path.join(base, re.search(r"^  path: (.*)$", t, re.M).group(1)))
    x, y = (obj["x"], obj["y"]) if isinstance(obj, dict) else obj
    x, y = x[:1000].float(), y[:1000]
    out = m(x)
    if loss == "mse":
        l = F.mse_loss(out, F.one_hot(y, out.shape[1]).float() if y.dtype == torch.long else y)
    else:
        l = F.cross_entropy(out, y)
    g = torch.autograd.grad(l, [p for p in m.parameters() if p.requires_grad])
    return torch.sqrt(sum((q ** 2).sum() for q in g)).item()


def main(fresh, out, kind):
    d = json.load(open(os.path.join(fresh, "scenarios.json")))
    os.makedirs(os.path.join(out, "specs"), exist_ok=True)
    for sub in ("models", "data"):
        link = os.path.join(out, sub)
        if not os.path.exists(link):
            os.symlink(os.path.abspath(os.path.join(fresh, sub)), link)
    wanted = BNTRAIN if kind == "bntrain" else CLIP
    rows = []
    for s in d["scenarios"]:
        if s["name"] not in wanted:
            continue
        t = open(s["spec"]).read()
        name = s["name"] + "_" + kind
        t = t.replace("name: " + s["name"], "name: " + name)
        s = dict(s, name=name, set=kind)
        if kind == "bntrain":
            t = re.sub(r"^model: (.*)$", r"model:\n  path: \1\n  batchnorm: train", t, flags=re.M)
        else:
            clip = float("%.3g" % (0.5 * grad_norm(s["spec"], s["loss"])))
            t = t.replace("optimizer:\n", "optimizer:\n  clip_grad_norm: %s\n" % clip, 1)
            s["clip_grad_norm"] = clip
        s["spec"] = os.path.join(os.path.abspath(out), "specs", name + ".yaml")
        open(s["spec"], "w").write(t)
        rows.append(s)
        print(name, s.get("clip_grad_norm", ""))
    json.dump(dict(d, scenarios=rows, set=kind), open(os.path.join(out, "scenarios.json"), "w"), indent=1)


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[3] not in ("bntrain", "clip"):
        sys.exit(__doc__)
    main(*sys.argv[1:])
