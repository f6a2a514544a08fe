#!/usr/bin/python3
"""Write the small TorchScript models and data files used by ttpred's C++
unit tests.

Usage: /usr/bin/python3 tests/models/make_test_models.py OUTDIR

Run by CMake at build time: fast (a few seconds), deterministic and seeded.
Every model maps a float batch to logits [B, C] (except bad_output.pt).

Models (TorchScript, torch.jit.script + save):
  linear_rf.pt   x[B,8] -> tanh(x @ R) (R: buffer [8,32]) -> Linear(32,3)
  mlp.pt         x[B,8] -> Linear(8,16) -> tanh -> Linear(16,3)
  cnn_small.pt   x[B,1,8,8] -> Conv2d(1,4,3) -> ReLU -> flatten -> Linear(144,4)
  bad_output.pt  x[B,8] -> [B,3,1] (wrong rank)
  analytic.pt    x[B,8] -> tanh(x @ W1^T) @ W2^T, W1 [5,8], W2 [3,5], no bias;
                 weights also in analytic_weights.txt
Data (torch.save of {"x": ..., "y": ...}, zip serialization):
  vec_train.pt   x [64,8] N(0,1), y long [64] in 0..2 (argmax of a teacher)
  vec_mse.pt     same x, y float [64,3] regression targets
  img_train.pt   x [48,1,8,8], y long [48] in 0..3
  bad_labels.pt  vec_train with y[3] = 7
  nan_data.pt    vec_train with x[5,2] = NaN
  not_a_dict.pt  torch.zeros(3)
  missing_y.pt   {"x": ...} only (pickled with SETITEMS so LibTorch reads it)
  missing_y_setitem.pt  the same, as plain torch.save writes it; LibTorch
                 1.13's torch::pickle_load throws "Unknown opcode" on it
IDX:
  tiny-images-idx3-ubyte(.gz)  20 x 8 x 8 uint8
  tiny-labels-idx1-ubyte(.gz)  20 labels in 0..3
"""

import gzip
import io
import os
import pickle
import struct
import sys

# TorchScript serialization writes class constants in set-iteration order,
# which depends on Python's string hash seed: pin it so that the saved
# archives are byte-identical from run to run.
if os.environ.get("PYTHONHASHSEED") != "0":
    os.environ["PYTHONHASHSEED"] = "0"
    os.execv(sys.executable, [sys.executable] + sys.argv)

import torch
import torch.nn as nn

SEED = 1234


class LinearRF(nn.Module):
    """Random-feature model, linear in its parameters: tanh(x @ R) @ W^T + b."""

    def __init__(self):
        super().__init__()
        self.register_buffer("R", torch.randn(8, 32) / 8 ** 0.5)
        self.fc = nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.tanh(torch.matmul(x, self.R)))


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.fc1(x)))


class CNNSmall(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(torch.relu(self.conv(x)), 1))


