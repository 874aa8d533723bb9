//! Which adapter the device opens, and what it offers (`ijepa info`).

use crate::error::{Error, Result};

/// Environment variable that picks an adapter by (case-insensitive) name substring.
/// The backend is picked by wgpu's own `WGPU_BACKEND` (vulkan, metal, dx12, gl).
pub const ADAPTER_ENV: &str = "IJEPA_ADAPTER";

/// The rank of this process among those of a data-parallel run on the same machine;
/// without `IJEPA_ADAPTER`, it picks the adapter (rank modulo the number of the most
/// capable adapters found), so that each process of a node has its own GPU.
pub const LOCAL_RANK_ENV: &str = "IJEPA_LOCAL_RANK";

/// Features requested when the adapter has them; every use checks for them first.
pub(super) const OPTIONAL_FEATURES: wgpu::Features = wgpu::Features::TIMESTAMP_QUERY
    .union(wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS)
    .union(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES)
    .union(wgpu::Features::SUBGROUP)
    .union(wgpu::Features::SHADER_F16);

/// What `ijepa info` prints.
#[derive(Clone, Debug)]
pub struct DeviceInfo {
    pub name: String,
    pub backend: String,
    pub device_type: wgpu::DeviceType,
    pub driver: String,
    pub driver_info: String,
    pub max_storage_binding: u64,
    pub max_buffer_size: u64,
    pub workgroup_storage: u32,
    pub invocations_per_workgroup: u32,
    pub workgroups_per_dimension: u32,
    pub subgroup_size: Option<(u32, u32)>,
    pub features: Vec<String>,
    /// The cooperative-matrix (tensor core) shapes the adapter exposes, as
    /// `MxNxK AB->C`; empty without `EXPERIMENTAL_COOPERATIVE_MATRIX`.
    pub cooperative_matrices: Vec<String>,
}

impl DeviceInfo {
    pub(super) fn new(adapter_handle: &wgpu::Adapter, limits: &wgpu::Limits) -> DeviceInfo {
        let adapter = &adapter_handle.get_info();
        let features = adapter_handle.features() & OPTIONAL_FEATURES;
        let cooperative_matrices = if adapter_handle
            .features()
            .contains(wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX)
        {
            adapter_handle
                .cooperative_matrix_properties()
                .iter()
                .map(|c| {
                    format!(
                        "{}x{}x{} {:?}->{:?}",
                        c.m_size, c.n_size, c.k_size, c.ab_type, c.cr_type
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        DeviceInfo {
            name: adapter.name.clone(),
            backend: format!("{:?}", adapter.backend),
            device_type: adapter.device_type,
            driver: adapter.driver.clone(),
            driver_info: adapter.driver_info.clone(),
            max_storage_binding: limits.max_storage_buffer_binding_size,
            max_buffer_size: limits.max_buffer_size,
            workgroup_storage: limits.max_compute_workgroup_storage_size,
            invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
            workgroups_per_dimension: limits.max_compute_workgroups_per_dimension,
            subgroup_size: features
                .contains(wgpu::Features::SUBGROUP)
                .then_some((adapter.subgroup_min_size, adapter.subgroup_max_size)),
            features: features.iter_names().map(|(n, _)| n.to_string()).collect(),
            cooperative_matrices,
        }
    }
}

fn no_adapter_help() -> String {
    "no GPU adapter found. Install your GPU's Vulkan/Metal/DX12 driver; on a Linux machine \
     without a GPU, install Mesa's CPU Vulkan driver: `sudo apt-get install -y \
     mesa-vulkan-drivers libvulkan1`. Set WGPU_BACKEND to pick a backend and \
     IJEPA_ADAPTER to pick an adapter by name."
        .to_string()
}

/// Preference between adapter types: lower is preferred.
fn type_rank(t: wgpu::DeviceType) -> u32 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

/// The adapter `IJEPA_ADAPTER` names, or the most capable one found.
pub(super) fn choose() -> Result<wgpu::Adapter> {
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
    match std::env::var(ADAPTER_ENV).ok().filter(|s| !s.is_empty()) {
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
                })
        }
        None => {
            let best = adapters
                .iter()
                .map(|a| type_rank(a.get_info().device_type))
                .min()
                .expect("non-empty");
            let mut candidates: Vec<wgpu::Adapter> = adapters
                .into_iter()
                .filter(|a| type_rank(a.get_info().device_type) == best)
                .collect();
            let local_rank = match std::env::var(LOCAL_RANK_ENV) {
                Ok(v) => v.parse::<usize>().map_err(|_| {
                    Error::Device(format!("{LOCAL_RANK_ENV}={v}: expected a whole number"))
                })?,
                Err(_) => 0,
            };
            Ok(candidates.swap_remove(local_rank % candidates.len()))
        }
    }
}
