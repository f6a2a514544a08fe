#!/usr/bin/python3
"""Build ttpred's embedded default model and spec.

Pre-trains a small CNN on Fashion-MNIST classes 0-4 (train split, labels 0..4)
and saves it as TorchScript to assets/default/model.pt, then writes
assets/default/spec.yaml describing the fine-tuning task (classes 5-9).

Usage:
  /usr/bin/python3 scripts/make_default.py            # build model.pt + spec.yaml
  /usr/bin/python3 scripts/make_default.py --check    # fine-tune the saved model
                                                      # for real, print the curve
                                                      # and the measured T(eps)

Needs Debian's python3-torch (1.13); no network access, no torchvision.
"""

import argparse
import gzip
import os
import struct
import sys
import time

# TorchScript serialization writes class constants in set-iteration order,
# which depends on Python's string hash seed: pin it so that the saved
# archives are byte-identical from run to run. OMP_WAIT_POLICY=PASSIVE keeps
# OpenMP threads from spinning, which otherwise makes training ~10x slower
# on a shared 2-core machine. Both must be set before the interpreter / libgomp
# start, hence the re-exec.
if (os.environ.get("PYTHONHASHSEED") != "0"
        or "OMP_WAIT_POLICY" not in os.environ):
    os.environ["PYTHONHASHSEED"] = "0"
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.execv(sys.executable, [sys.executable] + sys.argv)

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "assets", "default")
DATA_DIR = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.2860, 0.3530
SEED = 20240601

SPEC_YAML = """\
# Embedded default: fine-tune a CNN pre-trained on Fashion-MNIST classes 0-4
# to classes 5-9. Regenerate the model with: /usr/bin/python3 scripts/make_default.py
model: model.pt
data:
  images: /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
  labels: /usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz
  classes: [5, 6, 7, 8, 9]
  normalize: [0.2860, 0.3530]
  size: 2000
  subset: 500
loss: cross_entropy
optimizer:
  lr: 0.01
  momentum: 0.9
  batch_size: 32
  weight_decay: 0.0
training:
  epochs: 6
target:
  epsilon: 0.02
"""

# Fine-tuning task, must match SPEC_YAML.
FT_CLASSES = [5, 6, 7, 8, 9]
FT_SIZE = 2000
FT_LR, FT_MOMENTUM, FT_WD = 0.01, 0.9, 0.0
FT_BATCH, FT_EPOCHS, FT_EPS = 32, 6, 0.02


# --------------------------------------------------------------------------
# Data: same semantics as the C++ engine.
# --------------------------------------------------------------------------
def _open(path):
    with open(path, "rb") as f:
        head = f.read(2)
    return gzip.open(path, "rb") if head == b"\x1f\x8b" else open(path, "rb")


def read_idx(path):
    """Read an IDX file (raw or gzipped) into a uint8 tensor."""
    with _open(path) as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError("%s: not a uint8 IDX file" % path)
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    buf = bytearray(data[4 + 4 * ndim:])
    t = torch.frombuffer(buf, dtype=torch.uint8)
    n = 1
    for d in dims:
        n *= d
    if t.numel() != n:
        raise ValueError("%s: size mismatch" % path)
    return t.reshape(dims).clone()


def load_split(split, classes, size=None):
    """IDX -> float32 x/255 -> (x-mean)/std, [N,1,28,28]; keep samples whose
    label is in `classes` (file order), remap label to its index in the list;
    `size` takes the first N of those."""
    images = read_idx(os.path.join(DATA_DIR, "%s-images-idx3-ubyte.gz" % split))
    labels = read_idx(os.path.join(DATA_DIR, "%s-labels-idx1-ubyte.gz" % split))
    remap = torch.full((256,), -1, dtype=torch.long)
    for i, c in enumerate(classes):
        remap[c] = i
    y = remap[labels.long()]
    keep = (y >= 0).nonzero().flatten()
    if size is not None:
        keep = keep[:size]
    x = images[keep].to(torch.float32).div(255.0)
    x = (x - MEAN) / STD
    return x.unsqueeze(1).contiguous(), y[keep].contiguous()


# --------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------
class SmallCNN(nn.Module):
    """conv(1->16,3)-ReLU-maxpool-conv(16->32,3)-ReLU-maxpool-flatten-
    linear(800->64)-ReLU-linear(64->5). No BatchNorm, no Dropout."""

    def __init__(self, num_classes: int = 5):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3)
        self.conv2 = nn.Conv2d(16, 32, 3)
        self.fc1 = nn.Linear(32 * 5 * 5, 64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)   # [B,16,13,13]
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)   # [B,32,5,5]
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        return self.fc2(x)


def setup_torch():
    torch.set_num_threads(2)
    torch.manual_seed(SEED)
    try:
        torch.use_deterministic_algorithms(True)
    except Exception as e:  # pragma: no cover
        print("warning: deterministic algorithms unavailable: %s" % e)


@torch.no_grad()
def accuracy(model, x, y, bs=1000):
    correct = 0
    for i in range(0, x.shape[0], bs):
        correct += (model(x[i:i + bs]).argmax(1) == y[i:i + bs]).sum().item()
    return correct / x.shape[0]


