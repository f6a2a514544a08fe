#!/usr/bin/python3
"""End to end: ttpred export from a training script's torchvision model, DataLoader and
torch.optim optimizer, the written spec taken by ttpred-estimate; and `ttpred-export data`
on a pickled TensorDataset (which C++ cannot read).

Usage: /usr/bin/python3 tests/python/test_export.py SOURCE_DIR ESTIMATE_BIN   (about 20 s)
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import torch
import torchvision


def check(cond, what):
    if not cond:
        sys.stderr.write("FAILED: %s\n" % what)
        sys.exit(1)
    print("ok: %s" % what)


def main(src, estimate):
    sys.path.insert(0, os.path.join(src, "python"))
    import ttpred_export

    torch.manual_seed(0)
    tmp = tempfile.mkdtemp(prefix="ttpred-export-")
    # A researcher's script: a torchvision model (random init), a DataLoader, SGD.
    model = torchvision.models.squeezenet1_1(num_classes=2)
    x = torch.rand(48, 3, 32, 32)
    y = (x[:, 0].mean(dim=(1, 2)) > x[:, 1].mean(dim=(1, 2))).long()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8, shuffle=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.005, momentum=0.9, weight_decay=1e-4)
    # The three lines.
    spec = ttpred_export.export(model, loader, opt, os.path.join(tmp, "job"), epochs=2)

    text = open(spec).read()
    print(text)
    for want in ["model: model.pt", "path: data.pt", "size: 48", "lr: 0.005", "momentum: 0.9",
                 "weight_decay: 0.0001", "batch_size: 8", "epochs: 2.0", "loss: cross_entropy"]:
        check(want in text, "spec has %r" % want)
    check("name:" not in text, "SGD writes no optimizer.name (valid for every ttpred)")
    m = torch.jit.load(os.path.join(tmp, "job", "model.pt"))
    with torch.no_grad():
        model.eval()
        check(torch.allclose(m(x[:4]), model(x[:4]), atol=1e-5), "the TorchScript model computes the module")
    xs, ys = torch.load(os.path.join(tmp, "job", "data.pt"))
    check(list(xs.shape) == [48, 3, 32, 32] and list(ys.shape) == [48], "data.pt holds (x, y)")

    r = subprocess.run([estimate, "--spec", spec, "--json", "--quiet", "--step-seconds", "0.01", "--runs", "2",
                        "--subset", "16", "--relinearize", "2"], capture_output=True, text=True, timeout=300)
    check(r.returncode == 0, "ttpred-estimate takes the exported spec (rc %d: %s)" % (r.returncode, r.stderr))
    j = json.loads(r.stdout)
    check(j["model"]["classes"] == 2 and j["data"]["size"] == 48 and j["optimizer"]["lr"] == 0.005,
          "the prediction is for the exported job")
    check(j["steps"] >= 0 and j["horizon_steps"] == 12 and len(j["curve"]) > 1,
          "a prediction over the 2-epoch horizon of 12 steps (steps %d)" % j["steps"])

    # Adam: the keys another part of ttpred reads, written only then.
    adam = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.01)
    spec2 = ttpred_export.export(model, loader, adam, os.path.join(tmp, "adam"), steps=10, clip_grad_norm=1.0)
    t2 = open(spec2).read()
    check("name: adamw" in t2 and "betas: [0.9, 0.99]" in t2 and "steps: 10" in t2, "AdamW's keys written")
    check("clip_grad_norm: 1.0" in t2, "the training loop's clip_grad_norm_ max_norm written")
    r = subprocess.run([estimate, "--spec", spec2, "--json", "--quiet", "--step-seconds", "0.01", "--runs", "2",
                        "--subset", "16", "--relinearize", "2"], capture_output=True, text=True, timeout=300)
    j2 = json.loads(r.stdout) if r.returncode == 0 else {}
    check(r.returncode == 0 and j2["optimizer"]["name"] == "adamw" and j2["optimizer"]["clip_grad_norm"] == 1.0,
          "ttpred-estimate takes the exported AdamW spec with clipping (rc %d: %s)" % (r.returncode, r.stderr.strip()))
    for bad in (0, -1, "x"):
        try:
            ttpred_export.export(model, loader, adam, os.path.join(tmp, "bad"), steps=10, clip_grad_norm=bad)
            check(False, "clip_grad_norm=%r is refused" % (bad,))
        except ValueError as e:
            check("clip_grad_norm" in str(e), "clip_grad_norm=%r is refused: %s" % (bad, e))

    # A pickled TensorDataset: ttpred-estimate refuses it and says how to convert; ttpred-export converts it.
    torch.save(torch.utils.data.TensorDataset(x, y), os.path.join(tmp, "ds.pt"))
    with open(spec) as f:
        s3 = f.read().replace("path: data.pt", "path: %s" % os.path.join(tmp, "ds.pt"))
    with open(os.path.join(tmp, "job", "ds.yaml"), "w") as f:
        f.write(s3)
    r = subprocess.run([estimate, "--spec", os.path.join(tmp, "job", "ds.yaml"), "--json"], capture_output=True,
                       text=True, timeout=300)
    check(r.returncode == 4 and "ttpred-export" in r.stderr and "TensorDataset" in r.stderr,
          "a TensorDataset file is refused with the conversion (%s)" % r.stderr.strip())
    r = subprocess.run([sys.executable, os.path.join(src, "python", "ttpred_export.py"), "data",
                        os.path.join(tmp, "ds.pt"), os.path.join(tmp, "job", "data.pt")],
                       capture_output=True, text=True, timeout=120)
    check(r.returncode == 0, "ttpred-export data converts it (%s)" % r.stderr.strip())
    xs2, ys2 = torch.load(os.path.join(tmp, "job", "data.pt"))
    check(torch.equal(xs2, x) and torch.equal(ys2, y), "the converted file holds the dataset's tensors")

    schedulers(ttpred_export, model, loader, tmp, estimate)
    shutil.rmtree(tmp)


def spec_schedule(path):
    """optimizer.lr and optimizer.schedule of a written spec (the line ttpred export writes)."""
    import yaml
    with open(path) as f:
        o = yaml.safe_load(f)["optimizer"]
    return o["lr"], o.get("schedule")


def lr_at(lr, sched, t):
    """ttpred's lr_t for the schedules export writes (docs/spec.md)."""
    import math
    if sched is None:
        return lr
    if sched["type"] == "step":
        return lr * sched["gamma"] ** (t // sched["step_size"])
    if sched["type"] == "table":
        f = sched["factors"]
        return lr * f[min(t, len(f) - 1)]
    raise AssertionError(sched)


def replayed(make, steps, per_epoch=None):
    """The lrs a fresh copy of a scheduler gives over `steps` optimizer steps of real training."""
    import torch
    w = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
    sched = make(opt)
    out = []
    for t in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.zero_grad()
        w.sum().backward()
        opt.step()
        if per_epoch is None or (t + 1) % per_epoch == 0:
            sched.step()
    return out


def schedulers(ttpred_export, model, loader, tmp, estimate):
    """torch.optim.lr_scheduler objects of the training script become optimizer.schedule."""
    import torch
    S = torch.optim.lr_scheduler
    horizon = 12  # 48 samples, batch 8, 2 epochs
    cases = [
        ("cosine", lambda o: S.CosineAnnealingLR(o, T_max=12, eta_min=0.001), "step", "cosine"),
        ("steplr-epoch", lambda o: S.StepLR(o, step_size=1, gamma=0.5), "epoch", "step"),
        ("warmup-cosine", lambda o: S.SequentialLR(o, [S.LinearLR(o, start_factor=0.1, total_iters=3),
                                                       S.CosineAnnealingLR(o, T_max=9)], milestones=[3]),
         "step", "table"),
        ("onecycle", lambda o: S.OneCycleLR(o, max_lr=0.1, total_steps=12), "step", "table"),
        ("lambda", lambda o: S.LambdaLR(o, lambda t: 1.0 / (1 + t)), "step", "table"),
    ]
    for name, make, interval, kind in cases:
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        sched = make(opt)
        before = (opt.param_groups[0]["lr"], copy_state(sched))
        spec = ttpred_export.export(model, loader, opt, os.path.join(tmp, name), epochs=2, scheduler=sched,
                                    scheduler_interval=interval)
        check((opt.param_groups[0]["lr"], copy_state(sched)) == before,
              "%s: the training script's optimizer and scheduler are put back as they were" % name)
        lr, sc = spec_schedule(spec)
        check(sc is not None and sc["type"] == kind, "%s: written as type %s (%s)" % (name, kind, sc))
        want = replayed(make, horizon, None if interval == "step" else 6)
        if kind == "cosine":
            import math
            got = [sc["min_lr"] + (lr - sc["min_lr"]) * (1 + math.cos(math.pi * t / horizon)) / 2
                   for t in range(horizon)]
        else:
            got = [lr_at(lr, sc, t) for t in range(horizon)]
        check(all(abs(a - b) <= 1e-6 * max(a, 1e-9) for a, b in zip(got, want)),
              "%s: the spec's lr at every step is the scheduler's in real training\n  %s\n  %s" % (name, got, want))
    r = subprocess.run([estimate, "--spec", os.path.join(tmp, "warmup-cosine", "spec.yaml"), "--json", "--quiet",
                        "--step-seconds", "0.01", "--runs", "2", "--subset", "16", "--relinearize", "2"],
                       capture_output=True, text=True, timeout=300)
    check(r.returncode == 0, "ttpred-estimate takes the table schedule (rc %d: %s)" % (r.returncode, r.stderr.strip()))
    j = json.loads(r.stdout)
    check(j["schedule"]["type"] == "table" and len(j["schedule"]["factors"]) >= 10,
          "the JSON reports the table (%s)" % j["schedule"])

    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    try:
        ttpred_export.export(model, loader, opt, os.path.join(tmp, "plateau"), epochs=2,
                             scheduler=S.ReduceLROnPlateau(opt))
        check(False, "ReduceLROnPlateau is refused")
    except ValueError as e:
        check("ReduceLROnPlateau" in str(e) and "validation loss" in str(e), "ReduceLROnPlateau is refused: %s" % e)


def copy_state(sched):
    s = sched.state_dict()
    return repr(sorted((k, v) for k, v in s.items() if k not in ("_schedulers",)))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
