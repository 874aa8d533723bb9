//! Tensors: contiguous, row-major, shape on the host, storage on the GPU; f32, or f16
//! (two to a 32-bit word, low half first) for the operands of mixed-precision
//! products (see `crate::precision`). A `Tensor` is a cheap handle; clones share the
//! buffer. Reshapes share it too.
//! [`PackedTensors`] lays many tensors out in shared buffers, so that multi-tensor
//! kernels (AdamW, the EMA) update all of them in one dispatch.
//!
//! Explained in the tour: docs/tour/02-tensors-and-pool.md.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::device::{Binding, Device, PooledBuffer};
use crate::error::{shape_err, Error, Result};

pub type TensorId = u64;

/// How a tensor's elements are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    /// IEEE binary16, packed two to a 32-bit word (element 2i in the low half), as
    /// WGSL's `pack2x16float` writes and `unpack2x16float` reads them: any adapter
    /// stores and loads them, with or without `SHADER_F16`.
    F16,
}

impl DType {
    /// Bytes that `numel` elements take, rounded up to whole 32-bit words.
    pub fn bytes(self, numel: usize) -> u64 {
        match self {
            DType::F32 => (numel * 4) as u64,
            DType::F16 => (numel.div_ceil(2) * 4) as u64,
        }
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id() -> TensorId {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// Where a tensor's values live: a pooled buffer, from a byte offset on.
#[derive(Clone)]
struct Storage {
    buffer: Arc<PooledBuffer>,
    offset: u64,
}

struct TensorInner {
    id: TensorId,
    shape: Vec<usize>,
    dtype: DType,
    /// Swapped only by [`PackedTensors::adopt`], which moves parameters into packed
    /// buffers once, before training.
    storage: RwLock<Storage>,
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
        Self::empty_of(device, shape, DType::F32)
    }

    /// `empty` with elements of `dtype`.
    pub(crate) fn empty_of(device: &Arc<Device>, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let buffer = device
            .alloc(dtype.bytes(numel(shape)))
            .map_err(|e| match e {
                Error::TooLarge { bytes, limit, .. } => Error::TooLarge {
                    what: format!("a {shape:?} {dtype:?} tensor"),
                    bytes,
                    limit,
                },
                e => e,
            })?;
        let storage = Storage {
            buffer: Arc::new(buffer),
            offset: 0,
        };
        if device.poisons_buffers() {
            // The whole buffer, as f32 words: pool classes are whole vec4s.
            let words = (storage.buffer.raw().size() / 4) as usize;
            let whole = Self::wrap(device, &[words], DType::F32, storage.clone());
            crate::ops::elementwise::fill(&whole, f32::NAN)?;
        }
        Ok(Self::wrap(device, shape, dtype, storage))
    }

    fn wrap(device: &Arc<Device>, shape: &[usize], dtype: DType, storage: Storage) -> Tensor {
        Tensor {
            inner: Arc::new(TensorInner {
                id: next_id(),
                shape: shape.to_vec(),
                dtype,
                storage: RwLock::new(storage),
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
        device.upload(&t.buffer(), bytemuck::cast_slice(data));
        Ok(t)
    }

    /// A tensor filled with one value (on the GPU, no upload).
    pub fn full(device: &Arc<Device>, shape: &[usize], value: f32) -> Result<Tensor> {
        let t = Self::empty(device, shape)?;
        crate::ops::elementwise::fill(&t, value)?;
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
            .upload(&self.buffer(), bytemuck::cast_slice(data));
        Ok(())
    }

    /// Overwrite the contents in place with those of `src` (copied on the GPU).
    pub fn copy_from(&self, src: &Tensor) -> Result<()> {
        if src.dtype() != self.dtype() {
            return shape_err(
                "copy_from",
                format!(
                    "source holds {:?}, destination {:?}",
                    src.dtype(),
                    self.dtype()
                ),
            );
        }
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
        let bytes = self.dtype().bytes(self.numel());
        self.device().copy(&src.binding(), &self.binding(), bytes);
        Ok(())
    }

    /// Rows `start..start + len` of the first dim in a new tensor of the same type, by a
    /// buffer copy (no kernel). Rows start on whole 32-bit words: any f32 row, an f16 one
    /// where `start` times the row's length is even.
    pub(crate) fn copy_rows(&self, start: usize, len: usize) -> Result<Tensor> {
        let shape = self.shape();
        let row = shape.iter().skip(1).product::<usize>();
        let first = start * row;
        let misaligned = self.dtype() == DType::F16 && !first.is_multiple_of(2);
        if shape.is_empty() || start + len > shape[0] || misaligned {
            return shape_err(
                "copy_rows",
                format!(
                    "rows {start}..{} of {shape:?} in {:?}: past the end, or not on a 32-bit word",
                    start + len,
                    self.dtype()
                ),
            );
        }
        let mut out_shape = shape.to_vec();
        out_shape[0] = len;
        let out = Tensor::empty_of(self.device(), &out_shape, self.dtype())?;
        let Storage { buffer, offset } = self.storage();
        // An f16 tensor's words hold two values; its storage ends on a whole word.
        let bytes = self.dtype().bytes(len * row);
        let from = Binding::range(buffer.raw(), offset + self.dtype().bytes(first), bytes);
        self.device().copy(&from, &out.binding(), bytes);
        Ok(out)
    }

    /// Read the values back to the host, f16 ones widened exactly (submits pending
    /// work and waits).
    pub fn to_vec(&self) -> Vec<f32> {
        Self::to_vecs(&[self]).remove(0)
    }

    /// `to_vec` of each tensor (all on one device) with one submit and one wait.
    pub fn to_vecs(tensors: &[&Tensor]) -> Vec<Vec<f32>> {
        let Some(first) = tensors.first() else {
            return Vec::new();
        };
        let bindings: Vec<Binding> = tensors.iter().map(|t| t.binding()).collect();
        let srcs: Vec<(&Binding, u64)> = bindings
            .iter()
            .zip(tensors)
            .map(|(b, t)| (b, t.dtype().bytes(t.numel())))
            .collect();
        let bytes = first.device().download(&srcs);
        tensors
            .iter()
            .zip(bytes)
            .map(|(t, bytes)| match t.dtype() {
                DType::F32 => bytemuck::cast_slice(&bytes).to_vec(),
                DType::F16 => bytemuck::cast_slice::<u8, u16>(&bytes)[..t.numel()]
                    .iter()
                    .map(|&bits| half::f16::from_bits(bits).to_f32())
                    .collect(),
            })
            .collect()
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
        let t = Self::wrap(self.device(), self.shape(), self.dtype(), self.storage());
        t.inner.requires_grad.store(true, Ordering::Relaxed);
        t
    }

    /// A new handle on the same storage that the tape does not track.
    pub fn detach(&self) -> Tensor {
        Self::wrap(self.device(), self.shape(), self.dtype(), self.storage())
    }

    /// Same storage, new shape (no copy, untracked; `ops::reshape` is the tracked one).
    pub(crate) fn view(&self, shape: &[usize]) -> Result<Tensor> {
        if numel(shape) != self.numel() {
            return shape_err(
                "reshape",
                format!("cannot view {:?} as {shape:?}", self.shape()),
            );
        }
        Ok(Self::wrap(
            self.device(),
            shape,
            self.dtype(),
            self.storage(),
        ))
    }

    /// The first elements of the storage in a shape of at most as many elements (no
    /// copy, untracked): kernels index only what the shape covers.
    pub(crate) fn prefix_view(&self, shape: &[usize]) -> Result<Tensor> {
        self.view_from(0, shape)
    }

    /// Elements `start..` of the storage in a shape of at most as many as are left (no
    /// copy, untracked), `start` at an offset the adapter can bind.
    pub(crate) fn view_from(&self, start: usize, shape: &[usize]) -> Result<Tensor> {
        let dtype = self.dtype();
        let offset = match dtype {
            DType::F32 => 4 * start as u64,
            DType::F16 => 2 * start as u64,
        };
        if start + numel(shape) > self.numel()
            || !offset.is_multiple_of(self.device().storage_offset_alignment())
        {
            return shape_err(
                "view",
                format!(
                    "{shape:?} from element {start} of {:?}: past its end, or not at a multiple of {} bytes",
                    self.shape(),
                    self.device().storage_offset_alignment()
                ),
            );
        }
        let mut storage = self.storage();
        storage.offset += offset;
        Ok(Self::wrap(self.device(), shape, dtype, storage))
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

    pub fn dtype(&self) -> DType {
        self.inner.dtype
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

    fn storage(&self) -> Storage {
        self.inner.storage.read().unwrap().clone()
    }

    /// The storage an f32 kernel binds for this tensor: its bytes, rounded up to a
    /// vec4. Only the kernels that read f16 (`binding`) take f16 tensors; the others
    /// are never handed one (the ops that reach them take f32 operands).
    pub(crate) fn buffer(&self) -> Binding {
        assert_eq!(
            self.dtype(),
            DType::F32,
            "an f16 tensor {:?} reached a kernel that reads f32; only casts and products take f16 operands",
            self.shape()
        );
        self.binding()
    }

    /// The storage a kernel binds for this tensor, whatever its element type.
    pub(crate) fn binding(&self) -> Binding {
        let Storage { buffer, offset } = self.storage();
        Binding::range(buffer.raw(), offset, self.dtype().bytes(self.numel()))
    }

    /// Whether two handles share a buffer (a kernel may not read and write one buffer).
    pub(crate) fn same_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.storage().buffer, &other.storage().buffer)
    }

    /// Whether two handles are the same elements: one buffer and offset, one shape and
    /// type.
    pub(crate) fn same_elements(&self, other: &Tensor) -> bool {
        let (a, b) = (self.storage(), other.storage());
        Arc::ptr_eq(&a.buffer, &b.buffer)
            && a.offset == b.offset
            && self.shape() == other.shape()
            && self.dtype() == other.dtype()
    }
}

/// Tensors laid out one after another in shared buffers ("buckets"), each at an
/// offset the adapter can bind, with zeros between them. A multi-tensor kernel runs
/// once per bucket over the bucket's flat view instead of once per tensor; each member
/// stays an ordinary tensor (a view into its bucket) for every other kernel.
pub struct PackedTensors {
    /// One flat tensor [len] per buffer, covering its members and the padding.
    pub buckets: Vec<Tensor>,
    /// The members in the order given, each a view into its bucket.
    pub members: Vec<Tensor>,
    /// (bucket, offset in elements) of each member.
    pub placements: Vec<(usize, usize)>,
}

impl PackedTensors {
    /// Zero-filled packed storage for tensors of these shapes.
    pub fn zeros(device: &Arc<Device>, shapes: &[&[usize]]) -> Result<PackedTensors> {
        // Members start at offsets the adapter can bind, and on a vec4, in f32 and in
        // the f16 copies `to_f16` makes (half the bytes per element).
        let align = (device.storage_offset_alignment() / 2).max(4) as usize;
        let limit = (device.packing_limit() / 4) as usize;
        let (placements, lengths) = pack_layout(shapes, align, limit);
        let buckets = lengths
            .iter()
            .map(|&len| Tensor::zeros(device, &[len.next_multiple_of(4)]))
            .collect::<Result<Vec<_>>>()?;
        let members = shapes
            .iter()
            .zip(&placements)
            .map(|(shape, &(bucket, start))| {
                let mut storage = buckets[bucket].storage();
                storage.offset = (start * 4) as u64;
                Tensor::wrap(device, shape, DType::F32, storage)
            })
            .collect();
        Ok(PackedTensors {
            buckets,
            members,
            placements,
        })
    }

    /// Every member rounded to f16 with one cast per bucket: views into f16 copies of
    /// the buckets, in the members' order (the mixed-precision forward's weights).
    pub fn to_f16(&self) -> Result<Vec<Tensor>> {
        let halves = self
            .buckets
            .iter()
            .map(|bucket| crate::ops::cast::cast_forward(bucket, DType::F16))
            .collect::<Result<Vec<_>>>()?;
        Ok(self
            .members
            .iter()
            .zip(&self.placements)
            .map(|(member, &(bucket, start))| {
                let mut storage = halves[bucket].storage();
                storage.offset += (start * 2) as u64;
                Tensor::wrap(member.device(), member.shape(), DType::F16, storage)
            })
            .collect())
    }

    /// Move `tensors` into packed storage: their values are copied there (on the GPU)
    /// and every handle on them (clones included) now reads and writes the packed
    /// copy, as a model's parameters must for multi-tensor updates. Handles made
    /// earlier by `detach` or a reshape keep the old storage.
    pub fn adopt(tensors: &[Tensor]) -> Result<PackedTensors> {
        let Some(first) = tensors.first() else {
            return shape_err("pack", "no tensors to pack");
        };
        let shapes: Vec<&[usize]> = tensors.iter().map(|t| t.shape()).collect();
        let packed = PackedTensors::zeros(first.device(), &shapes)?;
        for (t, member) in tensors.iter().zip(&packed.members) {
            member.copy_from(t)?;
            *t.inner.storage.write().unwrap() = member.storage();
        }
        Ok(packed)
    }
}

/// Where packed tensors of `shapes` go: (bucket, offset) of each, every offset a
/// multiple of `align` elements, and each bucket's length, at most `limit` elements
/// unless one tensor alone is longer (it then has a bucket of its own).
fn pack_layout(
    shapes: &[&[usize]],
    align: usize,
    limit: usize,
) -> (Vec<(usize, usize)>, Vec<usize>) {
    let mut placements = Vec::with_capacity(shapes.len());
    let mut lengths = vec![0usize];
    for shape in shapes {
        let n = numel(shape);
        let start = lengths.last().unwrap().next_multiple_of(align);
        if start > 0 && start + n > limit {
            lengths.push(0);
        }
        let bucket = lengths.len() - 1;
        let start = lengths[bucket].next_multiple_of(align);
        placements.push((bucket, start));
        lengths[bucket] = start + n;
    }
    (placements, lengths)
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
        device.upload(
            &Binding::range(buffer.raw(), 0, (host.len() * 4) as u64),
            bytemuck::cast_slice(&host),
        );
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

    pub(crate) fn buffer(&self) -> Binding {
        Binding::range(self.buffer.raw(), 0, (self.host.len() * 4) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::pack_layout;

    #[test]
    fn packing_aligns_every_member_and_splits_buckets_at_the_limit() {
        let shapes: [&[usize]; 4] = [&[5], &[2, 3], &[7], &[40]];
        let (placements, lengths) = pack_layout(&shapes, 4, 1 << 20);
        assert_eq!(placements, [(0, 0), (0, 8), (0, 16), (0, 24)]);
        assert_eq!(lengths, [64]);
        // With room for 20 elements: [5, 6] fit (0..14), 7 starts a new bucket, and the
        // 40-element tensor, longer than the limit, gets one of its own.
        let (placements, lengths) = pack_layout(&shapes, 4, 20);
        assert_eq!(placements, [(0, 0), (0, 8), (1, 0), (2, 0)]);
        assert_eq!(lengths, [14, 7, 40]);
    }
}
