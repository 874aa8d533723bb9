//! Command batching: dispatches are recorded into one compute pass of one pending
//! command encoder, with their parameter blocks in a per-submit arena, and submitted
//! every `MAX_DISPATCHES_PER_SUBMIT` dispatches or when the host needs a result;
//! uploads, copies and readbacks go through the same encoder, in order.
//!
//! Explained in the tour: docs/tour/01-first-kernel.md.

use std::sync::atomic::Ordering;
use std::sync::Mutex;

use super::pipelines::{KernelDef, KernelParams};
use super::{Binding, Device};
use crate::error::{Error, Result};

/// Dispatches recorded before the pending encoder is submitted.
const MAX_DISPATCHES_PER_SUBMIT: usize = 64;
/// The largest parameter block a kernel may have.
const MAX_PARAMS_BYTES: usize = 128;

struct Pending {
    encoder: Option<wgpu::CommandEncoder>,
    /// The compute pass dispatches are recorded into, open on `encoder` until the
    /// encoder is needed for a copy or a submit: each pass costs wgpu a usage scope
    /// sized by every buffer the device has, so one pass serves many dispatches.
    pass: Option<wgpu::ComputePass<'static>>,
    /// The parameter blocks of the recorded dispatches, one `param_stride` apart.
    params: Vec<u8>,
    dispatches: usize,
}

pub(super) struct Batcher {
    pending: Mutex<Pending>,
    params_arena: wgpu::Buffer,
    param_stride: usize,
}

impl Batcher {
    pub(super) fn new(device: &wgpu::Device, limits: &wgpu::Limits) -> Batcher {
        let param_stride =
            (limits.min_uniform_buffer_offset_alignment as usize).max(MAX_PARAMS_BYTES);
        Batcher {
            pending: Mutex::new(Pending {
                encoder: None,
                pass: None,
                params: Vec::new(),
                dispatches: 0,
            }),
            params_arena: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("kernel params"),
                size: (param_stride * MAX_DISPATCHES_PER_SUBMIT) as u64,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            param_stride,
        }
    }
}

impl Device {
    /// Write host data into a buffer. A pooled buffer may still be read by recorded but
    /// unsubmitted dispatches, and `write_buffer` runs before them, so submit first.
    pub(crate) fn upload(&self, dst: &Binding, data: &[u8]) {
        self.flush();
        self.queue.write_buffer(&dst.buffer, dst.offset, data);
    }

    /// Record a GPU-side copy of the first `bytes` bytes of `src` into `dst`.
    pub(crate) fn copy(&self, src: &Binding, dst: &Binding, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let mut pending = self.batcher.pending.lock().unwrap();
        self.encoder(&mut pending).copy_buffer_to_buffer(
            &src.buffer,
            src.offset,
            &dst.buffer,
            dst.offset,
            bytes,
        );
        self.counts.copies.fetch_add(1, Ordering::Relaxed);
    }

    /// Copy the first bytes of each binding back to the host through one staging
    /// buffer: one submit and one wait for them all. Byte counts are whole words.
    pub(crate) fn download(&self, srcs: &[(&Binding, u64)]) -> Vec<Vec<u8>> {
        let total: u64 = srcs.iter().map(|(_, bytes)| bytes).sum();
        if total == 0 {
            return vec![Vec::new(); srcs.len()];
        }
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: total,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        {
            let mut pending = self.batcher.pending.lock().unwrap();
            let encoder = self.encoder(&mut pending);
            let mut at = 0;
            for (src, bytes) in srcs {
                if *bytes > 0 {
                    encoder.copy_buffer_to_buffer(&src.buffer, src.offset, &staging, at, *bytes);
                }
                at += bytes;
            }
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
            .expect("mapped range of a mapped buffer");
        let mut at = 0;
        let parts = srcs
            .iter()
            .map(|(_, bytes)| {
                let part = data[at..at + *bytes as usize].to_vec();
                at += *bytes as usize;
                part
            })
            .collect();
        drop(data);
        staging.unmap();
        parts
    }

    /// Submit everything recorded so far (does not wait).
    pub fn flush(&self) {
        let mut pending = self.batcher.pending.lock().unwrap();
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
                    .write_buffer(&self.batcher.params_arena, 0, &pending.params);
            }
            self.queue.submit([encoder.finish()]);
            self.counts.submits.fetch_add(1, Ordering::Relaxed);
        }
        pending.params.clear();
        pending.dispatches = 0;
    }

    /// Record one dispatch of `def` with its override values and parameters.
    /// `buffers` are the storage bindings: `def.reads` inputs, then `def.writes` outputs.
    /// A grid past the adapter's workgroups per dimension is an error here, at the op
    /// that asked for it, not a validation failure at the next submit.
    pub(crate) fn dispatch<P: KernelParams>(
        &self,
        def: &KernelDef<P>,
        constants: &[(&'static str, f64)],
        params: &P,
        buffers: &[Binding],
        grid: [u32; 3],
    ) -> Result<()> {
        assert_eq!(
            buffers.len(),
            def.reads + def.writes,
            "{}: binding count",
            def.entry
        );
        const {
            assert!(
                std::mem::size_of::<P>() <= MAX_PARAMS_BYTES,
                "a parameter block is larger than the arena's stride"
            )
        };
        let limit = self.limits.max_compute_workgroups_per_dimension;
        if grid.iter().any(|&g| g > limit) {
            return Err(Error::Workgroups {
                kernel: def.entry,
                grid,
                limit,
            });
        }
        if grid.contains(&0) {
            return Ok(());
        }
        let kernel = self.kernel(def, constants);
        let mut pending = self.batcher.pending.lock().unwrap();
        let offset = pending.params.len();
        pending.params.extend_from_slice(bytemuck::bytes_of(params));
        pending.params.resize(offset + self.batcher.param_stride, 0);

        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: &self.batcher.params_arena,
                offset: 0,
                size: wgpu::BufferSize::new(MAX_PARAMS_BYTES as u64),
            }),
        }];
        for (i, b) in buffers.iter().enumerate() {
            entries.push(wgpu::BindGroupEntry {
                binding: def.first_binding + i as u32,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &b.buffer,
                    offset: b.offset,
                    size: b.size,
                }),
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
                format!("{}:{}", def.shader.file, def.entry),
                start.elapsed().as_secs_f64(),
            );
        } else {
            record(self.pass(&mut pending));
            if pending.dispatches >= MAX_DISPATCHES_PER_SUBMIT {
                self.submit(&mut pending);
            }
        }
        Ok(())
    }
}
