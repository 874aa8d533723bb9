#!/usr/bin/env bash
# One row of the small-scale study (docs/results/small_scale.md): pretrain a preset
# with JSON overrides and a seed, probe the checkpoint (and, with PROBE_LAYERS=4, the
# concatenated means of the last 4 layers too), and print its row of the table in
# docs/results/small_scale.md.
#
#   scripts/small-scale.sh NAME SEED '{"npred": 2}' [PRESET]
#
# As in the table, the overrides apply over the official EMA and target masks
# (scripts/fmnist-cpu-official.json: EMA 0.996, targets of 15-20%, min_keep 4), not
# over the tuned values the fmnist-cpu preset now carries, so that every row's keys
# say all it changed.
# The run lives in runs/small-scale/NAME-sSEED (log, metrics, probe output).
set -euo pipefail
cd "$(dirname "$0")/.."
name=$1
seed=$2
overrides=${3:-"{}"}
preset=${4:-fmnist-cpu}
bin=${IJEPA_BIN:-./target/release/ijepa}
out=runs/small-scale/$name-s$seed
rm -rf "$out" "$out.json"
mkdir -p "$(dirname "$out")"
official=$(cat scripts/fmnist-cpu-official.json)
python3 -c 'import json, sys; c = json.loads(sys.argv[1]); c.update(json.loads(sys.argv[2])); c["seed"] = int(sys.argv[3]); print(json.dumps(c))' \
    "$official" "$overrides" "$seed" > "$out.json"
start=$(date +%s)
$bin pretrain --preset "$preset" --config "$out.json" --out "$out" > "$out.log" 2>&1
trained=$(date +%s)
$bin probe "$out/checkpoint.safetensors" > "$out/probe.txt" 2>&1
if [ "${PROBE_LAYERS:-1}" != 1 ]; then
    $bin probe "$out/checkpoint.safetensors" --layers "$PROBE_LAYERS" > "$out/probe-layers.txt" 2>&1
fi
python3 - "$name" "$seed" "$overrides" "$out" "$((trained - start))" <<'PY'
import json, sys
name, seed, overrides, out, secs = sys.argv[1:]
lines = [json.loads(l) for l in open(f"{out}/metrics.jsonl")]
epochs = [l for l in lines if "knn_top1" in l]
steps = [l for l in lines if "context_patches" in l]
def probe(path, label):
    for line in open(path):
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0].startswith(label):
            return cells[1:]
    raise SystemExit(f"{path}: no row {label}")
ijepa = probe(f"{out}/probe.txt", "I-JEPA")
random = probe(f"{out}/probe.txt", "random-init")
vs_random = " / ".join(f"{float(a) - float(b):+.1f}" for a, b in zip(ijepa[:2], random[:2]))
try:
    layers = probe(f"{out}/probe-layers.txt", "I-JEPA")
    last4 = f"{layers[0]} / {layers[1]}"
except FileNotFoundError:
    last4 = ""
knn = ", ".join(f"{e['knn_top1']:.1f}" for e in epochs)
rankme = ", ".join(f"{e['rankme']:.1f}" for e in epochs)
context = sum(l["context_patches"] for l in steps) / len(steps)
print(f"| {name} | `{overrides}` | {seed} | {lines[-1]['step']} | {int(secs) / 60:.1f} "
      f"| {ijepa[0]} / {ijepa[1]} | {vs_random} | {last4} | {ijepa[2]} | {knn} | {rankme} | {context:.1f} |")
PY
