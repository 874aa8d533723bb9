//! The GPU, one room per concern: `adapter` (which adapter, what it offers), `pool`
//! (storage buffers lent and reused), `pipelines` (what a kernel is and its compiled
//! pipelines), `batching` (dispatches recorded into one pending encoder and submitted
//! in batches), `profile` (per-kernel timing) and `plans` (plans chosen by measurement,
//! and the files that keep them).
//!
//! Every kernel uses one bind-group layout convention: binding 0 is its parameter
//! block (a `KernelParams` struct, the WGSL file's `Params`) at a dynamic offset into
//! a per-submit arena; bindings 1.. are storage buffers, the read-only ones first, then
//! the read-write ones.
//!
//! Explained in the tour: docs/tour/01-first-kernel.md and docs/tour/02-tensors-and-pool.md.

mod adapter;
mod batching;
mod pipelines;
mod plans;
mod pool;
mod profile;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

pub use adapter::{DeviceInfo, ADAPTER_ENV, COOPERATIVE_MATRIX_ENV, LOCAL_RANK_ENV};
pub use pipelines::{
    pipeline_spirv, save_spirv, KernelDef, KernelParams, ParamsLayout, SPIRV_OUT_ENV,
};
pub(crate) use plans::Candidate;
pub use plans::{
    Measured, PlanFileUse, RuleLoss, RulesAgainstFastest, MEASURED_RUNS, MEASURE_PLANS_ENV,
    PLANS_ENV,
};
pub(crate) use pool::round_up_to_quarter_power;
pub use pool::{parse_bytes, MemoryPeaks, PooledBuffer, MEMORY_LIMIT_ENV, POISON_ENV};

use crate::error::{Error, Result};
use batching::Batcher;

/// Loop iterations that one invocation of a kernel may make on a CPU adapter. lavapipe
/// ends every loop of an invocation once they have made 65,535 iterations together
/// (llvmpipe's loop limiter), without an error: a longer sum or product would come out
/// short. Half of that leaves a kernel's other loops their share. The sums split longer
/// chunks (`ops::reduce::max_rows_per_workgroup`), the products longer depths.
pub const CPU_LOOP_BUDGET: usize = 32_768;

/// Environment variable that, set to 1, has a CPU adapter plan every op as a GPU would:
/// a GPU's kernels, splits and row lanes in place of lavapipe's (which then runs them,
/// slowly), so that the GPU plans are tested, and their dispatches counted, where no
/// GPU is at hand (`Device::set_gpu_plans`).
pub const GPU_PLANS_ENV: &str = "IJEPA_GPU_PLANS";
use pipelines::PipelineCache;
use pool::BufferPool;
use profile::Profiler;

pub struct Device {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: DeviceInfo,
    limits: wgpu::Limits,
    pool: Arc<BufferPool>,
    pipelines: PipelineCache,
    batcher: Batcher,
    /// Bound to storage slots a kernel declares but does not use in this dispatch: one
    /// for inputs, one for outputs (a buffer cannot be both within a dispatch).
    dummy: Binding,
    dummy_output: Binding,
    /// Per-kernel timing, with IJEPA_PROFILE=1.
    profiler: Option<Profiler>,
    /// Fill every lent buffer with NaN first (IJEPA_POISON_BUFFERS=1).
    poison_buffers: bool,
    /// The optional features the device was created with.
    features: wgpu::Features,
    /// Dispatches, submits and FLOPs since the device was made (`Device::counts`).
    counts: DeviceCounts,
    /// The most bytes of one `PackedTensors` bucket (0: the binding limit).
    packing_limit: AtomicU64,
    /// While on (`log_plans`), the key of every plan the launchers ran; the flag spares
    /// every launch a lock while it is off.
    plan_log: Mutex<Option<BTreeSet<String>>>,
    plan_log_on: AtomicBool,
    /// Whether ops that have several plans time them and keep the fastest
    /// (`MEASURE_PLANS_ENV`), what they measured, and the plan file (`PLANS_ENV`).
    plans: plans::MeasuredPlans,
    /// Whether a CPU adapter plans as a GPU would (`GPU_PLANS_ENV`).
    gpu_plans: AtomicBool,
}

