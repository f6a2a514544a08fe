#!/usr/bin/python3
"""Build the scenario assets of the accuracy benchmark (bench/accuracy).

Usage:
  /usr/bin/python3 bench/accuracy/make_scenarios.py OUTDIR [--reduced]

Writes, under OUTDIR:
  models/cnn_fmnist.pt    the embedded default CNN (assets/default/model.pt,
                          pre-trained on Fashion-MNIST 0-4), copied
  models/mlp_digits.pt    MLP 64 -> 64 -> ReLU -> 5, pre-trained on digits 0-4
  models/res_digits.pt    small residual CNN without BatchNorm, pre-trained on
                          digits 0-4 (not built with --reduced)
  data/digits59_flat.pt   digits 5-9 as {"x": [N, 64], "y": [N]}, labels 0..4
  data/digits59_img.pt    digits 5-9 as {"x": [N, 1, 8, 8], "y": [N]}
  specs/NAME.yaml         one job spec per scenario
  scenarios.json          the scenario table (name, model, task, knobs, L_0, eps)

Everything is seeded; the TorchScript archives are byte-identical from run to
run (PYTHONHASHSEED is pinned, as in scripts/make_default.py).

The fine-tuning tasks are other classes than the pre-training ones:
Fashion-MNIST 5-9 (IDX + `classes`) for the CNN, sklearn digits 5-9 for the
MLP and the residual CNN. N0 = N (data.subset = data.size) in every scenario, so
that the benchmark measures the dynamics, not the subset extrapolation.

Target rule (the same for every scenario, never tuned per scenario):
  eps = EPS_FRACTION * L_0,  EPS_FRACTION = 0.02,
where L_0 is the loss of the pre-trained model on the fine-tuning set (the
same number for the prediction and the measurement: both start at w0). Both
losses are >= 0, so L_0 bounds the loss range L_0 - L_T from above; eps is 2 %
of the largest possible drop. The rule needs no training.

Horizons are fixed per architecture/learning-rate by run-time (one fine-tuning
run takes a few seconds on 2 cores), not by looking at the curves.
"""

import argparse
import gzip
import json
import os
import shutil
import struct
import sys

if (os.environ.get("PYTHONHASHSEED") != "0"
        or "OMP_WAIT_POLICY" not in os.environ):
    os.environ["PYTHONHASHSEED"] = "0"
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.execv(sys.executable, [sys.executable] + sys.argv)

import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DEFAULT_MODEL = os.path.join(ROOT, "assets", "default", "model.pt")
FMNIST = "/usr/share/datasets/fashion-mnist"
FM_IMAGES = os.path.join(FMNIST, "train-images-idx3-ubyte.gz")
FM_LABELS = os.path.join(FMNIST, "train-labels-idx1-ubyte.gz")
FM_MEAN, FM_STD = 0.2860, 0.3530
SEED = 20240611
EPS_FRACTION = 0.02

N_FMNIST = 500     # CNN scenarios: N = N0 = 500 (2500 Gram rows)
N_DIGITS = 800     # digits scenarios: N = N0 = 800 (4000 Gram rows)

