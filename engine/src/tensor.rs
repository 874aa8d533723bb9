//! Tensors: f32, contiguous, row-major, shape on the host, storage on the GPU.
//! A `Tensor` is a cheap handle; clones share the buffer. Reshapes share it too.
//!
//! Explained in the tour: docs/tour/02-tensors-and-pool.md.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crate::device::{Device, PooledBuffer};
use crate::error::{shape_err, Error, Result};

pub type TensorId = u64;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id() -> TensorId {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

struct TensorInner {
    id: TensorId,
    shape: Vec<usize>,
    buffer: Arc<PooledBuffer>,
    device: Arc<Device>,
    requires_grad: AtomicBool,
}

#[derive(Clone)]
pub struct Tensor {
    inner: Arc<TensorInner>,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor#{}{:?}", self.id(), self.shape())
    }
}

pub fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

impl Tensor {
    /// An output tensor whose contents the next kernel writes in full.
    pub(crate) fn empty(device: &Arc<Device>, shape: &[usize]) -> Result<Tensor> {
        let buffer = device.alloc((numel(shape) * 4) as u64)?;
        Ok(Self::wrap(device, shape, Arc::new(buffer)))
    }

    fn wrap(device: &Arc<Device>, shape: &[usize], buffer: Arc<PooledBuffer>) -> Tensor {
        Tensor {
            inner: Arc::new(TensorInner {
                id: next_id(),
                shape: shape.to_vec(),
                buffer,
                device: device.clone(),
                requires_grad: AtomicBool::new(false),
            }),
        }
    }

    /// Upload host data of the given shape.
    pub fn from_slice(device: &Arc<Device>, shape: &[usize], data: &[f32]) -> Result<Tensor> {
        if numel(shape) != data.len() {
            return shape_err(
                "from_slice",
                format!(
                    "shape {shape:?} holds {} values, data has {}",
                    numel(shape),
                    data.len()
                ),
            );
        }
        let t = Self::empty(device, shape)?;
        device.upload(t.buffer(), bytemuck::cast_slice(data));
        Ok(t)
    }

    /// A tensor filled with one value (on the GPU, no upload).
    pub fn full(device: &Arc<Device>, shape: &[usize], value: f32) -> Result<Tensor> {
        let t = Self::empty(device, shape)?;
        crate::ops::elementwise::fill(&t, value);
        Ok(t)
    }

    pub fn zeros(device: &Arc<Device>, shape: &[usize]) -> Result<Tensor> {
        Self::full(device, shape, 0.0)
    }

    /// Overwrite the contents in place (same storage, so every handle sees the new
    /// values); `data` must hold exactly `numel` values.
    pub fn write(&self, data: &[f32]) -> Result<()> {
        if data.len() != self.numel() {
            return shape_err(
                "write",
                format!(
                    "tensor {:?} holds {} values, data has {}",
                    self.shape(),
                    self.numel(),
                    data.len()
                ),
            );
        }
        self.device()
            .upload(self.buffer(), bytemuck::cast_slice(data));
        Ok(())
    }

    /// Overwrite the contents in place with those of `src` (copied on the GPU).
    pub fn copy_from(&self, src: &Tensor) -> Result<()> {
        if src.shape() != self.shape() {
            return shape_err(
                "copy_from",
                format!(
                    "source {:?} does not match destination {:?}",
                    src.shape(),
                    self.shape()
                ),
            );
        }
        self.device()
            .copy(src.buffer(), self.buffer(), (self.numel() * 4) as u64);
        Ok(())
    }

    /// Read the values back to the host (submits pending work and waits).
    pub fn to_vec(&self) -> Vec<f32> {
        let bytes = self
            .device()
            .download(self.buffer(), (self.numel() * 4) as u64);
        bytemuck::cast_slice(&bytes).to_vec()
    }

    /// The single value of a one-element tensor.
    pub fn item(&self) -> f32 {
        assert_eq!(
            self.numel(),
            1,
            "item() of a tensor of shape {:?}",
            self.shape()
        );
        self.to_vec()[0]
    }

    /// A new leaf handle on the same storage that the tape tracks: gradients of a
    /// later `backward` are reported for it.
    pub fn requires_grad(&self) -> Tensor {
        let t = Self::wrap(self.device(), self.shape(), self.inner.buffer.clone());
        t.inner.requires_grad.store(true, Ordering::Relaxed);
        t
    }

