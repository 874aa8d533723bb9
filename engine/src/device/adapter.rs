//! Which adapter the device opens, and what it offers (`ijepa info`).

use crate::error::{Error, Result};

/// Environment variable that picks an adapter by (case-insensitive) name substring.
/// The backend is picked by wgpu's own `WGPU_BACKEND` (vulkan, metal, dx12, gl).
pub const ADAPTER_ENV: &str = "IJEPA_ADAPTER";

/// The rank of this process among those of a data-parallel run on the same machine;
/// without `IJEPA_ADAPTER`, it picks the adapter (rank modulo the number of the most
/// capable adapters found), so that each process of a node has its own GPU.
pub const LOCAL_RANK_ENV: &str = "IJEPA_LOCAL_RANK";

/// Environment variable that opens the adapter's cooperative matrices (tensor cores;
/// wgpu's experimental `EXPERIMENTAL_COOPERATIVE_MATRIX`) when set to 1, so that
/// matmul_coop.wgsl is a candidate for products of f16 operands where plans are
/// measured.
pub const COOPERATIVE_MATRIX_ENV: &str = "IJEPA_COOPERATIVE_MATRIX";

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
    /// The subgroup size of the cooperative-matrix kernels when the device opened
    /// them (`IJEPA_COOPERATIVE_MATRIX=1`), else None.
    pub cooperative_subgroup: Option<u32>,
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
            cooperative_subgroup: None,
        }
    }
}

/// Under `IJEPA_COOPERATIVE_MATRIX=1`, the subgroup size the cooperative-matrix
/// kernels run with, after checking that the adapter has what they need: 16x16x16
/// products of f16 into f32 at subgroup scope, f16 in shaders, and subgroups of one
/// fixed size (each workgroup is one subgroup). None when the variable is not set; an
/// error naming what is missing when it is and the adapter falls short.
pub(super) fn cooperative_subgroup(adapter: &wgpu::Adapter) -> Result<Option<u32>> {
    if std::env::var(COOPERATIVE_MATRIX_ENV).map_or(true, |v| v != "1") {
        return Ok(None);
    }
    let info = adapter.get_info();
    let features = adapter.features();
    let needs = [
        (
            wgpu::Features::EXPERIMENTAL_COOPERATIVE_MATRIX,
            "cooperative matrices",
        ),
        (wgpu::Features::SHADER_F16, "f16 in shaders (SHADER_F16)"),
        (wgpu::Features::SUBGROUP, "subgroups"),
    ];
    let mut missing: Vec<String> = needs
        .iter()
        .filter(|(feature, _)| !features.contains(*feature))
        .map(|(_, what)| what.to_string())
        .collect();
    let f16_into_f32 = |c: &wgpu::CooperativeMatrixProperties| {
        (c.m_size, c.n_size, c.k_size) == (16, 16, 16)
            && c.ab_type == wgpu::CooperativeScalarType::F16
            && c.cr_type == wgpu::CooperativeScalarType::F32
    };
    if missing.is_empty()
        && !adapter
            .cooperative_matrix_properties()
            .iter()
            .any(f16_into_f32)
    {
        missing.push("16x16x16 f16 -> f32 cooperative matrices".into());
    }
    if info.subgroup_min_size != info.subgroup_max_size {
        missing.push(format!(
            "one subgroup size (it has {}..{})",
            info.subgroup_min_size, info.subgroup_max_size
        ));
    }
    if !missing.is_empty() {
        return Err(Error::Device(format!(
            "{COOPERATIVE_MATRIX_ENV}=1, but {} lacks {}; unset it to run the other kernels",
            info.name,
            missing.join(", ")
        )));
    }
    Ok(Some(info.subgroup_max_size))
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
