#!/usr/bin/env python3
"""torchvision's ImageFolder + DataLoader on a folder, timed as `ijepa bench data`
times ours: RandomResizedCrop(size, scale=(0.3, 1.0)) with PIL's bilinear resize,
ToTensor, Normalize; `--workers` loader processes (default: every core); one batch of
warm-up, then `--batches` batches. Prints images/s and the peak resident memory of the
main process (its worker processes hold about as much each). Usage: bench-torchvision-loader.py DIR [--size 224]."""
import argparse
import os
import resource
import time

import torch
from torchvision import datasets, transforms


def main():
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--workers", type=int, default=os.cpu_count())
    args = p.parse_args()
    torch.set_num_threads(1)
    root = os.path.join(args.dir, "train") if os.path.isdir(os.path.join(args.dir, "train")) else args.dir
    transform = transforms.Compose(
        [
            transforms.RandomResizedCrop(args.size, scale=(0.3, 1.0)),
            transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    data = datasets.ImageFolder(root, transform)
    loader = torch.utils.data.DataLoader(
        data, batch_size=args.batch, shuffle=True, num_workers=args.workers, drop_last=True,
        persistent_workers=args.workers > 0,
    )
    it = iter(loader)
    next(it)
    start = time.perf_counter()
    for _ in range(args.batches):
        next(it)
    secs = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"torchvision: {args.batch * args.batches / secs:.1f} images/s at {args.size}x{args.size} "
        f"on {args.workers} worker process(es) ({os.cpu_count()} cores), batch {args.batch}, "
        f"{args.batches} batches; peak resident memory {peak:.0f} MiB (main process, torch included)"
    )


if __name__ == "__main__":
    main()