/// A range of a storage buffer that a kernel binds, copies from or to: a tensor's
/// values. Bindings start at offsets the adapter allows (see `PackedTensors`).
#[derive(Clone)]
pub struct Binding {
    pub(crate) buffer: wgpu::Buffer,
    pub(crate) offset: u64,
    /// `None`: to the end of the buffer.
    pub(crate) size: Option<wgpu::BufferSize>,
}

impl Binding {
    /// `bytes` bytes of `buffer` from `offset`, rounded up to a whole vec4 where the
    /// buffer has room (the vec4 kernels read whole vec4s); an empty range binds the
    /// rest of the buffer, which kernels then do not index.
    pub(crate) fn range(buffer: &wgpu::Buffer, offset: u64, bytes: u64) -> Binding {
        let room = buffer.size() - offset;
        Binding {
            buffer: buffer.clone(),
            offset,
            size: wgpu::BufferSize::new(bytes.next_multiple_of(16).min(room)),
        }
    }
}

/// How much work the host has handed the GPU: what `Device::counts` returns.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub dispatches: u64,
    /// Buffer-to-buffer copies recorded (gradients gathered for the multi-tensor
    /// optimizer, `Tensor::copy_from`): commands, but no kernels.
    pub copies: u64,
    pub submits: u64,
    /// Floating-point operations of the matmuls and attention heads dispatched: two per
    /// multiply-add, the attention backward counted as the four products it needs
    /// (not the scores its kernels recompute), so fused and composed paths agree.
    pub flops: u64,
}

#[derive(Default)]
struct DeviceCounts {
    dispatches: AtomicU64,
    copies: AtomicU64,
    submits: AtomicU64,
    flops: AtomicU64,
}

static SHARED: OnceLock<std::result::Result<Arc<Device>, String>> = OnceLock::new();

impl Device {
    /// The process-wide device, created on first use. Tests and the binary share it:
    /// creating many devices is slow on software drivers and can stall them.
    pub fn shared() -> Result<Arc<Device>> {
        SHARED
            .get_or_init(|| Device::new().map(Arc::new).map_err(|e| e.to_string()))
            .clone()
            .map_err(Error::Device)
    }

    /// Create a device on the adapter chosen by `IJEPA_ADAPTER` / `WGPU_BACKEND`, or the
    /// most capable one found (discrete, integrated, virtual, then CPU).
    pub fn new() -> Result<Device> {
        Self::with_limits(|_| {})
    }

