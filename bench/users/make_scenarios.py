#!/usr/bin/python3
"""Build the assets of the users' benchmark (bench/users): jobs like the ones users bring.

Usage:
  /usr/bin/python3 bench/users/make_scenarios.py OUTDIR [--reduced]

Six architectures (56k to 420k parameters), each pre-trained here on one task
and fine-tuned on another, from data on this machine:

  cnn    the embedded default CNN (assets/default/model.pt), Fashion-MNIST 5-9
  wcnn   a wider CNN: conv 32, conv 64, fc 128 (about 420k parameters)
  resbn  a ResNet with BatchNorm (eval mode: running statistics), 2 blocks of 48 channels
  wmlp   a wide ReLU MLP 784 -> 512 -> 5 on flattened Fashion-MNIST
  tmlp   a tanh MLP 64 -> 256 -> 256 -> 5 on scikit-learn digits
  attn   a small transformer (2 pre-norm blocks, d = 96, 4 heads) reading a
         Fashion-MNIST image as a sequence of 28 rows of 28 pixels

Pre-training: Adam on classes 0-4; fine-tuning: classes 5-9 (labels 0..4),
N = 2000 Fashion-MNIST images (a seeded random draw of the training set) or
all 900 digits 5-9. Every spec leaves data.subset unset: the estimator runs at
its default N0 (2500 / C = 500), extrapolated to N.

Learning rates are fractions f in {0.1, 0.25, 0.5, 1} of the linearized
model's stability limit lr* = 2 (1 + m) / (kappa lambda_max(Theta / n))
(kappa = 2/C for MSE, 1/2 for cross-entropy), measured here by power iteration
on Theta of 500 fine-tuning samples at w0 (double-backward products J J^T v),
so every architecture is run from slow to edge-of-stability learning rates.

Target rules (one per scenario, rotated): eps2L0 (epsilon = 2 % of L0),
eps5drop (epsilon = 5 % of the real run's loss drop L0 - L_T), loss (the loss
at 70 % of the real drop), accuracy (the training accuracy at 70 % of the real
gain). The last three are derived from the ground truth by run.py, the same
rule for every scenario.

Split, fixed before any result: a scenario is in the validation half when the
first byte of sha256(name) is odd, else in the development half.

Writes OUTDIR/models/*.pt, OUTDIR/data/*.pt, OUTDIR/specs/NAME.yaml and
OUTDIR/scenarios.json. The pre-trained models are committed in bench/users/models/
(fresh/ for --set fresh) with their lambda_max: pre-training is seeded but not
bit-reproducible across CPUs (BLAS kernels), and the ground truth in truth/ is
keyed by the model's and the spec's bytes, so every machine uses these (the data
is reproducible). --pretrain --save-models builds and commits them anew, which
invalidates every truth of those models.
"""

import argparse
import gzip
import hashlib
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
# The pre-trained models of the default set, committed with their lambda_max: the
# ground truth in truth/ is keyed by the model's bytes and the spec's (lr from
# lambda_max), and pre-training is not bit-reproducible across CPUs (BLAS kernels),
# so a new machine reuses these instead of pre-training again (--pretrain: anew).
MODELS_DIR = os.path.join(HERE, "models")
FMNIST = "/usr/share/datasets/fashion-mnist"
FM_MEAN, FM_STD = 0.2860, 0.3530
SEED = 20261201
N_FM = 2000
N_PRE = 6000

# name suffix -> (loss, momentum, batch, lr fraction of lr*, weight decay, horizon)
GRID = [
    ("ce_m9_b32_f0.1",   "cross_entropy", 0.9, 32,  0.1,  0.0,  800),
    ("ce_m9_b64_f0.5",   "cross_entropy", 0.9, 64,  0.5,  0.0,  300),
    ("ce_m0_b16_f0.25",  "cross_entropy", 0.0, 16,  0.25, 0.0,  1200),
    ("ce_m0_b128_f1",    "cross_entropy", 0.0, 128, 1.0,  0.0,  200),
    ("mse_m9_b32_f0.25", "mse",           0.9, 32,  0.25, 0.0,  400),
    ("mse_m0_b64_f0.5",  "mse",           0.0, 64,  0.5,  1e-3, 2000),
    ("ce_m9_b16_f0.1_wd", "cross_entropy", 0.9, 16, 0.1,  1e-3, 500),
    ("mse_m0_b32_f1",    "mse",           0.0, 32,  1.0,  0.0,  100),
]
RULES = ["eps2L0", "eps5drop", "loss", "accuracy"]
ARCHS = ["cnn", "wcnn", "resbn", "wmlp", "tmlp", "attn"]
REDUCED = [("tmlp", 1), ("tmlp", 7)]  # CI: two short digits scenarios


