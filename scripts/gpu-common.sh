# What the lent-GPU scripts share, sourced from the repository root with the log's
# name: the output folder ($OUT, or ./gpu-out) and its log, the Vulkan loaders
# unpacked from .gl/*.deb where the machine has none, NVIDIA's driver file, the carried
# binary, and `step`, which runs one command under a time limit and logs it.
out="${OUT:-gpu-out}"
mkdir -p "$out"
log="$out/$1.log"
if ! ldconfig -p | grep -q 'libvulkan\.so\.1'; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -e "$icd" ] && export VK_DRIVER_FILES="$icd"
bin=.gpu/ijepa

# Each command with a time limit, so one that hangs leaves the rest their time, cut
# to what is left before the script's deadline (GPU_DEADLINE seconds, 540 unless set:
# inside the 600 s of a call); with under 10 s left a command is skipped. So the
# script ends in time with what it ran, in its order.
deadline=${GPU_DEADLINE:-540}
step() {
    local limit=$1 left=$((deadline - SECONDS))
    shift
    if ((left < 10)); then
        echo "skipped at ${SECONDS} s (deadline ${deadline} s): $*" | tee -a "$log"
        return 1
    fi
    ((limit > left)) && limit=$left
    echo "\$ $*   (at ${SECONDS} s, limit ${limit} s)" | tee -a "$log"
    timeout "$limit" "$@" 2>&1 | tee -a "$log"
}
