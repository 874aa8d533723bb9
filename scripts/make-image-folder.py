#!/usr/bin/env python3
"""Write an ImageNet-layout folder of synthetic photo-like JPEGs for `ijepa bench data`
and the torchvision comparison: DIR/train/<class>/<n>.jpg (and DIR/val/...), each
WIDTHxHEIGHT, smooth colour fields plus fine noise so that a quality-90 JPEG is about
100 KB like a photo. Usage: make-image-folder.py DIR --images 4000 [--classes 10]."""
import argparse
import os

import numpy as np
from PIL import Image


def main():
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--images", type=int, default=4000, help="training images")
    p.add_argument("--val", type=int, default=0, help="validation images")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--width", type=int, default=500)
    p.add_argument("--height", type=int, default=375)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rng = np.random.default_rng(args.seed)
    h, w = args.height, args.width
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    for split, count in (("train", args.images), ("val", args.val)):
        for k in range(count):
            c = k % args.classes
            d = os.path.join(args.dir, split, f"class_{c:03d}")
            os.makedirs(d, exist_ok=True)
            f = rng.uniform(2, 9, size=(3, 2))
            ph = rng.uniform(0, 6.3, size=(3, 2))
            img = np.stack(
                [
                    128 + 60 * np.sin(f[i, 0] * 6.3 * xx + ph[i, 0]) * np.cos(f[i, 1] * 6.3 * yy + ph[i, 1])
                    for i in range(3)
                ],
                axis=-1,
            )
            img += rng.normal(0, 18, size=img.shape)
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(
                os.path.join(d, f"{k:06d}.jpg"), quality=90
            )


if __name__ == "__main__":
    main()