# --------------------------------------------------------------------------
# Scenario grid. Columns: name, model, loss, lr, momentum, batch, wd, steps.
# Chosen to cover: both losses, momentum 0 / 0.9, batch 16..256, learning
# rates over a decade per (model, loss, momentum) group, weight decays
# 0 / 1e-4 / 1e-3 / 1e-2. Horizons: steps so that a run fits in seconds.
# --------------------------------------------------------------------------
FULL = [
    # CNN on Fashion-MNIST 5-9 (56 389 parameters)
    ("cnn_ce_m9_b32_lr0.01",     "cnn", "cross_entropy", 0.01,  0.9, 32,  0.0,  150),
    ("cnn_ce_m9_b32_lr0.003",    "cnn", "cross_entropy", 0.003, 0.9, 32,  0.0,  300),
    ("cnn_ce_m9_b128_lr0.03",    "cnn", "cross_entropy", 0.03,  0.9, 128, 0.0,  150),
    ("cnn_ce_m0_b16_lr0.01",     "cnn", "cross_entropy", 0.01,  0.0, 16,  0.0,  400),
    ("cnn_ce_m0_b64_lr0.03",     "cnn", "cross_entropy", 0.03,  0.0, 64,  1e-3, 300),
    ("cnn_ce_m0_b256_lr0.1",     "cnn", "cross_entropy", 0.1,   0.0, 256, 0.0,  200),
    ("cnn_mse_m9_b32_lr0.003",   "cnn", "mse",           0.003, 0.9, 32,  0.0,  200),
    ("cnn_mse_m9_b64_lr0.001",   "cnn", "mse",           0.001, 0.9, 64,  1e-4, 300),
    ("cnn_mse_m0_b32_lr0.01",    "cnn", "mse",           0.01,  0.0, 32,  0.0,  300),
    ("cnn_mse_m0_b128_lr0.03",   "cnn", "mse",           0.03,  0.0, 128, 1e-2, 200),
    # MLP on digits 5-9 (4 485 parameters)
    ("mlp_ce_m9_b16_lr0.01",     "mlp", "cross_entropy", 0.01,  0.9, 16,  0.0,  300),
    ("mlp_ce_m9_b64_lr0.03",     "mlp", "cross_entropy", 0.03,  0.9, 64,  1e-3, 300),
    ("mlp_ce_m9_b256_lr0.1",     "mlp", "cross_entropy", 0.1,   0.9, 256, 0.0,  200),
    ("mlp_ce_m0_b32_lr0.1",      "mlp", "cross_entropy", 0.1,   0.0, 32,  0.0,  400),
    ("mlp_ce_m0_b128_lr0.3",     "mlp", "cross_entropy", 0.3,   0.0, 128, 1e-4, 300),
    ("mlp_ce_m0_b64_lr1.0",      "mlp", "cross_entropy", 1.0,   0.0, 64,  0.0,  300),
    ("mlp_mse_m9_b32_lr0.01",    "mlp", "mse",           0.01,  0.9, 32,  0.0,  300),
    ("mlp_mse_m9_b128_lr0.03",   "mlp", "mse",           0.03,  0.9, 128, 1e-2, 300),
    ("mlp_mse_m0_b16_lr0.03",    "mlp", "mse",           0.03,  0.0, 16,  0.0,  400),
    ("mlp_mse_m0_b64_lr0.1",     "mlp", "mse",           0.1,   0.0, 64,  1e-3, 400),
    ("mlp_mse_m0_b256_lr0.3",    "mlp", "mse",           0.3,   0.0, 256, 0.0,  300),
    # residual CNN without BatchNorm on digits 5-9 (6 085 parameters)
    ("res_ce_m9_b32_lr0.01",     "res", "cross_entropy", 0.01,  0.9, 32,  0.0,  200),
    ("res_ce_m0_b64_lr0.1",      "res", "cross_entropy", 0.1,   0.0, 64,  1e-3, 300),
    ("res_ce_m0_b16_lr0.03",     "res", "cross_entropy", 0.03,  0.0, 16,  0.0,  300),
    ("res_mse_m9_b128_lr0.01",   "res", "mse",           0.01,  0.9, 128, 0.0,  200),
    ("res_mse_m0_b32_lr0.03",    "res", "mse",           0.03,  0.0, 32,  1e-4, 300),
    # learning-rate schedules (issue 7; optional 9th field: optimizer.schedule)
    ("cnn_ce_m9_b32_lr0.01_cos", "cnn", "cross_entropy", 0.01,  0.9, 32,  0.0,  300, "{type: cosine}"),
    ("mlp_ce_m9_b32_lr0.03_wcos", "mlp", "cross_entropy", 0.03, 0.9, 32,  0.0,  300,
     "{type: cosine, warmup_steps: 30}"),
    ("mlp_mse_m0_b32_lr0.1_step", "mlp", "mse",          0.1,   0.0, 32,  0.0,  300,
     "{type: step, step_size: 100, gamma: 0.3}"),
    ("cnn_mse_m9_b64_lr0.003_lin", "cnn", "mse",         0.003, 0.9, 64,  0.0,  300,
     "{type: linear, warmup_steps: 20}"),
]

REDUCED = [
    ("r_mlp_ce_m9_b32_lr0.01",   "mlp", "cross_entropy", 0.01,  0.9, 32,  0.0,  100),
    ("r_mlp_mse_m0_b64_lr0.1",   "mlp", "mse",           0.1,   0.0, 64,  1e-3, 100),
    ("r_cnn_ce_m9_b64_lr0.01",   "cnn", "cross_entropy", 0.01,  0.9, 64,  0.0,  60),
]


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------
def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    assert zero == 0 and dtype == 0x08, path
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    t = torch.frombuffer(bytearray(data[4 + 4 * ndim:]), dtype=torch.uint8)
    return t.reshape(dims).clone()


