#!/usr/bin/python3
"""ttpred export: from a PyTorch training script to a ttpred job, with the user's own torch.

In the training script, once the model, the data and the optimizer exist:

    import ttpred_export
    ttpred_export.export(model, loader, optimizer, "ttpred-job", epochs=3)

writes ttpred-job/model.pt (TorchScript: torch.jit.script, else torch.jit.trace, in eval mode),
ttpred-job/data.pt (a sample of the data as torch.save((x, y)), which ttpred reads) and
ttpred-job/spec.yaml (lr, momentum, weight_decay from the optimizer, batch_size from the
DataLoader, data.size = the dataset's length), then

    ttpred-estimate --spec ttpred-job/spec.yaml      # or: sbatch --ttpred=ttpred-job/spec.yaml ...

From the command line, a torch.save'd Dataset (e.g. a TensorDataset, which C++ cannot read)
becomes a file ttpred reads:

    ttpred-export data IN.pt OUT.pt [--samples N]

See docs/user-guide.md ("From a training script").
"""
import argparse
import copy
import math
import os
import sys
import warnings

__all__ = ["export", "sample_dataset"]


def _torch():
    import torch  # the user's own torch, imported late so that --help works without it

    return torch


def sample_dataset(dataset, samples=2000, seed=0):
    """(x, y) tensors of up to `samples` items of `dataset` (a Dataset, a DataLoader's dataset),
    drawn uniformly at random (seeded; ttpred then draws stratified by class among them).
    Items are (input, target) pairs after the dataset's own transforms."""
    torch = _torch()
    n = len(dataset)
    # All of it in its own order, or a seeded uniform sample.
    idx = torch.arange(n) if samples >= n else torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:samples]
    if isinstance(dataset, torch.utils.data.TensorDataset) and len(dataset.tensors) == 2:
        x_all, y_all = dataset.tensors
        return x_all[idx].contiguous(), y_all[idx].contiguous()
    idx = idx.tolist()
    xs, ys = [], []
    for i in idx:
        item = dataset[i]
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise ValueError("ttpred export: dataset items must be (input, target) pairs, got %r" % type(item))
        x, y = item[0], item[1]
        xs.append(x if torch.is_tensor(x) else torch.as_tensor(x))
        ys.append(y if torch.is_tensor(y) else torch.as_tensor(y))
    x = torch.stack(xs)
    y = torch.stack(ys)
    return x, y


def _save_data(x, y, path):
    torch = _torch()
    if not (x.is_floating_point() or x.dtype == torch.uint8):
        x = x.float()
    if x.is_floating_point() and x.dtype != torch.float32:
        x = x.float()
    if not y.is_floating_point():
        y = y.long().reshape(-1)
    else:
        y = y.float()
        if y.dim() == 1:
            y = y.unsqueeze(1)
    torch.save((x.cpu().contiguous(), y.cpu().contiguous()), path)
    return x, y


def _torchscript(model, example):
    torch = _torch()
    was_training = model.training
    model.eval()
    try:
        try:
            return torch.jit.script(model), "script"
        except Exception as e:  # noqa: BLE001 - any scripting failure falls back to tracing
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            with torch.no_grad():
                traced = torch.jit.trace(model, (example,), check_trace=False)
            return traced, "trace (torch.jit.script failed: %s)" % reason
    finally:
        model.train(was_training)


def _optimizer_values(optimizer):
    if optimizer is None:
        return {}, None
    g = optimizer.param_groups[0]
    name = type(optimizer).__name__
    keys = {"lr": float(g["lr"]), "weight_decay": float(g.get("weight_decay", 0.0))}
    if name == "SGD":
        keys["momentum"] = float(g.get("momentum", 0.0))
        if g.get("nesterov"):
            keys["nesterov"] = True
        return keys, None
    # Adam/AdamW: optimizer.name, betas, eps (docs/spec.md).
    keys["name"] = name.lower()
    if "betas" in g:
        keys["betas"] = [float(b) for b in g["betas"]]
    if "eps" in g:
        keys["eps"] = float(g["eps"])
    if name not in ("Adam", "AdamW"):
        raise ValueError("ttpred export: optimizer %s: ttpred models SGD, Adam and AdamW" % name)
    return keys, None