    /// A new handle on the same storage that the tape does not track.
    pub fn detach(&self) -> Tensor {
        Self::wrap(self.device(), self.shape(), self.inner.buffer.clone())
    }

    /// Same storage, new shape (no copy, untracked; `ops::reshape` is the tracked one).
    pub(crate) fn view(&self, shape: &[usize]) -> Result<Tensor> {
        if numel(shape) != self.numel() {
            return shape_err(
                "reshape",
                format!("cannot view {:?} as {shape:?}", self.shape()),
            );
        }
        Ok(Self::wrap(self.device(), shape, self.inner.buffer.clone()))
    }

    /// The first elements of the storage in a shape of at most as many elements (no
    /// copy, untracked): kernels index only what the shape covers.
    pub(crate) fn prefix_view(&self, shape: &[usize]) -> Result<Tensor> {
        if numel(shape) > self.numel() {
            return shape_err(
                "prefix view",
                format!("{shape:?} holds more than {:?}", self.shape()),
            );
        }
        Ok(Self::wrap(self.device(), shape, self.inner.buffer.clone()))
    }

    pub(crate) fn mark_requires_grad(&self) {
        self.inner.requires_grad.store(true, Ordering::Relaxed);
    }

    pub fn tracks_grad(&self) -> bool {
        self.inner.requires_grad.load(Ordering::Relaxed)
    }

    pub fn id(&self) -> TensorId {
        self.inner.id
    }

    pub fn shape(&self) -> &[usize] {
        &self.inner.shape
    }

    pub fn numel(&self) -> usize {
        numel(&self.inner.shape)
    }

    /// The size of the last dimension (1 for a scalar).
    pub fn last_dim(&self) -> usize {
        self.shape().last().copied().unwrap_or(1)
    }

    pub fn device(&self) -> &Arc<Device> {
        &self.inner.device
    }

    pub(crate) fn buffer(&self) -> &wgpu::Buffer {
        self.inner.buffer.raw()
    }

    /// Whether two handles share storage (a kernel may not read and write one buffer).
    pub(crate) fn same_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.inner.buffer, &other.inner.buffer)
    }
}

/// Integer indices (rows of patch indices, class labels), kept on the host as well so
/// that they are validated before any dispatch and so that backward passes can build
/// inverse maps without a readback.
#[derive(Clone)]
pub struct Indices {
    shape: Vec<usize>,
    host: Arc<Vec<u32>>,
    buffer: Arc<PooledBuffer>,
}

impl std::fmt::Debug for Indices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Indices{:?}", self.shape)
    }
}

impl Indices {
    pub fn new(device: &Arc<Device>, shape: &[usize], values: &[i64]) -> Result<Indices> {
        if numel(shape) != values.len() {
            return shape_err(
                "indices",
                format!(
                    "shape {shape:?} holds {} values, got {}",
                    numel(shape),
                    values.len()
                ),
            );
        }
        let mut host = Vec::with_capacity(values.len());
        for (position, &v) in values.iter().enumerate() {
            if v < 0 || v > u32::MAX as i64 {
                return Err(Error::Index {
                    op: "indices",
                    index: v,
                    position,
                    size: u32::MAX as usize,
                });
            }
            host.push(v as u32);
        }
        Self::from_u32(device, shape, host)
    }

    pub(crate) fn from_u32(
        device: &Arc<Device>,
        shape: &[usize],
        host: Vec<u32>,
    ) -> Result<Indices> {
        let buffer = device.alloc((host.len() * 4) as u64)?;
        device.upload(buffer.raw(), bytemuck::cast_slice(&host));
        Ok(Indices {
            shape: shape.to_vec(),
            host: Arc::new(host),
            buffer: Arc::new(buffer),
        })
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn values(&self) -> &[u32] {
        &self.host
    }

    /// Check every index is below `size`; the error names the first that is not.
    pub(crate) fn check_below(&self, op: &'static str, size: usize) -> Result<()> {
        match self.host.iter().position(|&v| v as usize >= size) {
            Some(position) => Err(Error::Index {
                op,
                index: self.host[position] as i64,
                position,
                size,
            }),
            None => Ok(()),
        }
    }

    pub(crate) fn buffer(&self) -> &wgpu::Buffer {
        self.buffer.raw()
    }
}
