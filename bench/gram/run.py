#!/usr/bin/python3
"""Gram benchmark (docs/performance.md): Jacobian + Θ seconds of ttpred's engines
(loop = the reference per-sample loop, fast = direct writes + worker threads,
vmap = C backward passes batched, trace:K = trace-NTK) against the PyTorch peer
(functorch vmap(jacrev) + einsum on the same eager model, weights and inputs)
and one epoch of real fine-tuning, all in one run on the same machine.

  /usr/bin/python3 bench/gram/run.py --bench BUILD/bench/gram/bench_gram [--out DIR]
        [--smoke] [--with-224]

Writes DIR/results.json and prints a table. --smoke: one tiny case (< 1 min).
"""
import argparse
import gzip
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
FMNIST = "/usr/share/datasets/fashion-mnist/train-%s-idx%d-ubyte.gz"


class DefaultCNN(nn.Module):
    """Eager twin of assets/default/model.pt (scripts/make_default.py)."""

    def __init__(self, classes=5):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3)
        self.conv2 = nn.Conv2d(16, 32, 3)
        self.fc1 = nn.Linear(800, 64)
        self.fc2 = nn.Linear(64, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


class MLP(nn.Module):
    def __init__(self, classes):
        super().__init__()
        self.fc1 = nn.Linear(784, 128)
        self.fc2 = nn.Linear(128, classes)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(torch.flatten(x, 1))))


def fashion(n, classes=None):
    with gzip.open(FMNIST % ("images", 3)) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    with gzip.open(FMNIST % ("labels", 1)) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
    if classes:
        keep = np.isin(y, classes)
        x, y = x[keep], y[keep] - min(classes)
    x = (torch.from_numpy(x[:n].astype(np.float32)) / 255.0 - 0.2860) / 0.3530
    return x, torch.from_numpy(y[:n].copy())


def zoo(args):
    """(name, eager module, x, y): the scripted twin is saved for bench_gram."""
    torch.manual_seed(0)
    nmax = 2000
    cases = []
    cnn = DefaultCNN()
    cnn.load_state_dict(torch.jit.load(os.path.join(ROOT, "assets/default/model.pt")).state_dict())
    x, y = fashion(nmax, [5, 6, 7, 8, 9])
    cases.append(("default_cnn_C5", cnn, x, y))
    if args.smoke:
        return cases
    xf, yf = fashion(nmax)
    for C in (10, 100):
        cases.append(("mlp_C%d" % C, MLP(C), xf, yf % C))
    import torchvision
    g = torch.Generator().manual_seed(1)
    r = torchvision.models.resnet18(num_classes=10)
    cases.append(("resnet18_32_C10", r, torch.randn(100, 3, 32, 32, generator=g), torch.arange(100) % 10))
    if args.with_224:
        cases.append(("resnet18_224_C10", torchvision.models.resnet18(num_classes=10),
                      torch.randn(4, 3, 224, 224, generator=g), torch.arange(4) % 10))
    return cases


# N0 per case, and where the peer (exact J, in memory) is capped: J ≤ PEER_J_BYTES.
PLAN = {
    "default_cnn_C5": [100, 500, 2000],
    "mlp_C10": [100, 500, 2000],
    "mlp_C100": [100],               # 500 capped: Θ alone is (50000)² doubles = 20 GB
    "resnet18_32_C10": [2, 100],     # 500, 2000 capped: ~0.1-0.3 s per sample and engine
    "resnet18_224_C10": [2],
}
PEER_J_BYTES = 1.2e9


