#!/usr/bin/env bash
# Quick start: install what is missing, build in release, and run the main job.
set -euo pipefail
cd "$(dirname "$0")"
scripts/install-deps.sh
cargo build --release
./target/release/ijepa info
