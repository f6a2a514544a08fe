#!/usr/bin/python3
"""Write the data files a researcher has, the way their own tools write them,
for test_data and test_cli: numpy.save/savez/savez_compressed, a CSV,
torch.save'd tuples/lists/torchvision-style dicts/TensorDatasets/legacy files,
and an ImageFolder tree of PNG and JPEG files (torchvision.io). Also the
reference values ttpred must reproduce (F.interpolate, per-channel normalize).

Usage: /usr/bin/python3 tests/unit/make_data_files.py OUTDIR   (about 2 s)
"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.io as tio


def main(out):
    os.makedirs(out, exist_ok=True)
    # .npy pair: float32 x [6, 4] = arange, int64 y.
    x = np.arange(24, dtype=np.float32).reshape(6, 4)
    y = np.array([0, 1, 2, 0, 1, 2], dtype=np.int64)
    np.save(os.path.join(out, "x.npy"), x)
    np.save(os.path.join(out, "y.npy"), y)
    np.save(os.path.join(out, "x_fortran.npy"), np.asfortranarray(x.astype(np.float64)))
    np.save(os.path.join(out, "y_int32.npy"), y.astype(np.int32))
    np.save(os.path.join(out, "x_complex.npy"), x.astype(np.complex64))
    np.save(os.path.join(out, "x_bigendian.npy"), x.astype(">f4"))
    with open(os.path.join(out, "x_truncated.npy"), "wb") as f:
        f.write(open(os.path.join(out, "x.npy"), "rb").read()[:-10])
    # uint8 NHWC images [6, 5, 4, 3] (CIFAR's layout), stored and deflated.
    img = (np.arange(6 * 5 * 4 * 3) % 251).astype(np.uint8).reshape(6, 5, 4, 3)
    np.savez(os.path.join(out, "nhwc.npz"), x=img, y=y)
    np.savez_compressed(os.path.join(out, "tv_names.npz"), data=img, targets=y)
    np.savez(os.path.join(out, "no_y.npz"), features=x)
    # What ttpred must compute from nhwc.npz: NCHW in [0, 1], resized to 7x6
    # bilinearly, normalized per channel.
    t = torch.from_numpy(img).permute(0, 3, 1, 2).float() / 255.0
    r = F.interpolate(t, size=(7, 6), mode="bilinear", align_corners=False)
    mean = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)
    std = torch.tensor([0.2, 0.25, 0.5]).view(1, 3, 1, 1)
    np.save(os.path.join(out, "nhwc_expected.npy"), ((r - mean) / std).numpy())

    # Class-sorted sets (the first N would be one class): 90:10 and 95:5.
    for name, n1 in [("sorted.npz", 20), ("skewed.npz", 10)]:
        ys = np.array([0] * (200 - n1) + [1] * n1, dtype=np.int64)
        np.savez(os.path.join(out, name), x=np.arange(400, dtype=np.float32).reshape(200, 2), y=ys)
    # The small job's data (mlp.pt: x [B, 8] -> 3 classes) as .npz and .csv.
    rng = np.random.default_rng(3)
    xv = rng.standard_normal((64, 8)).astype(np.float32)
    yv = np.argmax(xv @ rng.standard_normal((8, 3)), axis=1).astype(np.int64)
    np.savez_compressed(os.path.join(out, "vec.npz"), x=xv, y=yv)
    with open(os.path.join(out, "vec.csv"), "w") as f:
        f.write(",".join("f%d" % i for i in range(8)) + ",label\n")
        for r, l in zip(xv, yv):
            f.write(",".join("%.9g" % v for v in r) + ",%d\n" % l)

    # CSV: 3 features and a label column in the middle, class names.
    with open(os.path.join(out, "iris.csv"), "w") as f:
        f.write("a,b,species,c\n")
        names = ["setosa", "versicolor", "virginica"]
        for i in range(9):
            f.write("%g,%g,%s,%g\n" % (i, i * 0.5, names[i % 3], -i))
    with open(os.path.join(out, "ids.csv"), "w") as f:
        f.write("f1,f2,target\n")
        for i in range(6):
            f.write("%d,%d,%d\n" % (i, 2 * i, i % 2))
    with open(os.path.join(out, "price.csv"), "w") as f:
        f.write("rooms,label\n3,1.5\n4,2.25\n")
    with open(os.path.join(out, "bad.csv"), "w") as f:
        f.write("f1,label\n1,0\nabc,1\n")

    # torch.save: a tuple, a list, a torchvision-style dict of uint8 [N, H, W]
    # (as MNIST's .data/.targets), a TensorDataset, a legacy file.
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    torch.save((xt, yt), os.path.join(out, "tuple.pt"))
    torch.save([xt, yt], os.path.join(out, "list.pt"))
    gray = torch.from_numpy((np.arange(6 * 8 * 8) % 256).astype(np.uint8).reshape(6, 8, 8))
    torch.save({"data": gray, "targets": yt}, os.path.join(out, "mnist_like.pt"))
    torch.save(torch.utils.data.TensorDataset(xt, yt), os.path.join(out, "tensor_dataset.pt"))
    torch.save((xt, yt), os.path.join(out, "legacy.pt"), _use_new_zipfile_serialization=False)
    torch.save((xt.long(), yt), os.path.join(out, "int_x.pt"))

    # ImageFolder: classes "cat" (PNG, 8x8) and "dog" (JPEG, 10x12) and a
    # non-image file that is skipped; RGB.
    g = torch.Generator().manual_seed(7)
    for c, (name, ext, h, w) in enumerate([("cat", "png", 8, 8), ("dog", "jpg", 10, 12)]):
        d = os.path.join(out, "folder", name)
        os.makedirs(d, exist_ok=True)
        for i in range(4):
            im = torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
            if ext == "png":
                tio.write_png(im, os.path.join(d, "%d.png" % i))
                np.save(os.path.join(out, "cat%d.npy" % i), im.numpy())
            else:
                tio.write_jpeg(im, os.path.join(d, "%d.jpg" % i), quality=95)
    with open(os.path.join(out, "folder", "cat", "notes.txt"), "w") as f:
        f.write("not an image\n")
    os.makedirs(os.path.join(out, "empty_folder", "a"), exist_ok=True)
    with open(os.path.join(out, "data.txt"), "w") as f:
        f.write("1 2 3\n")
    os.makedirs(os.path.join(out, "corrupt", "a"), exist_ok=True)
    with open(os.path.join(out, "corrupt", "a", "0.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n garbage")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.stderr.write("usage: %s OUTDIR\n" % sys.argv[0])
        sys.exit(2)
    torch.manual_seed(0)
    main(sys.argv[1])
