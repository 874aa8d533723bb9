#!/usr/bin/env python3
"""Write the test fixtures of `ijepa import`: checkpoints in exactly the layout of the
official I-JEPA code's torch.save (src/train.py: save_checkpoint), made from the weights
of an ijepa checkpoint, so that the tests need no Python.

  tests/data/official/femto.pth.tar      encoder / predictor / target_encoder state
      dicts with DDP's `module.` prefix (OrderedDicts with `_metadata`, as
      state_dict() returns them), an AdamW state dict after one step, a GradScaler
      state, epoch, loss, batch_size, world_size, lr
  tests/data/official/femto.safetensors  the ijepa checkpoint they came from (weights
      alongside: importing the former must give exactly these)
  tests/data/official/mlp3.pth.tar       the same with an MLP ratio of 3 in every block:
      an architecture ijepa does not have

Usage: make-official-fixtures.py IJEPA_CHECKPOINT tests/data/official (needs torch and
safetensors; the checkpoint was a 10-step vit_femto run on 320 Fashion-MNIST images).
"""
import collections
import shutil
import sys

import torch
from safetensors.torch import load_file


def state_dict(tensors, group):
    sd = collections.OrderedDict(
        ("module." + k[len(group) + 1 :], v.clone())
        for k, v in tensors.items()
        if k.startswith(group + ".")
    )
    sd._metadata = collections.OrderedDict([("", {"version": 1})])
    return sd


def save(tensors, path):
    groups = {g: state_dict(tensors, g) for g in ("encoder", "predictor", "target_encoder")}
    params = [torch.nn.Parameter(v.clone()) for v in list(groups["encoder"].values()) + list(groups["predictor"].values())]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.04)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    torch.save(
        {
            "encoder": groups["encoder"],
            "predictor": groups["predictor"],
            "target_encoder": groups["target_encoder"],
            "opt": opt.state_dict(),
            "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000, "_growth_tracker": 0},
            "epoch": 3,
            "loss": 0.0421,
            "batch_size": 16,
            "world_size": 1,
            "lr": 0.001,
        },
        path,
    )


def main():
    source, out = sys.argv[1], sys.argv[2]
    tensors = {k: v for k, v in load_file(source).items() if not k.startswith("optim.")}
    save(tensors, f"{out}/femto.pth.tar")
    shutil.copy(source, f"{out}/femto.safetensors")
    mlp3 = dict(tensors)
    for k, v in tensors.items():
        if ".mlp.fc1." in k:
            mlp3[k] = v[: v.shape[0] * 3 // 4].clone()
        elif ".mlp.fc2.weight" in k:
            mlp3[k] = v[:, : v.shape[1] * 3 // 4].clone()
    save(mlp3, f"{out}/mlp3.pth.tar")


if __name__ == "__main__":
    main()
