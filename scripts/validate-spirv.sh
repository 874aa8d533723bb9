#!/usr/bin/env bash
# Khronos's SPIR-V validator over the kernels that only a GPU with cooperative matrices
# runs (matmul_coop.wgsl in every form its launcher compiles, attention_coop.wgsl's
# three kernels at every head dim): tests/shaders.rs writes them as wgpu's Vulkan
# backend would on a Vulkan 1.3 driver (naga, SPIR-V 1.6) into a folder, and
# tools/spirv-val checks each for Vulkan 1.3. No GPU needed; Debian's spirv-val
# (SPIRV-Tools 2023.1) predates the cooperative-matrix capability, so the tool builds a
# newer SPIRV-Tools from source (the spirv-tools crate; a few minutes, once).
# Usage: scripts/validate-spirv.sh [FOLDER]   (the .spv files stay in FOLDER if given)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-$(mktemp -d)}
mkdir -p "$out"
cargo build --release --manifest-path tools/spirv-val/Cargo.toml
IJEPA_SPIRV_OUT="$out" cargo test --release --test shaders cooperative_matrix
tools/spirv-val/target/release/spirv-val "$out"/*.spv
