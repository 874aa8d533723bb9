#!/usr/bin/env bash
# Install what ijepa needs at run time on Debian/Ubuntu, and only what is missing:
# a Vulkan driver (Mesa's lavapipe, a CPU implementation) when no Vulkan ICD is
# installed, and the Fashion-MNIST data set package. With --mpi, also Open MPI and
# libclang, which the `mpi` feature (data-parallel pretraining) and its tests build on.
set -euo pipefail

need=()
if ! { ldconfig -p | grep -q 'libvulkan\.so\.1' && compgen -G '/usr/share/vulkan/icd.d/*.json' >/dev/null; }; then
    need+=(mesa-vulkan-drivers libvulkan1)
fi
if [ ! -d /usr/share/datasets/fashion-mnist ]; then
    need+=(dataset-fashion-mnist)
fi
if [ "${1:-}" = "--mpi" ]; then
    command -v mpirun >/dev/null || need+=(openmpi-bin)
    command -v mpicc >/dev/null || need+=(libopenmpi-dev)
    ldconfig -p | grep -qE 'libclang(-[0-9.]+)?\.so' || need+=(libclang-dev)
fi
if [ ${#need[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "installing: ${need[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
