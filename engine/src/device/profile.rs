//! Per-kernel timing under IJEPA_PROFILE=1: every dispatch is submitted and waited for,
//! and its time is added to its kernel's total. With timestamp queries (when the
//! adapter has them) the time is the GPU's own, from the start to the end of the
//! dispatch's compute pass; otherwise it is the host's wall time around the wait.

use std::collections::HashMap;
use std::sync::Mutex;

/// A query set of two timestamps and the buffers that bring them back.
struct Timestamps {
    query_set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    period_ns: f64,
}

pub(crate) struct Profiler {
    totals: Mutex<HashMap<String, (u64, f64)>>,
    timestamps: Option<Timestamps>,
}

impl Profiler {
    pub(crate) fn new(device: &wgpu::Device, queue: &wgpu::Queue) -> Profiler {
        let timestamps = device
            .features()
            .contains(wgpu::Features::TIMESTAMP_QUERY)
            .then(|| {
                let buffer = |usage| {
                    device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("timestamps"),
                        size: 16,
                        usage,
                        mapped_at_creation: false,
                    })
                };
                Timestamps {
                    query_set: device.create_query_set(&wgpu::QuerySetDescriptor {
                        label: Some("kernel timestamps"),
                        ty: wgpu::QueryType::Timestamp,
                        count: 2,
                    }),
                    resolve: buffer(
                        wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                    ),
                    readback: buffer(wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST),
                    period_ns: queue.get_timestamp_period() as f64,
                }
            });
        Profiler {
            totals: Mutex::new(HashMap::new()),
            timestamps,
        }
    }

    /// Whether times come from the GPU's timestamps (else from the host's clock).
    pub(crate) fn gpu_timed(&self) -> bool {
        self.timestamps.is_some()
    }

    /// The timestamp writes for the dispatch's compute pass.
    pub(crate) fn pass_writes(&self) -> Option<wgpu::ComputePassTimestampWrites<'_>> {
        self.timestamps
            .as_ref()
            .map(|t| wgpu::ComputePassTimestampWrites {
                query_set: &t.query_set,
                beginning_of_pass_write_index: Some(0),
                end_of_pass_write_index: Some(1),
            })
    }

    /// After the pass, before the submit: copy the timestamps where the host can read them.
    pub(crate) fn after_pass(&self, encoder: &mut wgpu::CommandEncoder) {
        if let Some(t) = &self.timestamps {
            encoder.resolve_query_set(&t.query_set, 0..2, &t.resolve, 0);
            encoder.copy_buffer_to_buffer(&t.resolve, 0, &t.readback, 0, 16);
        }
    }

    /// After the submit and the wait: add this dispatch's time to `kernel`.
    pub(crate) fn record(&self, device: &wgpu::Device, kernel: String, wall_seconds: f64) {
        let seconds = match &self.timestamps {
            Some(t) => {
                let slice = t.readback.slice(..);
                slice.map_async(wgpu::MapMode::Read, |_| {});
                device
                    .poll(wgpu::PollType::wait_indefinitely())
                    .expect("device lost");
                let ticks: Vec<u64> =
                    bytemuck::cast_slice(&slice.get_mapped_range().expect("mapped timestamps"))
                        .to_vec();
                t.readback.unmap();
                ticks[1].saturating_sub(ticks[0]) as f64 * t.period_ns * 1e-9
            }
            None => wall_seconds,
        };
        let mut totals = self.totals.lock().unwrap();
        let e = totals.entry(kernel).or_default();
        e.0 += 1;
        e.1 += seconds;
    }

    /// (kernel, calls, seconds), slowest first; `clear` starts the totals afresh.
    pub(crate) fn report(&self, clear: bool) -> Vec<(String, u64, f64)> {
        let mut totals = self.totals.lock().unwrap();
        let mut rows: Vec<(String, u64, f64)> =
            totals.iter().map(|(k, v)| (k.clone(), v.0, v.1)).collect();
        if clear {
            totals.clear();
        }
        rows.sort_by(|a, b| b.2.total_cmp(&a.2));
        rows
    }
}