    /// `new`, with the adapter's limits lowered by `lower` first: the device then works
    /// within them as it would on an adapter that has no more (how the tests reach the
    /// limits of small adapters on any). Raising one past the adapter's is an error.
    pub fn with_limits(lower: impl FnOnce(&mut wgpu::Limits)) -> Result<Device> {
        let adapter = adapter::choose()?;
        let adapter_info = adapter.get_info();
        let mut limits = adapter.limits();
        lower(&mut limits);
        let mut features = adapter.features() & adapter::OPTIONAL_FEATURES;
        let cooperative_subgroup = adapter::cooperative_subgroup(&adapter)?;
        let experimental_features = if cooperative_subgroup.is_some() {
            features |= wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX;
            // SAFETY: asked for with IJEPA_COOPERATIVE_MATRIX=1 only; the one kernel on
            // cooperative matrices keeps every lane of its subgroup in uniform control
            // flow around them, and is tested against the CPU reference where it runs.
            unsafe { wgpu::ExperimentalFeatures::enabled() }
        } else {
            wgpu::ExperimentalFeatures::disabled()
        };
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("ijepa"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features,
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| {
            Error::Device(format!(
                "could not create a device on {}: {e}",
                adapter_info.name
            ))
        })?;
        let unused = |label| {
            let buffer = device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: 16,
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            });
            Binding::range(&buffer, 0, 16)
        };
        let (dummy, dummy_output) = (unused("unused input"), unused("unused output"));
        let profiler = std::env::var("IJEPA_PROFILE")
            .is_ok_and(|v| v == "1")
            .then(|| Profiler::new(&device, &queue));
        let device = Device {
            info: DeviceInfo {
                cooperative_subgroup,
                ..DeviceInfo::new(&adapter, &limits)
            },
            pool: Arc::new(BufferPool::new(pool::memory_limit_from_env()?)),
            pipelines: PipelineCache::new(),
            batcher: Batcher::new(&device, &limits),
            limits,
            device,
            queue,
            dummy,
            dummy_output,
            profiler,
            poison_buffers: std::env::var(POISON_ENV).is_ok_and(|v| v == "1"),
            features,
            counts: DeviceCounts::default(),
            packing_limit: AtomicU64::new(0),
            plan_log: Mutex::new(None),
            plan_log_on: AtomicBool::new(false),
            plans: plans::MeasuredPlans::from_env(),
            gpu_plans: AtomicBool::new(std::env::var(GPU_PLANS_ENV).is_ok_and(|v| v == "1")),
        };
        if let Some(path) = std::env::var_os(PLANS_ENV).filter(|p| !p.is_empty()) {
            device.use_plan_file(std::path::Path::new(&path))?;
        }
        Ok(device)
    }

    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// Whether the adapter is a CPU implementation (lavapipe, WARP), where every
    /// invocation is a SIMD lane and workgroup memory costs as much as storage.
    pub fn is_cpu(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// Whether the plans follow a CPU adapter's rules: on a CPU adapter, unless it plans
    /// as a GPU (`GPU_PLANS_ENV`, `set_gpu_plans`). What the adapter can run
    /// (lavapipe's loop budget) stays `is_cpu`'s.
    pub fn plans_as_cpu(&self) -> bool {
        self.is_cpu() && !self.gpu_plans.load(Ordering::Relaxed)
    }

    /// Plan every op as a GPU would, on any adapter (a GPU already does), or not.
    pub fn set_gpu_plans(&self, on: bool) {
        self.gpu_plans.store(on, Ordering::Relaxed);
    }

    /// A CPU driver whose subgroups are exactly 8 lanes (lavapipe on x86), planning as a
    /// CPU adapter: what the subgroup matmul and attention kernels are written for.
    pub fn has_cpu_subgroups_of_8(&self) -> bool {
        self.plans_as_cpu() && self.info.subgroup_size == Some((8, 8))
    }

    /// Whether shaders may use f16 values (`SHADER_F16`; f16 storage, as packed words,
    /// needs no feature).
    pub fn has_shader_f16(&self) -> bool {
        self.features.contains(wgpu::Features::SHADER_F16)
    }

    /// The subgroup size of the cooperative-matrix kernels, when the device opened
    /// cooperative matrices (`IJEPA_COOPERATIVE_MATRIX=1` on an adapter that has them).
    pub fn cooperative_subgroup(&self) -> Option<u32> {
        self.info.cooperative_subgroup
    }

    /// Whether lent buffers are filled with NaN first (`POISON_ENV`).
    pub(crate) fn poisons_buffers(&self) -> bool {
        self.poison_buffers
    }

    pub(crate) fn dummy(&self) -> Binding {
        self.dummy.clone()
    }

    /// `dummy` for an output slot.
    pub(crate) fn dummy_output(&self) -> Binding {
        self.dummy_output.clone()
    }

    /// The alignment, in bytes, of a storage binding's offset.
    pub fn storage_offset_alignment(&self) -> u64 {
        self.limits.min_storage_buffer_offset_alignment as u64
    }

    /// The most bytes one storage binding (and one pooled buffer) may hold.
    pub fn max_binding_bytes(&self) -> u64 {
        self.info.max_storage_binding.min(self.info.max_buffer_size) & !15
    }

    /// The most bytes of one bucket of `PackedTensors`: the binding limit, or less
    /// after `set_packing_limit`.
    pub fn packing_limit(&self) -> u64 {
        match self.packing_limit.load(Ordering::Relaxed) {
            0 => self.max_binding_bytes(),
            bytes => bytes.min(self.max_binding_bytes()),
        }
    }

    /// Pack tensors into buckets of at most `bytes` from now on (`None`: the binding
    /// limit), as a model too large for one binding is packed; tests use it to split
    /// small models.
    pub fn set_packing_limit(&self, bytes: Option<u64>) {
        self.packing_limit
            .store(bytes.unwrap_or(0), Ordering::Relaxed);
    }

    /// Dispatches recorded, command buffers submitted and matmul FLOPs dispatched so far.
    pub fn counts(&self) -> Counts {
        Counts {
            dispatches: self.counts.dispatches.load(Ordering::Relaxed),
            copies: self.counts.copies.load(Ordering::Relaxed),
            submits: self.counts.submits.load(Ordering::Relaxed),
            flops: self.counts.flops.load(Ordering::Relaxed),
        }
    }

    /// Add to the FLOPs `counts` reports (see `Counts::flops`).
    pub(crate) fn count_flops(&self, flops: u64) {
        self.counts.flops.fetch_add(flops, Ordering::Relaxed);
    }

    /// Start recording the key of every plan the launchers of matmul, attention and
    /// the row kernels run (`MatmulPlan::key`, `AttentionPlan::key`, and the
    /// `plan_key` of softmax and LayerNorm), until `take_plan_log`.
    pub fn log_plans(&self) {
        *self.plan_log.lock().unwrap() = Some(BTreeSet::new());
        self.plan_log_on.store(true, Ordering::Relaxed);
    }

    /// The plans run since `log_plans`; the log is off again.
    pub fn take_plan_log(&self) -> BTreeSet<String> {
        self.plan_log_on.store(false, Ordering::Relaxed);
        self.plan_log.lock().unwrap().take().unwrap_or_default()
    }

    pub(crate) fn note_plan(&self, key: impl FnOnce() -> String) {
        if !self.plan_log_on.load(Ordering::Relaxed) {
            return;
        }
        if let Some(log) = self.plan_log.lock().unwrap().as_mut() {
            log.insert(key());
        }
    }

    /// Per-kernel (calls, seconds) collected under IJEPA_PROFILE=1, slowest first, and
    /// whether the times are the GPU's (timestamp queries) or the host's.
    pub fn profile_report(&self) -> (Vec<(String, u64, f64)>, bool) {
        self.profiler
            .as_ref()
            .map_or((Vec::new(), false), |p| (p.report(false), p.gpu_timed()))
    }

    /// `profile_report`, and the totals start afresh.
    pub fn take_profile_report(&self) -> (Vec<(String, u64, f64)>, bool) {
        self.profiler
            .as_ref()
            .map_or((Vec::new(), false), |p| (p.report(true), p.gpu_timed()))
    }

    /// A grid for `groups` workgroups that respects the per-dimension limit: kernels
    /// recover the linear workgroup index as `wid.x + wid.y * num_workgroups.x`.
    pub(crate) fn grid_1d(&self, groups: u32) -> [u32; 3] {
        let max = self.limits.max_compute_workgroups_per_dimension;
        if groups <= max {
            [groups, 1, 1]
        } else {
            [max, groups.div_ceil(max), 1]
        }
    }

    /// A grid of `columns` workgroups across and `rows` down that respects the
    /// per-dimension limit: the rows folded over y and z as `grid_1d` folds x over y;
    /// kernels recover row r as `wid.y + wid.z * num_workgroups.y` (a matmul's row tiles
    /// of every batch entry, matmul_tiles.wgsl's `tile_at`; attention's heads,
    /// attention_layout.wgsl's `head_of`). Columns past the limit, or more rows than two
    /// dimensions hold, leave a grid that dispatching refuses by name.
    pub(crate) fn grid_2d(&self, columns: usize, rows: usize) -> [u32; 3] {
        let saturate = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let [y, z, _] = self.grid_1d(saturate(rows));
        [saturate(columns), y, z]
    }
}

/// Mesa's Vulkan drivers look for a Wayland display in `$XDG_RUNTIME_DIR` and print an
/// error when it is unset, as it is on headless machines and in CI. ijepa draws nothing
/// on screen: when the variable is unset, point it at a private directory (ours, mode
/// 0700) before any driver loads, while the process has one thread: first in `main`.
pub fn private_runtime_dir() {
    #[cfg(target_os = "linux")]
    set_private_runtime_dir();
}

#[cfg(target_os = "linux")]
fn set_private_runtime_dir() {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    if std::env::var_os("XDG_RUNTIME_DIR").is_some() {
        return;
    }
    let Ok(uid) = std::fs::metadata("/proc/self").map(|m| m.uid()) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("ijepa-runtime-{uid}"));
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
    if std::fs::symlink_metadata(&dir)
        .is_ok_and(|m| m.is_dir() && m.uid() == uid && m.permissions().mode() & 0o077 == 0)
    {
        std::env::set_var("XDG_RUNTIME_DIR", &dir);
    }
}