def fmnist_task(classes, size):
    """Same semantics as the engine: IDX -> [0,1] -> normalize, class filter in
    file order, labels remapped to the index in `classes`, first `size`."""
    images, labels = read_idx(FM_IMAGES), read_idx(FM_LABELS)
    remap = torch.full((256,), -1, dtype=torch.long)
    for i, c in enumerate(classes):
        remap[c] = i
    y = remap[labels.long()]
    keep = (y >= 0).nonzero().flatten()[:size]
    x = (images[keep].float() / 255.0 - FM_MEAN) / FM_STD
    return x.unsqueeze(1).contiguous(), y[keep].contiguous()


def digits(classes):
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16.0
    t = torch.tensor(d.target, dtype=torch.long)
    remap = torch.full((10,), -1, dtype=torch.long)
    for i, c in enumerate(classes):
        remap[c] = i
    y = remap[t]
    keep = (y >= 0).nonzero().flatten()
    return x[keep].contiguous(), y[keep].contiguous()


# --------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------
class MLP(nn.Module):
    """[B, 64] -> Linear(64, 64) -> ReLU -> Linear(64, 5)."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 64)
        self.fc2 = nn.Linear(64, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


class ResCNN(nn.Module):
    """[B, 1, 8, 8] -> conv(1->16, 3, pad 1) -> ReLU -> residual block
    x + conv(ReLU(conv(x))) (16 ch, no BatchNorm) -> ReLU -> avgpool 2 ->
    flatten (256) -> Linear(256, 5)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 16, 3, padding=1)
        self.c1 = nn.Conv2d(16, 16, 3, padding=1)
        self.c2 = nn.Conv2d(16, 16, 3, padding=1)
        self.fc = nn.Linear(16 * 4 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.stem(x))
        h = F.relu(h + self.c2(F.relu(self.c1(h))))
        h = F.avg_pool2d(h, 2)
        return self.fc(torch.flatten(h, 1))


def pretrain(model, x, y, epochs, lr, batch=32, seed=SEED):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n = x.shape[0]
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n - batch + 1, batch):
            idx = perm[i:i + batch]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    return acc


def save_script(model, path, probe):
    scripted = torch.jit.script(model)
    scripted.eval()
    scripted.save(path)
    with torch.no_grad():
        d = (torch.jit.load(path)(probe) - model(probe)).abs().max().item()
    assert d < 1e-5, d


@torch.no_grad()
def initial_loss(model, x, y, loss):
    f = model(x)
    if loss == "cross_entropy":
        return F.cross_entropy(f, y).item()
    return F.mse_loss(f, F.one_hot(y, f.shape[1]).float()).item()


