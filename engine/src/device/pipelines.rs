//! What a kernel is, and its compiled pipelines.
//!
//! A [`KernelDef`] names a WGSL entry point, the storage buffers it binds and its
//! parameter block: a [`KernelParams`] struct declared with [`kernel_params!`] next to
//! the launcher, laid out as the shader file's WGSL `Params` struct (tests/shaders.rs
//! holds every pair to the same size, field names, offsets and types through naga).
//! Sizes the host also computes with (tiles, rows per workgroup) reach the WGSL as
//! pipeline overrides declared without a default, so they are written once, in Rust.
//!
//! Explained in the tour: docs/tour/01-first-kernel.md.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::Device;
use crate::shaders::Shader;

/// The layout of a parameter block: its type name, size, and each field's name, byte
/// offset and Rust type (as written).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamsLayout {
    pub name: &'static str,
    pub size: usize,
    pub fields: &'static [(&'static str, usize, &'static str)],
}

/// A kernel's parameter block, uploaded as the uniform at binding 0.
pub trait KernelParams: bytemuck::Pod {
    const LAYOUT: ParamsLayout;
}

/// Declares a `#[repr(C)]` parameter block with its [`KernelParams`] layout. Fields
/// named `_pad...` are explicit padding where WGSL's alignment leaves a gap.
#[macro_export]
macro_rules! kernel_params {
    ($(#[$meta:meta])* $vis:vis struct $name:ident {
        $($(#[$field_meta:meta])* $field:ident : $ty:ty),* $(,)?
    }) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
        $vis struct $name {
            $($(#[$field_meta])* pub $field: $ty),*
        }

        impl $crate::device::KernelParams for $name {
            const LAYOUT: $crate::device::ParamsLayout = $crate::device::ParamsLayout {
                name: stringify!($name),
                size: std::mem::size_of::<$name>(),
                fields: &[$((
                    stringify!($field),
                    std::mem::offset_of!($name, $field),
                    stringify!($ty),
                )),*],
            };
        }
    };
}

/// A WGSL kernel: an entry point of `shader`, whose `reads` input and `writes` output
/// storage buffers are bound in that order from binding `first_binding` on (1 unless
/// the file gives the entry point its own view of the buffers), with parameters `P`.
pub struct KernelDef<P> {
    pub shader: &'static Shader,
    pub entry: &'static str,
    pub reads: usize,
    pub writes: usize,
    pub first_binding: u32,
    params: PhantomData<fn(P)>,
}

impl<P> KernelDef<P> {
    pub const fn new(
        shader: &'static Shader,
        entry: &'static str,
        reads: usize,
        writes: usize,
    ) -> KernelDef<P> {
        KernelDef {
            shader,
            entry,
            reads,
            writes,
            first_binding: 1,
            params: PhantomData,
        }
    }

    /// The same kernel with its buffers bound from `first_binding` on.
    pub const fn bound_from(self, first_binding: u32) -> KernelDef<P> {
        KernelDef {
            first_binding,
            ..self
        }
    }
}

pub(super) struct Kernel {
    pub(super) pipeline: wgpu::ComputePipeline,
    pub(super) layout: wgpu::BindGroupLayout,
}

/// What tells one compiled pipeline from another: its shader module's name, entry
/// point and override values, the values as bits so that the key of every dispatch is
/// hashed without formatting a number.
#[derive(PartialEq, Eq, Hash)]
struct PipelineKey {
    module: &'static str,
    entry: &'static str,
    constants: Vec<(&'static str, u64)>,
}

/// Shader modules by name and pipelines by entry point and override values, each
/// compiled once.
pub(super) struct PipelineCache {
    kernels: Mutex<HashMap<PipelineKey, Arc<Kernel>>>,
    modules: Mutex<HashMap<&'static str, wgpu::ShaderModule>>,
    /// Keep wgpu's runtime bounds checks in shaders (IJEPA_CHECKED_SHADERS=1).
    checked_shaders: bool,
    /// Where each new pipeline's SPIR-V is saved (`SPIRV_OUT_ENV`).
    spirv_out: Option<PathBuf>,
}

/// `IJEPA_SPIRV_OUT=DIR`: every pipeline a device compiles is also saved into DIR as
/// [`pipeline_spirv`] writes it, for Khronos's validator (scripts/validate-spirv.sh).
pub const SPIRV_OUT_ENV: &str = "IJEPA_SPIRV_OUT";

impl PipelineCache {
    pub(super) fn new() -> PipelineCache {
        PipelineCache {
            kernels: Mutex::new(HashMap::new()),
            modules: Mutex::new(HashMap::new()),
            checked_shaders: std::env::var("IJEPA_CHECKED_SHADERS").is_ok_and(|v| v == "1"),
            spirv_out: std::env::var_os(SPIRV_OUT_ENV).map(PathBuf::from),
        }
    }
}

impl Device {
    fn module(&self, shader: &'static Shader) -> wgpu::ShaderModule {
        let mut modules = self.pipelines.modules.lock().unwrap();
        modules
            .entry(shader.name)
            .or_insert_with(|| {
                let desc = wgpu::ShaderModuleDescriptor {
                    label: Some(shader.file),
                    source: wgpu::ShaderSource::Wgsl(shader.source.into()),
                };
                if self.pipelines.checked_shaders {
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

    /// The pipeline for a kernel and its override values, compiled once.
    pub(super) fn kernel<P: KernelParams>(
        &self,
        def: &KernelDef<P>,
        constants: &[(&'static str, f64)],
    ) -> Arc<Kernel> {
        let key = PipelineKey {
            module: def.shader.name,
            entry: def.entry,
            constants: constants
                .iter()
                .map(|&(name, value)| (name, value.to_bits()))
                .collect(),
        };
        if let Some(k) = self.pipelines.kernels.lock().unwrap().get(&key) {
            return k.clone();
        }
        assert_eq!(
            def.shader.params.map(|l| l.name),
            Some(P::LAYOUT.name),
            "{}: the kernel's parameter type is not its shader file's",
            def.entry
        );
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
        let module = self.module(def.shader);
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
        if let Some(dir) = &self.pipelines.spirv_out {
            // One file per pipeline key, whichever test or process compiles it.
            let mut hasher = DefaultHasher::new();
            key.hash(&mut hasher);
            let name = format!("{}-{}-{:016x}", def.shader.name, def.entry, hasher.finish());
            let saved = pipeline_spirv(def.shader, def.entry, constants)
                .and_then(|words| save_spirv(dir, &name, &words));
            if let Err(e) = saved {
                eprintln!(
                    "warning: {SPIRV_OUT_ENV}: {}, {}: {e}",
                    def.shader.file, def.entry
                );
            }
        }
        let kernel = Arc::new(Kernel { pipeline, layout });
        self.pipelines
            .kernels
            .lock()
            .unwrap()
            .insert(key, kernel.clone());
        kernel
    }
}

/// A pipeline's SPIR-V as naga writes it for wgpu's Vulkan backend on a Vulkan 1.3
/// driver: `entry` of `shader` with its override values processed, SPIR-V 1.6, no
/// runtime checks (as the engine creates its modules). For validators: no driver here
/// checks SPIR-V strictly, and some kernels run only on GPUs that have what they use.
pub fn pipeline_spirv(
    shader: &Shader,
    entry: &str,
    constants: &[(&str, f64)],
) -> Result<Vec<u32>, String> {
    let module =
        naga::front::wgsl::parse_str(shader.source).map_err(|e| e.emit_to_string(shader.source))?;
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .map_err(|e| e.emit_to_string(shader.source))?;
    let constants: naga::back::PipelineConstants = constants
        .iter()
        .map(|&(name, value)| (name.to_string(), value))
        .collect();
    let stage = naga::ShaderStage::Compute;
    let (module, info) = naga::back::pipeline_constants::process_overrides(
        &module,
        &info,
        Some((stage, entry)),
        &constants,
    )
    .map_err(|e| format!("overrides: {e}"))?;
    let options = naga::back::spv::Options {
        lang_version: (1, 6),
        zero_initialize_workgroup_memory: naga::back::spv::ZeroInitializeWorkgroupMemoryMode::None,
        force_loop_bounding: false,
        ..Default::default()
    };
    let pipeline = naga::back::spv::PipelineOptions {
        shader_stage: stage,
        entry_point: entry.to_string(),
    };
    naga::back::spv::write_vec(&module, &info, &options, Some(&pipeline))
        .map_err(|e| format!("SPIR-V: {e}"))
}

/// SPIR-V words saved as `dir/{name}.spv`, written whole and renamed (tests and
/// processes may save the same pipeline at once).
pub fn save_spirv(dir: &Path, name: &str, words: &[u32]) -> Result<(), String> {
    let path = dir.join(format!("{name}.spv"));
    let temporary = dir.join(format!(
        ".{name}.{}.{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&temporary, bytemuck::cast_slice::<u32, u8>(words)))
        .and_then(|()| std::fs::rename(&temporary, &path))
        .map_err(|e| format!("{}: {e}", path.display()))
}