@torch.no_grad()
def full_loss(model, x, y, bs=1000):
    tot = 0.0
    for i in range(0, x.shape[0], bs):
        tot += F.cross_entropy(model(x[i:i + bs]), y[i:i + bs],
                               reduction="sum").item()
    return tot / x.shape[0]


# --------------------------------------------------------------------------
# Build
# --------------------------------------------------------------------------
def build(epochs, batch, lr):
    setup_torch()
    t0 = time.time()
    x, y = load_split("train", [0, 1, 2, 3, 4])
    xt, yt = load_split("t10k", [0, 1, 2, 3, 4])
    print("pre-training data: %d train / %d test samples (classes 0-4)"
          % (x.shape[0], xt.shape[0]))

    model = SmallCNN(5)
    nparams = sum(p.numel() for p in model.parameters())
    print("parameters: %d" % nparams)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(SEED)
    n = x.shape[0]
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        run = 0.0
        steps = 0
        for i in range(0, n - batch + 1, batch):
            idx = perm[i:i + batch]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            run += loss.item()
            steps += 1
        model.eval()
        print("epoch %d: mean train loss %.4f, test acc (classes 0-4) %.4f  [%.1fs]"
              % (ep + 1, run / steps, accuracy(model, xt, yt), time.time() - t0))

    model.eval()
    acc_train = accuracy(model, x, y)
    acc_test = accuracy(model, xt, yt)
    print("pre-training accuracy: train %.4f, t10k %.4f (classes 0-4)"
          % (acc_train, acc_test))

    os.makedirs(OUT_DIR, exist_ok=True)
    scripted = torch.jit.script(model)
    scripted.eval()
    path = os.path.join(OUT_DIR, "model.pt")
    scripted.save(path)
    # Sanity: the saved model reproduces the eager one.
    reloaded = torch.jit.load(path)
    with torch.no_grad():
        d = (reloaded(xt[:256]) - model(xt[:256])).abs().max().item()
    assert d < 1e-5, d
    with open(os.path.join(OUT_DIR, "spec.yaml"), "w") as f:
        f.write(SPEC_YAML)
    print("wrote %s (%d bytes) and spec.yaml; total %.1fs"
          % (path, os.path.getsize(path), time.time() - t0))


# --------------------------------------------------------------------------
# Check: fine-tune the saved default for real.
# --------------------------------------------------------------------------
def check(log_every):
    setup_torch()
    t0 = time.time()
    path = os.path.join(OUT_DIR, "model.pt")
    model = torch.jit.load(path)
    model.eval()  # no BN/Dropout: eval == train semantics
    x, y = load_split("train", FT_CLASSES, FT_SIZE)
    n = x.shape[0]
    print("fine-tuning data: %d samples of classes %s, label counts %s"
          % (n, FT_CLASSES, torch.bincount(y, minlength=5).tolist()))
    ds = torch.utils.data.TensorDataset(x, y)
    gen = torch.Generator().manual_seed(SEED)
    loader = torch.utils.data.DataLoader(ds, batch_size=FT_BATCH, shuffle=True,
                                         drop_last=True, generator=gen)
    opt = torch.optim.SGD(model.parameters(), lr=FT_LR, momentum=FT_MOMENTUM,
                          weight_decay=FT_WD)
    crit = nn.CrossEntropyLoss()
    steps_per_epoch = len(loader)
    T = steps_per_epoch * FT_EPOCHS
    curve = [(0, full_loss(model, x, y))]
    print("initial accuracy on task: %.4f" % accuracy(model, x, y))
    t = 0
    for ep in range(FT_EPOCHS):
        for xb, yb in loader:
            loss = crit(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            t += 1
            if t % log_every == 0 or t == T:
                curve.append((t, full_loss(model, x, y)))
    train_s = time.time() - t0
    LT = curve[-1][1]
    print("steps/epoch %d, T = %d steps" % (steps_per_epoch, T))
    print("step  full-train-loss")
    for s, l in curve:
        print("%4d  %.5f" % (s, l))
    t_first = next(s for s, l in curve if abs(l - LT) < FT_EPS)
    # first logged step after which the curve stays within eps of L_T
    t_stay = T
    for s, l in reversed(curve):
        if abs(l - LT) >= FT_EPS:
            break
        t_stay = s
    print("L_0 = %.5f, L_T = %.5f, final accuracy %.4f"
          % (curve[0][1], LT, accuracy(model, x, y)))
    print("T(eps=%.2f) = min{t : |L_t - L_T| < eps} = %d steps (%.2f epochs)"
          % (FT_EPS, t_first, t_first / steps_per_epoch))
    print("first step after which the curve stays within eps: %d" % t_stay)
    print("fine-tuning check took %.1fs" % train_s)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true",
                    help="fine-tune assets/default/model.pt on the spec's task")
    ap.add_argument("--epochs", type=int, default=2, help="pre-training epochs")
    ap.add_argument("--batch", type=int, default=64, help="pre-training batch")
    ap.add_argument("--lr", type=float, default=1e-3, help="pre-training Adam lr")
    ap.add_argument("--log-every", type=int, default=5,
                    help="--check: log the full-set loss every N steps")
    a = ap.parse_args()
    if a.check:
        check(a.log_every)
    else:
        build(a.epochs, a.batch, a.lr)


if __name__ == "__main__":
    sys.exit(main())