def _replay(scheduler, optimizer, horizon, interval, steps_per_epoch):
    """Group 0's learning rate at steps 0 .. horizon-1, from stepping the user's scheduler
    (once per optimizer step, or once per epoch), then putting it and the optimizer back."""
    torch = _torch()
    # A deep copy of the state, but not of the objects it refers to (OneCycleLR keeps a bound
    # method, whose plain deep copy would copy the scheduler, its optimizer and the model).
    keep = [scheduler, optimizer] + list(getattr(scheduler, "_schedulers", []))
    keep += [p for g in optimizer.param_groups for p in g["params"]]
    saved_sched = copy.deepcopy(scheduler.state_dict(), memo={id(o): o for o in keep})
    saved_groups = [{k: copy.deepcopy(v) for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    lrs, moved = [], set()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # "lr_scheduler.step() before optimizer.step()"
            for t in range(horizon):
                g = optimizer.param_groups[0]
                lrs.append(float(g["lr"]))
                for k in ("momentum", "betas"):
                    if k in g and g[k] != saved_groups[0].get(k):
                        moved.add(k)
                if interval == "step" or (t + 1) % steps_per_epoch == 0:
                    try:
                        scheduler.step()
                    except ValueError:  # OneCycleLR past its total_steps
                        lrs += [lrs[-1]] * (horizon - len(lrs))
                        break
    finally:
        scheduler.load_state_dict(saved_sched)
        for g, v in zip(optimizer.param_groups, saved_groups):
            g.update(v)
    return lrs, sorted(moved)


def _close(a, b):
    return all(abs(x - y) <= 1e-7 * max(abs(x), abs(y), 1e-12) for x, y in zip(a, b))


def _schedule_values(scheduler, optimizer, horizon, interval, steps_per_epoch):
    """optimizer.schedule for the spec (a dict) from a torch.optim.lr_scheduler, and a note or None.
    StepLR and CosineAnnealingLR over the horizon are written by name; any other scheduler as a
    table of factors lr_t / lr, from replaying it; the written schedule is checked against the replay."""
    if scheduler is None:
        return None, None
    name = type(scheduler).__name__
    if name == "ReduceLROnPlateau":
        raise ValueError("ttpred export: ReduceLROnPlateau follows the validation loss, which ttpred does not "
                         "predict; give a fixed schedule (e.g. StepLR) or none")
    if interval not in ("step", "epoch"):
        raise ValueError("ttpred export: scheduler_interval must be 'step' or 'epoch' (got %r)" % (interval,))
    if not hasattr(scheduler, "step") or not hasattr(scheduler, "state_dict"):
        raise ValueError("ttpred export: scheduler %s is not a torch.optim.lr_scheduler" % name)
    lrs, moved = _replay(scheduler, optimizer, horizon, interval, steps_per_epoch)
    base = float(optimizer.param_groups[0].get("initial_lr", optimizer.param_groups[0]["lr"]))
    if not base > 0:
        raise ValueError("ttpred export: the optimizer's initial lr is %r; ttpred needs lr > 0" % base)
    note = None
    if moved:
        note = "%s also changes %s; ttpred keeps %s at its value at step 0" % (name, ", ".join(moved), ", ".join(moved))
    per = 1 if interval == "step" else steps_per_epoch
    candidates = []
    if name == "StepLR":
        k, gamma = scheduler.step_size * per, float(scheduler.gamma)
        candidates.append(({"type": "step", "step_size": k, "gamma": gamma},
                           [base * gamma ** (t // k) for t in range(horizon)]))
    if name == "CosineAnnealingLR" and scheduler.T_max * per == horizon and interval == "step":
        m = float(scheduler.eta_min)
        candidates.append(({"type": "cosine", "min_lr": m},
                           [m + (base - m) * (1 + math.cos(math.pi * t / horizon)) / 2 for t in range(horizon)]))
    candidates.append(({"type": "constant"}, [base] * horizon))
    for sched, want in candidates:
        if _close(lrs, want):
            return (None if sched["type"] == "constant" else sched), note
    factors = [x / base for x in lrs]
    while len(factors) > 1 and factors[-1] == factors[-2]:
        factors.pop()  # the last factor holds past the table's end
    return {"type": "table", "factors": [float("%.7g" % f) for f in factors]}, note


def _yaml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_yaml_value(e) for e in v) + "]"
    if isinstance(v, float):
        return repr(v)
    return str(v)


def export(model, data, optimizer=None, out="ttpred-job", epochs=None, steps=None, batch_size=None,
           samples=2000, loss=None, seed=0, example=None, scheduler=None, scheduler_interval="step",
           clip_grad_norm=None):
    """Write OUT/model.pt, OUT/data.pt and OUT/spec.yaml for ttpred; returns the spec's path.

    model: the nn.Module being fine-tuned (its current weights are the pre-trained w0).
    data: a DataLoader (its batch_size and dataset are used) or a Dataset.
    optimizer: a torch.optim optimizer (lr, momentum, weight_decay; betas/eps if Adam/AdamW).
    epochs or steps: the training horizon (default: 1 epoch).
    samples: at most this many items are saved (data.size is still the dataset's length).
    loss: "cross_entropy" or "mse" (default: cross_entropy for integer targets, else mse).
    scheduler: a torch.optim.lr_scheduler of `optimizer`, stepped once per optimizer step
        (scheduler_interval="step") or once per epoch ("epoch"). It is replayed over the horizon
        and put back as it was; StepLR and CosineAnnealingLR(T_max = horizon) are written by name,
        any other as optimizer.schedule {type: table, factors: [...]}. ReduceLROnPlateau is refused.
    clip_grad_norm: the max_norm the training loop passes to torch.nn.utils.clip_grad_norm_
        (2-norm over all parameters) before optimizer.step(), if it clips.
    """
    torch = _torch()
    dataset = getattr(data, "dataset", data)
    if batch_size is None:
        batch_size = getattr(data, "batch_size", None)
    if batch_size is None:
        raise ValueError("ttpred export: give batch_size= (data is not a DataLoader with a batch_size)")
    if getattr(data, "drop_last", True) is False:
        sys.stderr.write("ttpred export: note: ttpred counts floor(N / batch_size) steps per epoch "
                         "(drop_last=True); this DataLoader keeps the last partial batch\n")
    if epochs is not None and steps is not None:
        raise ValueError("ttpred export: give epochs or steps, not both")
    n = len(dataset)
    steps_per_epoch = n // int(batch_size)
    if steps_per_epoch < 1:
        raise ValueError("ttpred export: batch_size %d is larger than the dataset (%d items)" % (batch_size, n))
    horizon = int(steps) if steps is not None else int(math.ceil(float(epochs or 1) * steps_per_epoch - 1e-9))
    if scheduler is not None and optimizer is None:
        raise ValueError("ttpred export: a scheduler needs its optimizer")
    if clip_grad_norm is not None:
        try:
            clip_grad_norm = float(clip_grad_norm)
        except (TypeError, ValueError):
            clip_grad_norm = float("nan")
        if not (clip_grad_norm > 0 and math.isfinite(clip_grad_norm)):
            raise ValueError("ttpred export: clip_grad_norm must be a number > 0 (the max_norm of "
                             "torch.nn.utils.clip_grad_norm_)")
    schedule, sched_note = _schedule_values(scheduler, optimizer, horizon, scheduler_interval, steps_per_epoch)
    os.makedirs(out, exist_ok=True)
    x, y = sample_dataset(dataset, samples, seed)
    x, y = _save_data(x, y, os.path.join(out, "data.pt"))
    if loss is None:
        loss = "mse" if y.is_floating_point() else "cross_entropy"
    device = next(model.parameters()).device
    ex = example if example is not None else x[: min(2, x.shape[0])].to(device)
    if ex.dtype == torch.uint8:
        ex = ex.float() / 255
    scripted, how = _torchscript(model, ex)
    scripted.save(os.path.join(out, "model.pt"))
    opt, note = _optimizer_values(optimizer)
    if optimizer is None:
        sys.stderr.write("ttpred export: note: no optimizer given; lr 0.01 written, edit the spec\n")
        opt = {"lr": 0.01, "momentum": 0.0, "weight_decay": 0.0}
    opt["batch_size"] = int(batch_size)
    if clip_grad_norm is not None:
        opt["clip_grad_norm"] = clip_grad_norm
    if schedule is not None:
        opt["lr"] = float(optimizer.param_groups[0].get("initial_lr", opt["lr"]))  # the schedule's base rate
    lines = [
        "# Written by ttpred export (%s); model by torch.jit.%s" % (os.path.basename(__file__), how),
        "model: model.pt",
        "data:",
        "  path: data.pt           # %d of the dataset's %d samples" % (x.shape[0], n),
        "  size: %d" % n,
        "loss: %s" % loss,
        "optimizer:",
    ]
    lines += ["  %s: %s" % (k, _yaml_value(v)) for k, v in opt.items()]
    if schedule is not None:
        lines += ["  schedule: {%s}  # from %s, stepped every %s" % (
            ", ".join("%s: %s" % (k, _yaml_value(v)) for k, v in schedule.items()), type(scheduler).__name__,
            scheduler_interval)]
    lines += ["training:"]
    lines += ["  steps: %d" % int(steps)] if steps is not None else ["  epochs: %s" % _yaml_value(float(epochs or 1))]
    lines += ["engine:", "  seed: %d" % int(seed), ""]
    spec = os.path.join(out, "spec.yaml")
    with open(spec, "w") as f:
        f.write("\n".join(lines))
    for n_ in (note, sched_note):
        if n_:
            sys.stderr.write("ttpred export: note: %s\n" % n_)
    return spec


def _main(argv):
    p = argparse.ArgumentParser(prog="ttpred-export", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("data", help="convert a torch.save'd Dataset (e.g. TensorDataset) to (x, y) tensors")
    d.add_argument("input")
    d.add_argument("output")
    d.add_argument("--samples", type=int, default=0, help="at most this many items (default: all)")
    d.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    torch = _torch()
    try:
        try:  # the user's own file: a pickled Dataset needs the full unpickler (torch >= 2.6 defaults to weights_only)
            obj = torch.load(a.input, map_location="cpu", weights_only=False)
        except TypeError:  # a torch without the weights_only argument
            obj = torch.load(a.input, map_location="cpu")
    except Exception as e:  # noqa: BLE001
        sys.stderr.write("ttpred-export: error: %s: cannot torch.load: %s\n" % (a.input, str(e).splitlines()[0]))
        return 4
    if isinstance(obj, (tuple, list)) and len(obj) == 2 and all(torch.is_tensor(t) for t in obj):
        x, y = obj
    elif isinstance(obj, dict) and ("x" in obj or "data" in obj):
        x, y = obj.get("x", obj.get("data")), obj.get("y", obj.get("targets"))
        x, y = torch.as_tensor(x), torch.as_tensor(y)
    elif hasattr(obj, "__getitem__") and hasattr(obj, "__len__"):
        x, y = sample_dataset(obj, a.samples or len(obj), a.seed)
    else:
        sys.stderr.write("ttpred-export: error: %s: expected a Dataset, a tuple (x, y) or a dict, got %s\n"
                         % (a.input, type(obj).__name__))
        return 5
    _save_data(x, y, a.output)
    sys.stderr.write("ttpred-export: %s: x %s, y %s\n" % (a.output, list(x.shape), list(y.shape)))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
