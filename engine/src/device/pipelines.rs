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
use std::marker::PhantomData;
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
}

impl PipelineCache {
    pub(super) fn new() -> PipelineCache {
        PipelineCache {
            kernels: Mutex::new(HashMap::new()),
            modules: Mutex::new(HashMap::new()),
            checked_shaders: std::env::var("IJEPA_CHECKED_SHADERS").is_ok_and(|v| v == "1"),
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
        let kernel = Arc::new(Kernel { pipeline, layout });
        self.pipelines
            .kernels
            .lock()
            .unwrap()
            .insert(key, kernel.clone());
        kernel
    }
}
