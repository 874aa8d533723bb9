//! Tour chapter 1 (docs/tour/01-first-kernel.md): a WGSL kernel run by hand with wgpu,
//! then the same kind of work through the engine, which records dispatches into one
//! pending command encoder and submits only when it must.
//!
//! Run: cargo run --release --example 01_first_kernel

use std::sync::Arc;

use engine::cpu::max_abs_diff;
use engine::{ops, Device, Tensor};

/// out[i] = s * a[i] + b[i], one invocation per element, 64 per workgroup.
const SCALED_ADD: &str = r#"
struct Params { n: u32, s: f32 }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let i = id.x;
    // The last workgroup runs past the end when n is not a multiple of 64.
    if i < p.n {
        out[i] = p.s * a[i] + b[i];
    }
}
"#;

const N: usize = 1000;
const S: f32 = 2.5;

/// Every step of one dispatch, spelled out: adapter, device, buffers, pipeline, bind
/// group, command encoder, compute pass, submit, readback.
fn scaled_add_by_hand(a: &[f32], b: &[f32]) -> (String, Vec<f32>) {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = wgpu::Backends::PRIMARY; // Vulkan, Metal, DX12: the compute backends
    let instance = wgpu::Instance::new(desc);
    let adapter =
        pollster::block_on(instance.request_adapter(&wgpu::RequestAdapterOptions::default()))
            .expect("a GPU adapter (on Linux without a GPU: apt-get install mesa-vulkan-drivers)");
    let name = adapter.get_info().name;
    let (device, queue) =
        pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor::default()))
            .expect("a device on the adapter");

    // Storage buffers for the inputs and the output, a uniform for the parameters and a
    // host-mappable buffer to read the output back through.
    let storage = |label, contents: &[f32], usage| {
        let buffer = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: (contents.len() * 4) as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | usage,
            mapped_at_creation: false,
        });
        queue.write_buffer(&buffer, 0, bytemuck::cast_slice(contents));
        buffer
    };
    let a_buf = storage("a", a, wgpu::BufferUsages::empty());
    let b_buf = storage("b", b, wgpu::BufferUsages::empty());
    let out_buf = storage("out", &vec![0.0; N], wgpu::BufferUsages::COPY_SRC);
    let params = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("params"),
        size: 8,
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    queue.write_buffer(&params, 0, bytemuck::cast_slice(&[N as u32, S.to_bits()]));
    let readback = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("readback"),
        size: (N * 4) as u64,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });

    // The WGSL is compiled (by naga, then the driver) into a pipeline; with no explicit
    // layout, wgpu derives the bind group layout from the shader's bindings.
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("scaled_add"),
        source: wgpu::ShaderSource::Wgsl(SCALED_ADD.into()),
    });
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("scaled_add"),
        layout: None,
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    });
    let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.get_bind_group_layout(0),
        entries: &[(0, &params), (1, &a_buf), (2, &b_buf), (3, &out_buf)].map(
            |(binding, buffer)| wgpu::BindGroupEntry {
                binding,
                resource: buffer.as_entire_binding(),
            },
        ),
    });

    // Nothing runs while commands are recorded: the encoder is a list handed to the GPU
    // by `submit`.
    let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor::default());
    {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
        pass.set_pipeline(&pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(N.div_ceil(64) as u32, 1, 1);
    }
    encoder.copy_buffer_to_buffer(&out_buf, 0, &readback, 0, (N * 4) as u64);
    queue.submit([encoder.finish()]);

    // Map the readback buffer and wait for the GPU.
    let slice = readback.slice(..);
    slice.map_async(wgpu::MapMode::Read, |r| r.expect("readback mapped"));
    device
        .poll(wgpu::PollType::wait_indefinitely())
        .expect("the device is alive");
    let out = bytemuck::cast_slice(&slice.get_mapped_range().expect("mapped")).to_vec();
    (name, out)
}

fn main() -> anyhow::Result<()> {
    engine::device::private_runtime_dir();
    let a: Vec<f32> = (0..N).map(|i| (i as f32 * 0.37).sin()).collect();
    let b: Vec<f32> = (0..N).map(|i| (i as f32 * 0.11).cos()).collect();
    let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| S * x + y).collect();

    // The engine's device first: some drivers cannot enumerate adapters again once an
    // instance of their own has been dropped.
    let device: Arc<Device> = Device::shared()?;
    let (adapter, got) = scaled_add_by_hand(&a, &b);
    let err = max_abs_diff(&got, &want);
    println!("adapter: {adapter}");
    println!(
        "by hand: out = {S} * a + b over {N} elements in {} workgroups of 64; max |gpu - cpu| = {err:.1e}",
        N.div_ceil(64)
    );

    // The engine does the same through its device: the pipeline is compiled once and
    // cached, buffers come from a pool, and each op only records its dispatch.
    let x = Tensor::from_slice(&device, &[N], &a)?;
    let y = Tensor::from_slice(&device, &[N], &b)?;
    let before = device.counts();
    let z = ops::add(&ops::scale(&x, S)?, &y)?;
    let recorded = device.counts();
    let values = z.to_vec();
    let read = device.counts();
    println!(
        "engine: scale then add recorded {} dispatches and {} submits; reading the result submitted {} command buffer",
        recorded.dispatches - before.dispatches,
        recorded.submits - before.submits,
        read.submits - recorded.submits,
    );
    println!(
        "engine: max |gpu - cpu| = {:.1e}",
        max_abs_diff(&values, &want)
    );
    Ok(())
}
