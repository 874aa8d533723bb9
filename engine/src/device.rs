//! The GPU: adapter choice, the buffer pool, the kernel (pipeline) cache and the
//! pending command encoder that batches dispatches into few submits.
//!
//! Every kernel uses one bind-group layout convention: binding 0 is a small uniform
//! block of parameters (sizes, flags, scalars) at a dynamic offset into a per-batch
//! arena; bindings 1.. are storage buffers, the read-only ones first, then the
//! read-write ones.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::{Error, Result};
use crate::profile::Profiler;

/// Environment variable that picks an adapter by (case-insensitive) name substring.
/// The backend is picked by wgpu's own `WGPU_BACKEND` (vulkan, metal, dx12, gl).
pub const ADAPTER_ENV: &str = "IJEPA_ADAPTER";

/// Dispatches recorded before the pending encoder is submitted.
const MAX_DISPATCHES_PER_SUBMIT: usize = 64;
/// Size of one kernel's parameter block: 32 u32 words.
const PARAM_WORDS: usize = 32;

/// A WGSL kernel: which source file, which entry point, how many storage buffers it
/// reads and writes, bound in that order from binding `first_binding` on (1 unless a
/// file gives one entry point its own view of the buffers).
pub struct KernelDef {
    pub file: &'static str,
    pub source: &'static str,
    pub entry: &'static str,
    pub reads: usize,
    pub writes: usize,
    pub first_binding: u32,
}

struct Kernel {
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
}

/// What `ijepa info` prints.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub driver_info: String,
    pub max_storage_binding: u64,
    pub max_buffer_size: u64,
    pub workgroup_storage: u32,
    pub invocations_per_workgroup: u32,
    pub workgroups_per_dimension: u32,
    pub subgroup_size: Option<(u32, u32)>,
    pub features: Vec<String>,
}

struct Pending {
    encoder: Option<wgpu::CommandEncoder>,
    /// The compute pass dispatches are recorded into, open on `encoder` until the
    /// encoder is needed for a copy or a submit: each pass costs wgpu a usage scope
    /// sized by every buffer the device has, so one pass serves many dispatches.
    pass: Option<wgpu::ComputePass<'static>>,
    params: Vec<u8>,
    dispatches: usize,
}

/// Environment variable that caps the bytes of storage buffers the pool may hold, for
/// example `6G` or `512M` (binary units; plain digits are bytes).
pub const MEMORY_LIMIT_ENV: &str = "IJEPA_MEMORY_LIMIT";

/// Buffers waiting for reuse, keyed by size class.
#[derive(Default)]
struct BufferPool {
    free: Mutex<BTreeMap<u64, Vec<wgpu::Buffer>>>,
    created: AtomicU64,
    /// Bytes of every buffer the pool owns, lent out or free.
    held: AtomicU64,
    /// Most bytes `held` may reach (0: only the driver limits it).
    limit: AtomicU64,
}

/// A storage buffer on loan from the pool; it goes back when dropped.
pub struct PooledBuffer {
    buffer: Option<wgpu::Buffer>,
    class: u64,
    pool: Arc<BufferPool>,
}

impl PooledBuffer {
    pub fn raw(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("buffer present until drop")
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(buffer) = self.buffer.take() {
            let mut free = self.pool.free.lock().unwrap();
            free.entry(self.class).or_default().push(buffer);
        }
    }
}

/// A byte count such as `6G`, `512M`, `64K` (binary units) or `1000000`.
pub fn parse_bytes(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => t.split_at(i),
        None => (t, ""),
    };
    let scale = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1u64,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => {
            return Err(format!(
                "`{text}` is not a byte count such as 6G, 512M or 1000000"
            ))
        }
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("`{text}` is not a positive byte count such as 6G, 512M or 1000000"))
}

/// Round a byte size up to its pool class: steps of a quarter of the leading power of
/// two, so a new buffer wastes at most 25% (`alloc` may lend one of up to twice the class).
fn size_class(bytes: u64) -> u64 {
    let bytes = bytes.max(16);
    let top = 63 - bytes.leading_zeros();
    let step = ((1u64 << top) >> 2).max(16);
    bytes.div_ceil(step) * step
}