def peer_ntk(model, x, threads):
    """The functorch NTK (pytorch.org/functorch/stable/notebooks/neural_tangent_kernels):
    vmap(jacrev) per-sample Jacobians, Θ by einsum over parameters."""
    from functorch import jacrev, make_functional_with_buffers, vmap
    torch.set_num_threads(threads)
    model.eval()
    fnet, params, buffers = make_functional_with_buffers(model)

    def f1(p, xi):
        return fnet(p, buffers, xi.unsqueeze(0)).squeeze(0)

    t0 = time.perf_counter()
    jacs = []
    for s in range(0, x.shape[0], 64):
        j = vmap(jacrev(f1), (None, 0))(params, x[s:s + 64])
        jacs.append([t.flatten(2) for t in j])
    jac = [torch.cat([c[k] for c in jacs]) for k in range(len(params))]
    t1 = time.perf_counter()
    theta = sum(torch.einsum("Naf,Mbf->NaMb", j, j) for j in jac)
    t2 = time.perf_counter()
    n, C = theta.shape[0], theta.shape[1]
    return {"seconds_jacobian": t1 - t0, "seconds_gram": t2 - t1, "seconds_total": t2 - t0,
            "samples_per_second": n / (t2 - t0), "theta_trace": float(theta.reshape(n * C, n * C).trace()),
            "threads": threads}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench")
    ap.add_argument("--out", default=os.path.join(HERE, "out"))
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--with-224", action="store_true")
    ap.add_argument("--epoch", type=int, default=30000, help="samples in the timed fine-tuning epoch")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--cases", help="comma-separated subset of the zoo")
    ap.add_argument("--n0", type=int, nargs="+", help="N0 values instead of the plan's")
    ap.add_argument("--methods", help="comma-separated engines instead of loop,fast,vmap,trace:1")
    ap.add_argument("--resnet-epoch", type=int, default=3200,
                    help="samples in the timed ResNet fine-tuning epoch (batch 32)")
    ap.add_argument("--peer-bytes", type=float, default=PEER_J_BYTES,
                    help="run the peer (and ttpred exact) where its J fits in this many bytes")
    ap.add_argument("--table", nargs="+", metavar="RESULTS_JSON", help="only print the table of earlier runs")
    args = ap.parse_args()
    if args.table:
        rs = []
        for t in args.table:
            with open(t) as f:
                rs += json.load(f)
        table(rs)
        return 0
    os.makedirs(args.out, exist_ok=True)
    results = []
    for name, model, x, y in zoo(args):
        if args.cases and name not in args.cases.split(","):
            continue
        model.eval()
        scripted = torch.jit.script(model)
        mpath = os.path.join(args.out, name + ".pt")
        scripted.save(mpath)
        with torch.no_grad():  # the twin computes what the C++ side loads
            assert torch.allclose(model(x[:4]), torch.jit.load(mpath)(x[:4]), atol=1e-5)
        ns = [20] if args.smoke else (args.n0 or PLAN[name])
        for i, n in enumerate(ns):
            dpath = os.path.join(args.out, "%s_%d.pt" % (name, n))
            xs = x[torch.arange(n) % x.shape[0]].contiguous()
            torch.save({"x": xs, "y": y[torch.arange(n) % y.shape[0]].contiguous()}, dpath)
            C = model(x[:1]).shape[1]
            D = sum(p.numel() for p in model.parameters())
            # ttpred's own choice (projection auto: exact while 2(N0·C)²·D <= 2e11,
            # else CountSketch D0 = 8192); the peer is exact, so where it runs
            # (J <= PEER_J_BYTES) ttpred's fast engine also runs exact.
            peer = 4.0 * n * C * D <= args.peer_bytes
            methods = ["loop", "fast", "vmap", "trace:1"] if not args.smoke else ["loop", "fast", "vmap", "trace:2"]
            if args.methods:
                methods = args.methods.split(",")
            if peer and not args.smoke:
                methods += ["fast@exact", "trace:1@exact"]
            cmd = [args.bench, "--model", mpath, "--data", dpath, "--n", str(n), "--methods", ",".join(methods),
                   "--projection", "auto", "--threads", str(args.threads), "--json", dpath + ".json"]
            # One epoch of real fine-tuning, once per model (first N0), batch 32.
            if i == 0 and not args.smoke and name.startswith(("default", "mlp")):
                cmd += ["--epoch", str(args.epoch)]
            elif i == 0:
                cmd += ["--epoch", "320" if args.smoke else str(args.resnet_epoch)]
            sys.stderr.write(" ".join(cmd) + "\n")
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            with open(dpath + ".json") as f:
                r = json.load(f)
            r["case"] = name
            r["classes"] = C
            if peer:
                r["peer"] = peer_ntk(model, xs, args.threads)
            results.append(r)
            with open(os.path.join(args.out, "results.json"), "w") as f:
                json.dump(results, f, indent=2)
    table(results)
    return 0


def table(results):
    hdr = "%-18s %5s %4s %-11s %-8s %8s %8s %9s %8s %9s" % (
        "case", "N0", "C", "projection", "method", "jac s", "gram s", "samples/s", "vs loop", "rel.diff")
    print(hdr)
    print("-" * len(hdr))
    for r in results:
        loop = next((x for x in r["runs"] if x["method"] == "loop"), None)
        for x in r["runs"]:
            print("%-18s %5d %4d %-11s %-8s %8.3f %8.3f %9.1f %7.1fx %9s" % (
                r["case"], r["n"], r["classes"], x["projection"], x["method"], x["seconds_jacobian"],
                x["seconds_gram"], x["samples_per_second"],
                loop["seconds_total"] / x["seconds_total"] if loop else float("nan"),
                "%.1e" % x["rel_diff_max"] if "rel_diff_max" in x else "-"))
        p = r.get("peer")
        if p:
            ex = [x for x in r["runs"] if x["projection"] == "exact" and not x["method"].startswith("trace")]
            best = min(ex or r["runs"], key=lambda x: x["seconds_total"])
            auto = min((x for x in r["runs"] if x["method"] in ("fast", "vmap")), key=lambda x: x["seconds_total"])
            print("%-18s %5d %4d %-11s %-8s %8.3f %8.3f %9.1f %7.1fx  peer/ttpred: exact %s %.2fx, default %.2fx" % (
                r["case"], r["n"], r["classes"], "exact", "functorch", p["seconds_jacobian"], p["seconds_gram"],
                p["samples_per_second"], loop["seconds_total"] / p["seconds_total"] if loop else float("nan"),
                best["method"], p["seconds_total"] / best["seconds_total"], p["seconds_total"] / auto["seconds_total"]))
        if "epoch_seconds" in r:
            print("%-18s one fine-tuning epoch of %d samples (batch %d): %.2f s" % (
                r["case"], r["epoch_samples"], r["epoch_batch"], r["epoch_seconds"]))


if __name__ == "__main__":
    sys.exit(main())
