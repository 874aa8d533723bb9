//! The buffer pool: storage buffers lent to tensors and taken back when the last
//! handle drops, kept by size class for reuse, so a repeated training step creates no
//! buffers; capped by an optional memory limit.
//!
//! Explained in the tour: docs/tour/02-tensors-and-pool.md.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::Device;
use crate::error::{Error, Result};

/// Environment variable that, set to 1, fills every buffer the pool lends with NaN
/// before its tensor gets it: a kernel that reads what no kernel wrote then reads NaN
/// instead of a previous tensor's values (tests/pool.rs holds training to this).
pub const POISON_ENV: &str = "IJEPA_POISON_BUFFERS";

/// Environment variable that caps the bytes of storage buffers the pool may hold, for
/// example `6G` or `512M` (binary units; plain digits are bytes).
pub const MEMORY_LIMIT_ENV: &str = "IJEPA_MEMORY_LIMIT";

/// Buffers waiting for reuse, keyed by size class.
#[derive(Default)]
pub(super) struct BufferPool {
    free: Mutex<BTreeMap<u64, Vec<wgpu::Buffer>>>,
    created: AtomicU64,
    /// Bytes of every buffer the pool owns, lent out or free.
    held: AtomicU64,
    /// Bytes the tensors lent a buffer asked for (their buffers may be larger: size
    /// classes, and reused larger buffers).
    asked: AtomicU64,
    /// The most `asked` and `held` have been since the last `reset_memory_peaks`.
    peak_asked: AtomicU64,
    peak_held: AtomicU64,
    /// Most bytes `held` may reach (0: only the driver limits it).
    limit: AtomicU64,
}

impl BufferPool {
    pub(super) fn new(limit: Option<u64>) -> BufferPool {
        BufferPool {
            limit: AtomicU64::new(limit.unwrap_or(0)),
            ..BufferPool::default()
        }
    }
}

/// The memory limit `IJEPA_MEMORY_LIMIT` sets, if any.
pub(super) fn memory_limit_from_env() -> Result<Option<u64>> {
    match std::env::var(MEMORY_LIMIT_ENV) {
        Ok(text) if !text.trim().is_empty() => parse_bytes(&text)
            .map(Some)
            .map_err(|e| Error::Device(format!("{MEMORY_LIMIT_ENV}: {e}"))),
        _ => Ok(None),
    }
}

/// Peak GPU memory in bytes (`Device::memory_peaks`); each peak is of its own moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryPeaks {
    /// What the live tensors' elements take (their buffers up to a quarter more from
    /// size classes, and up to twice that where a larger free buffer was reused).
    pub tensors: u64,
    /// Every buffer the pool holds, lent or kept for reuse: the GPU memory in use.
    pub held: u64,
}

/// A storage buffer on loan from the pool; it goes back when dropped.
pub struct PooledBuffer {
    buffer: Option<wgpu::Buffer>,
    class: u64,
    asked: u64,
    pool: Arc<BufferPool>,
}

impl PooledBuffer {
    pub fn raw(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("buffer present until drop")
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        self.pool.asked.fetch_sub(self.asked, Ordering::Relaxed);
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

/// `x` rounded up to a step of a quarter of its leading power of two (exact up to 7):
/// at most 25% more. The pool's size classes, and the buckets of sizes that measured
/// plans share.
pub(crate) fn round_up_to_quarter_power(x: u64) -> u64 {
    if x == 0 {
        return 0;
    }
    let step = ((1u64 << (63 - x.leading_zeros())) >> 2).max(1);
    x.div_ceil(step) * step
}

/// Round a byte size up to its pool class: whole 16-byte units, in steps of a quarter
/// of the leading power of two, so a new buffer wastes at most 25% (`alloc` may lend
/// one of up to twice the class).
fn size_class(bytes: u64) -> u64 {
    round_up_to_quarter_power(bytes.max(16)).next_multiple_of(16)
}

impl Device {
    /// A storage buffer of at least `bytes` bytes from the pool. Its contents are
    /// whatever the last user left: every kernel writes all of its output.
    pub(crate) fn alloc(&self, bytes: u64) -> Result<PooledBuffer> {
        let limit = self.info.max_storage_binding.min(self.info.max_buffer_size);
        if bytes > limit {
            return Err(Error::TooLarge {
                what: "a buffer".into(),
                bytes,
                limit,
            });
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
        let asked = self.pool.asked.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.pool.peak_asked.fetch_max(asked, Ordering::Relaxed);
        Ok(PooledBuffer {
            buffer: Some(buffer),
            class,
            asked: bytes,
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
        let held = self.pool.held.fetch_add(size, Ordering::Relaxed) + size;
        self.pool.peak_held.fetch_max(held, Ordering::Relaxed);
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

    /// How many storage buffers the pool has created so far (not reused).
    pub fn buffers_created(&self) -> u64 {
        self.pool.created.load(Ordering::Relaxed)
    }

    /// Bytes of the storage buffers the pool holds: in use, or kept for reuse.
    pub fn memory_held(&self) -> u64 {
        self.pool.held.load(Ordering::Relaxed)
    }

    /// The most bytes in tensors and held by the pool since the
    /// device was made or `reset_memory_peaks` was last called: a step's peak GPU memory.
    pub fn memory_peaks(&self) -> MemoryPeaks {
        let pool = &self.pool;
        MemoryPeaks {
            tensors: pool.peak_asked.load(Ordering::Relaxed),
            held: pool.peak_held.load(Ordering::Relaxed),
        }
    }

    /// Start `memory_peaks` afresh from what is in use and held now.
    pub fn reset_memory_peaks(&self) {
        let pool = &self.pool;
        for (peak, now) in [
            (&pool.peak_asked, &pool.asked),
            (&pool.peak_held, &pool.held),
        ] {
            peak.store(now.load(Ordering::Relaxed), Ordering::Relaxed);
        }
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
}