pub struct Device {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: DeviceInfo,
    limits: wgpu::Limits,
    pool: Arc<BufferPool>,
    kernels: Mutex<HashMap<String, Arc<Kernel>>>,
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    pending: Mutex<Pending>,
    params_arena: wgpu::Buffer,
    param_stride: usize,
    /// Bound to storage slots a kernel declares but does not use in this dispatch.
    dummy: wgpu::Buffer,
    /// Keep wgpu's runtime bounds checks in shaders (IJEPA_CHECKED_SHADERS=1).
    checked_shaders: bool,
    /// Per-kernel timing, with IJEPA_PROFILE=1.
    profiler: Option<Profiler>,
    /// Dispatches, submits and FLOPs since the device was made (`Device::counts`).
    counts: DeviceCounts,
}

/// How much work the host has handed the GPU: what `Device::counts` returns.
#[derive(Default, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub dispatches: u64,
    pub submits: u64,
    /// Floating-point operations of the matmuls and attention heads dispatched: two per
    /// multiply-add, the attention backward counted as the four products it needs
    /// (not the scores its kernels recompute), so fused and composed paths agree.
    pub flops: u64,
}

#[derive(Default)]
struct DeviceCounts {
    dispatches: AtomicU64,
    submits: AtomicU64,
    flops: AtomicU64,
}

static SHARED: OnceLock<std::result::Result<Arc<Device>, String>> = OnceLock::new();

fn no_adapter_help() -> String {
    "no GPU adapter found. Install your GPU's Vulkan/Metal/DX12 driver; on a Linux machine \
     without a GPU, install Mesa's CPU Vulkan driver: `sudo apt-get install -y \
     mesa-vulkan-drivers libvulkan1`. Set WGPU_BACKEND to pick a backend and \
     IJEPA_ADAPTER to pick an adapter by name."
        .to_string()
}