# --------------------------------------------------------------------------
# Specs
# --------------------------------------------------------------------------
def spec_yaml(sc, task, eps):
    name, arch, loss, lr, m, b, wd, steps = sc[:8]
    schedule = sc[8] if len(sc) > 8 else None
    lines = ["# bench/accuracy scenario (generated by make_scenarios.py)",
             "name: %s" % name,
             "model: ../models/%s" % task["model"],
             "data:"]
    lines += ["  " + l for l in task["data"]]
    lines += ["  size: %d" % task["n"],
              "  subset: %d" % task["n"],
              "loss: %s" % loss,
              "optimizer:",
              "  lr: %g" % lr,
              "  momentum: %g" % m,
              "  batch_size: %d" % b,
              "  weight_decay: %g" % wd]
    if schedule:
        lines += ["  schedule: %s" % schedule]
    lines += ["training:",
              "  steps: %d" % steps,
              "target:",
              "  epsilon: %s" % eps,
              ""]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir")
    ap.add_argument("--reduced", action="store_true",
                    help="the 3 short CI scenarios only")
    a = ap.parse_args()

    torch.set_num_threads(2)
    try:
        torch.use_deterministic_algorithms(True)
    except Exception:
        pass

    grid = REDUCED if a.reduced else FULL
    archs = sorted({sc[1] for sc in grid})
    out = os.path.abspath(a.outdir)
    for sub in ("models", "data", "specs"):
        os.makedirs(os.path.join(out, sub), exist_ok=True)

    tasks, models, info = {}, {}, {}
    if "mlp" in archs or "res" in archs:
        xp, yp = digits([0, 1, 2, 3, 4])
        xf, yf = digits([5, 6, 7, 8, 9])
        xf, yf = xf[:N_DIGITS], yf[:N_DIGITS]
        torch.save({"x": xf, "y": yf}, os.path.join(out, "data", "digits59_flat.pt"))
        torch.save({"x": xf.reshape(-1, 1, 8, 8).contiguous(), "y": yf},
                   os.path.join(out, "data", "digits59_img.pt"))
    if "mlp" in archs:
        torch.manual_seed(SEED)
        m = MLP()
        acc = pretrain(m, xp, yp, epochs=20, lr=1e-3)
        save_script(m, os.path.join(out, "models", "mlp_digits.pt"), xf[:64])
        models["mlp"] = (m, xf, yf)
        info["mlp"] = {"pretrain_accuracy_digits04": acc,
                       "parameters": sum(p.numel() for p in m.parameters())}
        tasks["mlp"] = {"model": "mlp_digits.pt", "n": xf.shape[0],
                        "data": ["path: ../data/digits59_flat.pt"],
                        "task": "sklearn digits 5-9 (labels 0..4), x/16"}
    if "res" in archs:
        torch.manual_seed(SEED + 1)
        m = ResCNN()
        xi = xf.reshape(-1, 1, 8, 8)
        acc = pretrain(m, xp.reshape(-1, 1, 8, 8), yp, epochs=15, lr=2e-3)
        save_script(m, os.path.join(out, "models", "res_digits.pt"), xi[:64])
        models["res"] = (m, xi, yf)
        info["res"] = {"pretrain_accuracy_digits04": acc,
                       "parameters": sum(p.numel() for p in m.parameters())}
        tasks["res"] = {"model": "res_digits.pt", "n": xf.shape[0],
                        "data": ["path: ../data/digits59_img.pt"],
                        "task": "sklearn digits 5-9 (labels 0..4), x/16, [1, 8, 8]"}
    if "cnn" in archs:
        dst = os.path.join(out, "models", "cnn_fmnist.pt")
        shutil.copyfile(DEFAULT_MODEL, dst)
        m = torch.jit.load(dst)
        m.eval()
        xc, yc = fmnist_task([5, 6, 7, 8, 9], N_FMNIST)
        models["cnn"] = (m, xc, yc)
        info["cnn"] = {"source": "assets/default/model.pt (scripts/make_default.py)",
                       "parameters": sum(p.numel() for p in m.parameters())}
        tasks["cnn"] = {"model": "cnn_fmnist.pt", "n": N_FMNIST,
                        "data": ["images: %s" % FM_IMAGES,
                                 "labels: %s" % FM_LABELS,
                                 "classes: [5, 6, 7, 8, 9]",
                                 "normalize: [%g, %g]" % (FM_MEAN, FM_STD)],
                        "task": "Fashion-MNIST train 5-9 (labels 0..4), normalized"}

    l0_cache = {}
    table = []
    for sc in grid:
        name, arch, loss = sc[0], sc[1], sc[2]
        if (arch, loss) not in l0_cache:
            m, x, y = models[arch]
            l0_cache[(arch, loss)] = initial_loss(m, x, y, loss)
        l0 = l0_cache[(arch, loss)]
        eps = "%.3g" % (EPS_FRACTION * l0)
        path = os.path.join(out, "specs", name + ".yaml")
        with open(path, "w") as f:
            f.write(spec_yaml(sc, tasks[arch], eps))
        table.append({"name": name, "arch": arch, "task": tasks[arch]["task"],
                      "spec": path, "loss": loss, "lr": sc[3], "momentum": sc[4],
                      "batch_size": sc[5], "weight_decay": sc[6], "steps": sc[7],
                      "schedule": sc[8] if len(sc) > 8 else None,
                      "N": tasks[arch]["n"], "L0": l0, "epsilon": float(eps)})
    with open(os.path.join(out, "scenarios.json"), "w") as f:
        json.dump({"eps_fraction": EPS_FRACTION, "reduced": a.reduced,
                   "models": info, "scenarios": table}, f, indent=1)
    print("make_scenarios: %d scenarios in %s (%s)" % (
        len(table), out, ", ".join("%s: %s" % (k, v) for k, v in sorted(info.items()))))


if __name__ == "__main__":
    sys.exit(main())
