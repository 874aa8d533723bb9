#!/usr/bin/env bash
# The quality check of mixed precision on a lent GPU, in one device call: `fmnist`
# pretraining from seed 0 (then seed 1, where time is left) in f32 and in mixed
# precision with the same build, the two runs of a seed at once (each is bound by
# dispatches, not by the GPU's arithmetic, so their images/s are not the step's), each
# then probed (all labels, 1% labels, k-NN of the
# frozen target encoder); mixed should be within 0.5 points of f32. Run from the
# repository root on the GPU machine, with what it reads carried in git-ignored
# folders, which `scripts/gpu-prepare.sh` fills here (docs/results/README.md gives the
# call):
#   .gpu/ijepa            the release binary, built here (both machines are x86-64)
#   .gpu/fashion-mnist/   a copy of /usr/share/datasets/fashion-mnist
#   .gl/*.deb             the Vulkan loader packages, where the machine has none
# Everything it prints also goes to $OUT/gpu-probe.log and each run's log and
# metrics.jsonl to $OUT/probe-PRECISION-seedS.log and $OUT/metrics-PRECISION-seedS.jsonl
# ($OUT, or ./gpu-out).
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu-common.sh gpu-probe

runs=$(mktemp -d)
echo '{"precision": "mixed"}' > "$runs/mixed.json"
# Seed 0, then seed 1 where the deadline leaves it what seed 0 took and half a minute
# more: one seed's probes move by more than the 0.5-point target
# (docs/results/2026-12-05-lavapipe-plan-files.txt).
for seed in 0 1; do
    if ((seed > 0 && deadline - SECONDS < SECONDS + 30)); then
        echo "seed $seed skipped: ${SECONDS} s elapsed, the deadline is ${deadline} s" | tee -a "$log"
        break
    fi
    for precision in f32 mixed; do
        config=()
        [ "$precision" = mixed ] && config=(--config "$runs/mixed.json")
        (
            name="$precision-seed$seed"
            log="$out/probe-$name.log"
            # About 2 minutes alone on an H200 (2808 steps at ~3,000 images/s, 2026-11-28).
            step 300 "$bin" pretrain --preset fmnist "${config[@]}" --seed "$seed" \
                --data-dir .gpu/fashion-mnist --out "$runs/$name" &&
                cp "$runs/$name/metrics.jsonl" "$out/metrics-$name.jsonl" &&
                step 120 "$bin" probe "$runs/$name/checkpoint.safetensors"
        ) &
    done
    wait
done
cat "$out"/probe-*.log >> "$log"
