#!/usr/bin/env bash
# The test suite, as CI runs it: every test of the workspace, with the `mpi` feature so
# that the data-parallel tests (tests/mpi.rs, `mpirun -np 2`) run too. Installs what is
# missing first (lavapipe where no Vulkan driver exists, Fashion-MNIST, Open MPI,
# libclang). Without MPI, `cargo test --workspace` runs everything else.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --mpi
cargo test --workspace --features mpi "$@"