class CNNBN(nn.Module):
    """CNNSmall with a BatchNorm after the convolution (model.batchnorm: eval | train)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4 * 6 * 6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(torch.relu(self.bn(self.conv(x))), 1))


class BadOutput(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x).unsqueeze(-1)  # [B,3,1]


class Analytic(nn.Module):
    """f(x) = W2 tanh(W1 x); batched: tanh(x @ W1^T) @ W2^T."""

    def __init__(self):
        super().__init__()
        self.l1 = nn.Linear(8, 5, bias=False)
        self.l2 = nn.Linear(5, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l2(torch.tanh(self.l1(x)))


def save_model(module, out, name, example):
    module.eval()
    scripted = torch.jit.script(module)
    path = os.path.join(out, name)
    scripted.save(path)
    return path, example


class _SetitemsPickler(pickle._Pickler):
    """Pure-Python pickler that writes every dict with MARK ... SETITEMS.

    CPython pickles a dict with exactly one item with the SETITEM opcode
    ('s'), which LibTorch 1.13's unpickler rejects ("Unknown opcode for
    unpickling at 0x73"); dicts with 0 or >= 2 items use SETITEMS ('u'),
    which it reads."""

    def _batch_setitems(self, items):
        items = list(items)
        if not items:
            return
        self.write(pickle.MARK)
        for k, v in items:
            self.save(k)
            self.save(v)
        self.write(pickle.SETITEMS)


class _SetitemsPickleModule:
    Pickler = _SetitemsPickler
    Unpickler = pickle.Unpickler


def save_data(obj, out, name, one_item_safe=False):
    path = os.path.join(out, name)
    # Zip-file serialization (the default since 1.6) is what LibTorch's
    # torch::pickle_load() reads; the legacy format is not readable there.
    if one_item_safe:
        torch.save(obj, path, pickle_module=_SetitemsPickleModule,
                   _use_new_zipfile_serialization=True)
    else:
        torch.save(obj, path, _use_new_zipfile_serialization=True)
    return path


def write_idx(path, arr_u8, dims, magic):
    header = struct.pack(">I", magic) + struct.pack(">" + "I" * len(dims), *dims)
    payload = header + bytes(arr_u8.flatten().tolist())
    with open(path, "wb") as f:
        f.write(payload)
    buf = io.BytesIO()
    # mtime=0 and no file name: byte-identical output on every run.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0) as g:
        g.write(payload)
    with open(path + ".gz", "wb") as f:
        f.write(buf.getvalue())


def fmt_row(row):
    return " ".join("%.9g" % v for v in row.tolist())


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: %s OUTDIR\n" % argv[0])
        return 2
    out = argv[1]
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    # ---- models -------------------------------------------------------
    models = []
    torch.manual_seed(SEED + 1)
    models.append(save_model(LinearRF(), out, "linear_rf.pt", torch.randn(4, 8)))
    torch.manual_seed(SEED + 2)
    models.append(save_model(MLP(), out, "mlp.pt", torch.randn(4, 8)))
    torch.manual_seed(SEED + 3)
    models.append(save_model(CNNSmall(), out, "cnn_small.pt",
                             torch.randn(4, 1, 8, 8)))
    torch.manual_seed(SEED + 4)
    models.append(save_model(BadOutput(), out, "bad_output.pt", torch.randn(4, 8)))
    torch.manual_seed(SEED + 6)
    bn = CNNBN()
    with torch.no_grad():  # running statistics of another data set ("pre-training")
        bn.bn.running_mean.fill_(0.5)
        bn.bn.running_var.fill_(2.0)
    models.append(save_model(bn, out, "cnn_bn.pt", torch.randn(4, 1, 8, 8)))
    torch.manual_seed(SEED + 5)
    analytic = Analytic()
    models.append(save_model(analytic, out, "analytic.pt", torch.randn(4, 8)))
    W1 = analytic.l1.weight.detach()  # [5,8]
    W2 = analytic.l2.weight.detach()  # [3,5]
    with open(os.path.join(out, "analytic_weights.txt"), "w") as f:
        f.write("W1 %d %d\n" % tuple(W1.shape))
        for r in W1:
            f.write(fmt_row(r) + "\n")
        f.write("W2 %d %d\n" % tuple(W2.shape))
        for r in W2:
            f.write(fmt_row(r) + "\n")

    # ---- data ---------------------------------------------------------
    g = torch.Generator().manual_seed(SEED + 10)
    x = torch.randn(64, 8, generator=g)
    teacher = torch.randn(8, 3, generator=g)
    y = torch.argmax(x @ teacher, dim=1)
    y_mse = x @ teacher + 0.1 * torch.randn(64, 3, generator=g)
    xi = torch.randn(48, 1, 8, 8, generator=g)
    teacher_i = torch.randn(64, 4, generator=g)
    yi = torch.argmax(xi.reshape(48, 64) @ teacher_i, dim=1)

    data = {}
    data["vec_train.pt"] = {"x": x.clone(), "y": y.clone()}
    data["vec_mse.pt"] = {"x": x.clone(), "y": y_mse.clone()}
    data["img_train.pt"] = {"x": xi.clone(), "y": yi.clone()}
    yb = y.clone()
    yb[3] = 7
    data["bad_labels.pt"] = {"x": x.clone(), "y": yb}
    xn = x.clone()
    xn[5, 2] = float("nan")
    data["nan_data.pt"] = {"x": xn, "y": y.clone()}
    data["missing_y.pt"] = {"x": x.clone()}
    for name, obj in data.items():
        # A one-key dict needs SETITEMS to be readable by LibTorch 1.13.
        save_data(obj, out, name, one_item_safe=(len(obj) == 1))
    save_data(torch.zeros(3), out, "not_a_dict.pt")
    # The same one-key dict as plain torch.save writes it (SETITEM opcode):
    # Python reads it, LibTorch 1.13's torch::pickle_load throws on it.
    save_data({"x": x.clone()}, out, "missing_y_setitem.pt")

    # ---- IDX ----------------------------------------------------------
    imgs = torch.randint(0, 256, (20, 8, 8), generator=g, dtype=torch.int64)
    labels = torch.arange(20) % 4
    write_idx(os.path.join(out, "tiny-images-idx3-ubyte"), imgs, (20, 8, 8),
              0x00000803)
    write_idx(os.path.join(out, "tiny-labels-idx1-ubyte"), labels, (20,),
              0x00000801)

    # ---- verify -------------------------------------------------------
    expect = {"linear_rf.pt": (4, 3), "mlp.pt": (4, 3), "cnn_small.pt": (4, 4), "cnn_bn.pt": (4, 4),
              "bad_output.pt": (4, 3, 1), "analytic.pt": (4, 3)}
    for path, example in models:
        m = torch.jit.load(path)
        with torch.no_grad():
            o = m(example)
        want = expect[os.path.basename(path)]
        assert tuple(o.shape) == want, (path, o.shape, want)
    buffers = dict(torch.jit.load(os.path.join(out, "linear_rf.pt")).named_buffers())
    params = dict(torch.jit.load(os.path.join(out, "linear_rf.pt")).named_parameters())
    assert "R" in buffers and "R" not in params, (buffers.keys(), params.keys())
    with torch.no_grad():
        xe = torch.randn(4, 8, generator=g)
        ref = torch.tanh(xe @ W1.t()) @ W2.t()
        got = torch.jit.load(os.path.join(out, "analytic.pt"))(xe)
        assert torch.allclose(ref, got, atol=1e-6)
    for name, obj in data.items():
        d = torch.load(os.path.join(out, name))
        assert isinstance(d, dict) and d.keys() == obj.keys(), name
        for k in obj:
            assert torch.equal(d[k].nan_to_num(), obj[k].nan_to_num()), (name, k)
    assert not isinstance(torch.load(os.path.join(out, "not_a_dict.pt")), dict)
    assert list(torch.load(os.path.join(out, "missing_y_setitem.pt"))) == ["x"]
    assert int(data["vec_train.pt"]["y"].max()) <= 2
    assert int(data["img_train.pt"]["y"].max()) <= 3
    with gzip.open(os.path.join(out, "tiny-images-idx3-ubyte.gz"), "rb") as f:
        gz = f.read()
    with open(os.path.join(out, "tiny-images-idx3-ubyte"), "rb") as f:
        assert f.read() == gz
    print("make_test_models: wrote %d models, %d data files, IDX files to %s"
          % (len(models), len(data) + 2, out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