def half(name):
    return "validation" if hashlib.sha256(name.encode()).digest()[0] % 2 else "development"


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------
def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    assert zero == 0 and dtype == 0x08, path
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return torch.frombuffer(bytearray(data[4 + 4 * ndim:]), dtype=torch.uint8).reshape(dims).clone()


def fmnist(classes, n, seed):
    x = read_idx(os.path.join(FMNIST, "train-images-idx3-ubyte.gz"))
    t = read_idx(os.path.join(FMNIST, "train-labels-idx1-ubyte.gz")).long()
    remap = torch.full((10,), -1, dtype=torch.long)
    for i, c in enumerate(classes):
        remap[c] = i
    y = remap[t]
    keep = (y >= 0).nonzero().flatten()
    g = torch.Generator().manual_seed(seed)
    keep = keep[torch.randperm(keep.numel(), generator=g)[:n]]
    xs = (x[keep].float() / 255.0 - FM_MEAN) / FM_STD
    return xs.unsqueeze(1).contiguous(), y[keep].contiguous()


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
class WideCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 32, 3, padding=1)
        self.c2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.max_pool2d(F.relu(self.c1(x)), 2)
        h = F.max_pool2d(F.relu(self.c2(h)), 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(h, 1))))


class Block(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.c1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.b1 = nn.BatchNorm2d(c)
        self.c2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.b2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.b2(self.c2(F.relu(self.b1(self.c1(x))))))


class ResBN(nn.Module):
    def __init__(self, c: int = 48):
        super().__init__()
        self.stem = nn.Conv2d(1, c, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.l1 = Block(c)
        self.l2 = Block(c)
        self.fc = nn.Linear(c, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn(self.stem(x)))
        h = self.l2(F.max_pool2d(self.l1(h), 2))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1))


class WideMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 512)
        self.fc2 = nn.Linear(512, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(x)))


class TanhMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 256)
        self.fc2 = nn.Linear(256, 256)
        self.fc3 = nn.Linear(256, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(torch.tanh(self.fc2(torch.tanh(self.fc1(x)))))


class AttnBlock(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.n1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.n2 = nn.LayerNorm(d)
        self.ff1 = nn.Linear(d, 2 * d)
        self.ff2 = nn.Linear(2 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.heads
        q, k, v = self.qkv(self.n1(x)).chunk(3, dim=-1)
        q = q.reshape(b, t, h, d // h).transpose(1, 2)
        k = k.reshape(b, t, h, d // h).transpose(1, 2)
        v = v.reshape(b, t, h, d // h).transpose(1, 2)
        a = torch.softmax(q @ k.transpose(-2, -1) / float(d // h) ** 0.5, dim=-1)
        x = x + self.proj((a @ v).transpose(1, 2).reshape(b, t, d))
        return x + self.ff2(F.gelu(self.ff1(self.n2(x))))


class Transformer(nn.Module):
    """[B, 28, 28] (28 rows as tokens) -> embed 28 -> 96 + learned positions ->
    2 pre-norm blocks -> LayerNorm -> mean over tokens -> Linear(96, 5)."""

    def __init__(self, d: int = 96, heads: int = 4):
        super().__init__()
        self.embed = nn.Linear(28, d)
        self.pos = nn.Parameter(torch.zeros(1, 28, d))
        self.b1 = AttnBlock(d, heads)
        self.b2 = AttnBlock(d, heads)
        self.norm = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x) + self.pos
        h = self.b2(self.b1(h))
        return self.fc(self.norm(h).mean(dim=1))


def fine_tune_data(arch, fm, dg, tag):
    """arch's fine-tuning inputs, labels and data file name: fm and dg are the
    (x, y) of the Fashion-MNIST images [N, 1, 28, 28] and of the digits (written
    as data/fmnist<tag>_{img,flat,seq}.pt and data/digits<tag>.pt)."""
    if arch == "tmlp":
        return dg[0], dg[1], "digits%s.pt" % tag
    x, y = fm
    if arch == "wmlp":
        return x.reshape(-1, 784), y, "fmnist%s_flat.pt" % tag
    if arch == "attn":
        return x.reshape(-1, 28, 28), y, "fmnist%s_seq.pt" % tag
    return x, y, "fmnist%s_img.pt" % tag


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_manifest(models_dir):
    path = os.path.join(models_dir, "models.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def use_committed(manifest, models_dir, arch, path):
    """Copies the committed model of arch to path and returns its manifest entry
    (sha256, lambda, pretrain_accuracy); None when there is none."""
    entry = manifest.get(arch)
    if not entry:
        return None
    src = os.path.join(models_dir, arch + ".pt")
    if file_sha256(src) != entry["sha256"]:
        raise SystemExit("make_scenarios: %s does not match its manifest (sha256): --pretrain to build anew" % src)
    shutil.copyfile(src, path)
    return entry


def save_models(models_dir, out, archs, info):
    """Commits the models built in out (OUT/models/ARCH.pt) with their lambda_max."""
    os.makedirs(models_dir, exist_ok=True)
    manifest = read_manifest(models_dir)
    for arch in archs:
        dst = os.path.join(models_dir, arch + ".pt")
        shutil.copyfile(os.path.join(out, "models", arch + ".pt"), dst)
        manifest[arch] = {"sha256": file_sha256(dst), "lambda": info[arch]["lambda"],
                          "pretrain_accuracy": info[arch]["pretrain_accuracy"]}
    with open(os.path.join(models_dir, "models.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
    print("make_scenarios: models and manifest written to %s" % models_dir, file=sys.stderr)


def pretrain(model, x, y, epochs, lr, batch=64, seed=SEED):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n = x.shape[0]
    model.train()
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
        return (model(x).argmax(1) == y).float().mean().item()


def save_script(model, path, probe):
    model.eval()
    scripted = torch.jit.script(model)
    scripted.eval()
    scripted.save(path)
    with torch.no_grad():
        d = (torch.jit.load(path)(probe) - model(probe)).abs().max().item()
    assert d < 1e-4, d


def lambda_max(model, x, iters=30):
    """Largest eigenvalue of Theta / n at w0 on x (Theta = J J^T over outputs), by
    power iteration with double-backward products."""
    params = [p for p in model.parameters() if p.requires_grad]
    f = model(x)
    v = torch.randn(f.shape, generator=torch.Generator().manual_seed(SEED))
    lam = 0.0
    for _ in range(iters):
        v = v / v.norm()
        u = torch.zeros_like(f, requires_grad=True)
        g = torch.autograd.grad(f, params, grad_outputs=u, create_graph=True)  # J^T u, linear in u
        jt = torch.autograd.grad(f, params, grad_outputs=v, retain_graph=True)  # J^T v
        s = sum((gi * ji.detach()).sum() for gi, ji in zip(g, jt))
        tv = torch.autograd.grad(s, u, retain_graph=True)[0]  # J J^T v
        lam = float((tv * v).sum())
        v = tv.detach()
    return lam / x.shape[0]


@torch.no_grad()
def initial(model, x, y, loss):
    f = model(x)
    acc = (f.argmax(1) == y).float().mean().item()
    if loss == "cross_entropy":
        return F.cross_entropy(f, y).item(), acc
    return F.mse_loss(f, F.one_hot(y, 5).float()).item(), acc


def spec_yaml(name, model, data, loss, lr, m, b, wd, steps, eps):
    return "\n".join([
        "# bench/users scenario (generated by make_scenarios.py)",
        "name: %s" % name,
        "model: ../models/%s" % model,
        "data:",
        "  path: ../data/%s" % data,
        "loss: %s" % loss,
        "optimizer:",
        "  lr: %.4g" % lr,
        "  momentum: %g" % m,
        "  batch_size: %d" % b,
        "  weight_decay: %g" % wd,
        "training:",
        "  steps: %d" % steps,
        "target:",
        "  epsilon: %.4g" % eps,
        ""])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir")
    ap.add_argument("--reduced", action="store_true", help="the two short CI scenarios only")
    ap.add_argument("--pretrain", action="store_true",
                    help="pre-train every model here instead of using bench/users/models/ (then --save-models)")
    ap.add_argument("--save-models", action="store_true",
                    help="write the models built here into bench/users/models/ with their manifest")
    ap.add_argument("--set", choices=["users", "fresh"], default="users",
                    help="fresh: the held-out set declared in fresh.py (reversed tasks, new settings)")
    a = ap.parse_args()
    if a.set == "fresh":
        if a.reduced:
            ap.error("--reduced is for the default set")
        import fresh
        return fresh.build(a.outdir, sys.modules[__name__], pretrain=a.pretrain, save_models=a.save_models)
    torch.set_num_threads(2)
    out = os.path.abspath(a.outdir)
    for sub in ("models", "data", "specs"):
        os.makedirs(os.path.join(out, sub), exist_ok=True)

    wanted = [(arch, i) for arch in ARCHS for i in range(len(GRID))]
    if a.reduced:
        wanted = REDUCED
    archs = sorted({w[0] for w in wanted}, key=ARCHS.index)

    manifest = {} if a.pretrain or a.reduced else read_manifest(MODELS_DIR)
    built = {}
    xf = yf = xd = yd = None
    if any(x in archs for x in ("cnn", "wcnn", "resbn", "wmlp", "attn")):
        xp, yp = fmnist([0, 1, 2, 3, 4], N_PRE, SEED)
        xf, yf = fmnist([5, 6, 7, 8, 9], N_FM, SEED + 1)
        torch.save({"x": xf, "y": yf}, os.path.join(out, "data", "fmnist59_img.pt"))
        torch.save({"x": xf.reshape(-1, 784).contiguous(), "y": yf}, os.path.join(out, "data", "fmnist59_flat.pt"))
        torch.save({"x": xf.reshape(-1, 28, 28).contiguous(), "y": yf}, os.path.join(out, "data", "fmnist59_seq.pt"))
    if "tmlp" in archs:
        xdp, ydp = digits([0, 1, 2, 3, 4])
        xd, yd = digits([5, 6, 7, 8, 9])
        torch.save({"x": xd, "y": yd}, os.path.join(out, "data", "digits59.pt"))
    for arch in archs:
        torch.manual_seed(SEED + ARCHS.index(arch))
        path = os.path.join(out, "models", arch + ".pt")
        x, y, data = fine_tune_data(arch, (xf, yf), (xd, yd), "59")
        committed = use_committed(manifest, MODELS_DIR, arch, path)
        if committed:
            m, acc = torch.jit.load(path), committed["pretrain_accuracy"]
        elif arch == "cnn":
            shutil.copyfile(DEFAULT_MODEL, path)
            m, acc = torch.jit.load(path), None
        elif arch == "wcnn":
            m = WideCNN()
            acc = pretrain(m, xp, yp, 2, 1e-3)
        elif arch == "resbn":
            m = ResBN()
            acc = pretrain(m, xp, yp, 2, 2e-3)
        elif arch == "wmlp":
            m = WideMLP()
            acc = pretrain(m, xp.reshape(-1, 784), yp, 3, 1e-3)
        elif arch == "tmlp":
            m = TanhMLP()
            acc = pretrain(m, xdp, ydp, 30, 1e-3, batch=32)
        else:
            m = Transformer()
            acc = pretrain(m, xp.reshape(-1, 28, 28), yp, 3, 1e-3)
        if arch != "cnn" and not committed:
            save_script(m, path, x[:64])
            m = torch.jit.load(path)
        m.eval()
        lam = committed["lambda"] if committed else lambda_max(m, x[:500])
        built[arch] = {"model": m, "x": x, "y": y, "data": data, "lambda": lam, "pretrain_accuracy": acc,
                       "parameters": sum(p.numel() for p in m.parameters())}
        print("make_scenarios: %s: %d parameters, pre-train accuracy %s, lambda_max(Theta/n) %.4g" % (
            arch, built[arch]["parameters"], "-" if acc is None else "%.3f" % acc, lam), file=sys.stderr)

    table = []
    for arch, i in wanted:
        suffix, loss, mom, b, frac, wd, steps = GRID[i]
        name = "%s_%s" % (arch, suffix)
        rule = RULES[(i + ARCHS.index(arch)) % len(RULES)]
        B = built[arch]
        kappa = 2.0 / 5 if loss == "mse" else 0.5
        lr_star = 2 * (1 + mom) / (kappa * B["lambda"])
        lr = frac * lr_star
        l0, a0 = initial(B["model"], B["x"], B["y"], loss)
        eps = 0.02 * l0
        spec = os.path.join(out, "specs", name + ".yaml")
        with open(spec, "w") as f:
            f.write(spec_yaml(name, arch + ".pt", B["data"], loss, lr, mom, b, wd, steps, eps))
        table.append({"name": name, "half": half(name), "arch": arch, "spec": spec, "loss": loss,
                      "lr": float("%.4g" % lr), "lr_fraction": frac, "lr_star": lr_star, "momentum": mom,
                      "batch_size": b, "weight_decay": wd, "steps": steps, "rule": rule,
                      "N": int(B["x"].shape[0]), "L0": l0, "accuracy0": a0, "epsilon_2L0": float("%.4g" % eps)})
    info = {k: {kk: v[kk] for kk in ("parameters", "pretrain_accuracy", "lambda", "data")} for k, v in built.items()}
    if a.save_models:
        save_models(MODELS_DIR, out, [x for x in archs if x != "cnn"], info)  # cnn is assets/default/model.pt
    with open(os.path.join(out, "scenarios.json"), "w") as f:
        json.dump({"models": info, "scenarios": table}, f, indent=1)
    dev = sum(1 for t in table if t["half"] == "development")
    print("make_scenarios: %d scenarios (%d development, %d validation) in %s" % (
        len(table), dev, len(table) - dev, out), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