fn type_rank(t: wgpu::DeviceType) -> u32 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

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
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        if std::env::var_os("WGPU_BACKEND").is_none() {
            // Compute needs Vulkan, Metal or DX12; probing GL only prints EGL noise.
            desc.backends = wgpu::Backends::PRIMARY;
        }
        let instance = wgpu::Instance::new(desc);
        let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
        if adapters.is_empty() {
            return Err(Error::Device(no_adapter_help()));
        }
        let wanted = std::env::var(ADAPTER_ENV).ok().filter(|s| !s.is_empty());
        let adapter = match &wanted {
            Some(name) => {
                let needle = name.to_lowercase();
                let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
                adapters
                    .into_iter()
                    .find(|a| a.get_info().name.to_lowercase().contains(&needle))
                    .ok_or_else(|| {
                        Error::Device(format!(
                            "{ADAPTER_ENV}={name} matches no adapter; found: {}",
                            names.join(", ")
                        ))
                    })?
            }
            None => adapters
                .into_iter()
                .min_by_key(|a| type_rank(a.get_info().device_type))
                .expect("non-empty"),
        };
        Self::from_adapter(adapter)
    }

    fn from_adapter(adapter: wgpu::Adapter) -> Result<Device> {
        let adapter_info = adapter.get_info();
        let limits = adapter.limits();
        let optional = wgpu::Features::TIMESTAMP_QUERY
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS
            | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES
            | wgpu::Features::SUBGROUP
            | wgpu::Features::SHADER_F16;
        let features = adapter.features() & optional;
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("ijepa"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| {
            Error::Device(format!(
                "could not create a device on {}: {e}",
                adapter_info.name
            ))
        })?;

        let param_stride =
            (limits.min_uniform_buffer_offset_alignment as usize).max(PARAM_WORDS * 4);
        let params_arena = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("kernel params"),
            size: (param_stride * MAX_DISPATCHES_PER_SUBMIT) as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let dummy = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("unused binding"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let subgroup_size = features.contains(wgpu::Features::SUBGROUP).then_some((
            adapter_info.subgroup_min_size,
            adapter_info.subgroup_max_size,
        ));
        let info = DeviceInfo {
            name: adapter_info.name.clone(),
            backend: format!("{:?}", adapter_info.backend),
            device_type: format!("{:?}", adapter_info.device_type),
            driver: adapter_info.driver.clone(),
            driver_info: adapter_info.driver_info.clone(),
            max_storage_binding: limits.max_storage_buffer_binding_size,
            max_buffer_size: limits.max_buffer_size,
            workgroup_storage: limits.max_compute_workgroup_storage_size,
            invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
            workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
            subgroup_size,
            features: features.iter_names().map(|(n, _)| n.to_string()).collect(),
        };
        let memory_limit = match std::env::var(MEMORY_LIMIT_ENV) {
            Ok(text) if !text.trim().is_empty() => Some(
                parse_bytes(&text)
                    .map_err(|e| Error::Device(format!("{MEMORY_LIMIT_ENV}: {e}")))?,
            ),
            _ => None,
        };
        let profiler = std::env::var("IJEPA_PROFILE")
            .is_ok_and(|v| v == "1")
            .then(|| Profiler::new(&device, &queue));
        Ok(Device {
            device,
            queue,
            info,
            limits,
            pool: Arc::new(BufferPool {
                limit: AtomicU64::new(memory_limit.unwrap_or(0)),
                ..BufferPool::default()
            }),
            kernels: Mutex::new(HashMap::new()),
            modules: Mutex::new(HashMap::new()),
            pending: Mutex::new(Pending {
                encoder: None,
                pass: None,
                params: Vec::new(),
                dispatches: 0,
            }),
            params_arena,
            param_stride,
            dummy,
            checked_shaders: std::env::var("IJEPA_CHECKED_SHADERS").is_ok_and(|v| v == "1"),
            profiler,
            counts: DeviceCounts::default(),
        })
    }

    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    pub(crate) fn dummy(&self) -> &wgpu::Buffer {
        &self.dummy
    }

    /// How many storage buffers the pool has created so far (not reused).
    pub fn buffers_created(&self) -> u64 {
        self.pool.created.load(Ordering::Relaxed)
    }

    /// Dispatches recorded, command buffers submitted and matmul FLOPs dispatched so far.
    pub fn counts(&self) -> Counts {
        Counts {
            dispatches: self.counts.dispatches.load(Ordering::Relaxed),
            submits: self.counts.submits.load(Ordering::Relaxed),
            flops: self.counts.flops.load(Ordering::Relaxed),
        }
    }

    /// Add to the FLOPs `counts` reports (see `Counts::flops`).
    pub(crate) fn count_flops(&self, flops: u64) {
        self.counts.flops.fetch_add(flops, Ordering::Relaxed);
    }

    pub fn is_cpu(&self) -> bool {
        self.info.device_type == "Cpu"
    }

    /// A CPU driver whose subgroups are exactly 8 lanes (lavapipe on x86): what the
    /// subgroup matmul and attention kernels are written for.
    pub fn has_cpu_subgroups_of_8(&self) -> bool {
        self.is_cpu() && self.info.subgroup_size == Some((8, 8))
    }

    /// A storage buffer of at least `bytes` bytes from the pool. Its contents are
    /// whatever the last user left: every kernel writes all of its output.
    pub(crate) fn alloc(&self, bytes: u64) -> Result<PooledBuffer> {
        let limit = self.info.max_storage_binding.min(self.info.max_buffer_size);
        if bytes > limit {
            return Err(Error::TooLarge { bytes, limit });
        }
        let wanted = size_class(bytes).min(limit & !3);
        // The smallest free buffer of at least the wanted class and at most twice it:
        // token counts vary from step to step with the masks, so exact classes alone
        // would keep creating buffers long after the first step.
        let reused = {
            let mut free = self.pool.free.lock().unwrap();
            free.range_mut(wanted..=2 * wanted)
                .find_map(|(&class, buffers)| buffers.pop().map(|b| (class, b)))
        };
        let (class, buffer) = match reused {
            Some(found) => found,
            None => (wanted, self.create_storage_buffer(wanted)?),
        };
        Ok(PooledBuffer {
            buffer: Some(buffer),
            class,
            pool: self.pool.clone(),
        })
    }

    /// A new pooled storage buffer of `size` bytes. When the memory limit or the driver
    /// refuses it, the pool releases the buffers it keeps for reuse and tries once more.
    fn create_storage_buffer(&self, size: u64) -> Result<wgpu::Buffer> {
        if let Some(buffer) = self.try_create_storage_buffer(size) {
            return Ok(buffer);
        }
        if self.release_free_buffers() > 0 {
            if let Some(buffer) = self.try_create_storage_buffer(size) {
                return Ok(buffer);
            }
        }
        Err(Error::OutOfMemory {
            bytes: size,
            in_use: self.memory_held(),
            limit: self.memory_limit(),
        })
    }

    fn try_create_storage_buffer(&self, size: u64) -> Option<wgpu::Buffer> {
        if self
            .memory_limit()
            .is_some_and(|limit| self.memory_held() + size > limit)
        {
            return None;
        }
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        if pollster::block_on(scope.pop()).is_some() {
            return None;
        }
        self.pool.created.fetch_add(1, Ordering::Relaxed);
        self.pool.held.fetch_add(size, Ordering::Relaxed);
        Some(buffer)
    }

    /// Give the buffers waiting for reuse back to the driver; returns their bytes.
    /// Their memory comes back once no recorded work reads them, so that work is
    /// submitted and waited for.
    fn release_free_buffers(&self) -> u64 {
        let free = std::mem::take(&mut *self.pool.free.lock().unwrap());
        let bytes: u64 = free.iter().map(|(class, v)| class * v.len() as u64).sum();
        if bytes > 0 {
            self.synchronize();
            drop(free);
            self.pool.held.fetch_sub(bytes, Ordering::Relaxed);
            self.device
                .poll(wgpu::PollType::wait_indefinitely())
                .expect("device lost");
        }
        bytes
    }

    /// Bytes of the storage buffers the pool holds: in use, or kept for reuse.
    pub fn memory_held(&self) -> u64 {
        self.pool.held.load(Ordering::Relaxed)
    }

    /// The cap on `memory_held` (from `IJEPA_MEMORY_LIMIT` or `set_memory_limit`).
    pub fn memory_limit(&self) -> Option<u64> {
        Some(self.pool.limit.load(Ordering::Relaxed)).filter(|&l| l > 0)
    }

    /// Cap the bytes of storage buffers the pool may hold (`None`: no cap but the
    /// driver's). Allocations beyond it first release the buffers kept for reuse, then
    /// fail with `Error::OutOfMemory`.
    pub fn set_memory_limit(&self, limit: Option<u64>) {
        self.pool.limit.store(limit.unwrap_or(0), Ordering::Relaxed);
    }

    /// Write host data into a buffer. A pooled buffer may still be read by recorded but
    /// unsubmitted dispatches, and `write_buffer` runs before them, so submit first.
    pub(crate) fn upload(&self, buffer: &wgpu::Buffer, data: &[u8]) {
        self.flush();
        self.queue.write_buffer(buffer, 0, data);
    }

    /// Record a GPU-side copy of the first `bytes` bytes of `src` into `dst`.
    pub(crate) fn copy(&self, src: &wgpu::Buffer, dst: &wgpu::Buffer, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let mut pending = self.pending.lock().unwrap();
        self.encoder(&mut pending)
            .copy_buffer_to_buffer(src, 0, dst, 0, bytes);
    }

    /// Copy `bytes` bytes of a buffer back to the host (submits and waits).
    pub(crate) fn download(&self, buffer: &wgpu::Buffer, bytes: u64) -> Vec<u8> {
        if bytes == 0 {
            return Vec::new();
        }
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        {
            let mut pending = self.pending.lock().unwrap();
            let encoder = self.encoder(&mut pending);
            encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, bytes);
            self.submit(&mut pending);
        }
        let slice = staging.slice(..);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .expect("device lost while waiting for a readback");
        rx.recv()
            .expect("map callback ran")
            .expect("readback buffer mapped");
        let data = slice
            .get_mapped_range()
            .expect("mapped range of a mapped buffer")
            .to_vec();
        staging.unmap();
        data
    }

    /// Submit everything recorded so far (does not wait).
    pub fn flush(&self) {
        let mut pending = self.pending.lock().unwrap();
        self.submit(&mut pending);
    }

    /// Submit and wait for the GPU to finish (used by benchmarks).
    pub fn synchronize(&self) {
        self.flush();
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .expect("device lost");
    }

    /// The pending encoder, with the open compute pass (if any) ended.
    fn encoder<'a>(&self, pending: &'a mut Pending) -> &'a mut wgpu::CommandEncoder {
        pending.pass = None;
        pending.encoder.get_or_insert_with(|| {
            self.device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
        })
    }

    /// The open compute pass on the pending encoder, begun if there is none.
    fn pass<'a>(&self, pending: &'a mut Pending) -> &'a mut wgpu::ComputePass<'static> {
        if pending.pass.is_none() {
            let pass = self
                .encoder(pending)
                .begin_compute_pass(&wgpu::ComputePassDescriptor::default())
                .forget_lifetime();
            pending.pass = Some(pass);
        }
        pending.pass.as_mut().expect("just begun")
    }

    fn submit(&self, pending: &mut Pending) {
        pending.pass = None;
        if let Some(encoder) = pending.encoder.take() {
            if !pending.params.is_empty() {
                self.queue
                    .write_buffer(&self.params_arena, 0, &pending.params);
            }
            self.queue.submit([encoder.finish()]);
            self.counts.submits.fetch_add(1, Ordering::Relaxed);
        }
        pending.params.clear();
        pending.dispatches = 0;
    }

    fn module(&self, def: &KernelDef) -> wgpu::ShaderModule {
        let mut modules = self.modules.lock().unwrap();
        modules
            .entry(def.file)
            .or_insert_with(|| {
                let desc = wgpu::ShaderModuleDescriptor {
                    label: Some(def.file),
                    source: wgpu::ShaderSource::Wgsl(def.source.into()),
                };
                if self.checked_shaders {
                    return self.device.create_shader_module(desc);
                }
                // SAFETY: every kernel bounds its own indices (guards, clamped loads,
                // host-validated index tensors) and is tested against the CPU reference
                // on sizes that are not multiples of its tiles; wgpu's extra runtime
                // checks only cost time. IJEPA_CHECKED_SHADERS=1 turns them back on.
                unsafe {
                    self.device
                        .create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked())
                }
            })
            .clone()
    }

    /// The pipeline for a kernel and its specialisation constants, compiled once.
    fn kernel(&self, def: &KernelDef, constants: &[(&str, f64)]) -> Arc<Kernel> {
        let mut key = format!("{}:{}", def.file, def.entry);
        for (name, value) in constants {
            key.push_str(&format!(":{name}={value}"));
        }
        if let Some(k) = self.kernels.lock().unwrap().get(&key) {
            return k.clone();
        }
        let storage = |binding: u32, read_only: bool| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Storage { read_only },
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        };
        let mut entries = vec![wgpu::BindGroupLayoutEntry {
            binding: 0,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: true,
                min_binding_size: None,
            },
            count: None,
        }];
        for i in 0..def.reads + def.writes {
            entries.push(storage(def.first_binding + i as u32, i < def.reads));
        }
        let layout = self
            .device
            .create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
                label: Some(def.entry),
                entries: &entries,
            });
        let pipeline_layout = self
            .device
            .create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: Some(def.entry),
                bind_group_layouts: &[Some(&layout)],
                immediate_size: 0,
            });
        let module = self.module(def);
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(def.entry),
                layout: Some(&pipeline_layout),
                module: &module,
                entry_point: Some(def.entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            });
        let kernel = Arc::new(Kernel { pipeline, layout });
        self.kernels.lock().unwrap().insert(key, kernel.clone());
        kernel
    }

    /// Record one dispatch of `def` on the pending encoder.
    /// `buffers` are the storage bindings: `def.reads` inputs, then `def.writes` outputs.
    pub(crate) fn dispatch(
        &self,
        def: &KernelDef,
        constants: &[(&str, f64)],
        params: &[u32],
        buffers: &[&wgpu::Buffer],
        grid: [u32; 3],
    ) {
        assert_eq!(
            buffers.len(),
            def.reads + def.writes,
            "{}: binding count",
            def.entry
        );
        assert!(
            params.len() <= PARAM_WORDS,
            "{}: too many params",
            def.entry
        );
        if grid.contains(&0) {
            return;
        }
        let kernel = self.kernel(def, constants);
        let mut pending = self.pending.lock().unwrap();
        let offset = pending.params.len();
        pending
            .params
            .extend_from_slice(bytemuck::cast_slice(params));
        pending.params.resize(offset + self.param_stride, 0);

        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &self.params_arena,
                offset: 0,
                size: wgpu::BufferSize::new((PARAM_WORDS * 4) as u64),
            }),
        }];
        for (i, b) in buffers.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: def.first_binding + i as u32,
                resource: b.as_entire_binding(),
            });
        }
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &kernel.layout,
            entries: &entries,
        });
        let record = |pass: &mut wgpu::ComputePass| {
            pass.set_pipeline(&kernel.pipeline);
            pass.set_bind_group(0, &bind_group, &[offset as u32]);
            pass.dispatch_workgroups(grid[0], grid[1], grid[2]);
        };
        pending.dispatches += 1;
        self.counts.dispatches.fetch_add(1, Ordering::Relaxed);
        if let Some(profiler) = &self.profiler {
            // A pass of its own, timestamped, submitted and waited for.
            let encoder = self.encoder(&mut pending);
            record(
                &mut encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: None,
                    timestamp_writes: profiler.pass_writes(),
                }),
            );
            profiler.after_pass(encoder);
            let start = std::time::Instant::now();
            self.submit(&mut pending);
            self.device
                .poll(wgpu::PollType::wait_indefinitely())
                .expect("device lost");
            profiler.record(
                &self.device,
                format!("{}:{}", def.file, def.entry),
                start.elapsed().as_secs_f64(),
            );
        } else {
            record(self.pass(&mut pending));
            if pending.dispatches >= MAX_DISPATCHES_PER_SUBMIT {
                self.submit(&mut pending);
            }
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
}
