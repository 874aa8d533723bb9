//! Layout ops: reshape (a view), permute, patchify, concat, narrow, repeat along batch.

use crate::device::KernelDef;
use crate::error::{shape_err, Result};
use crate::ops::elementwise::broadcast_forward;
use crate::ops::reduce::sum_leading_forward;
use crate::ops::{by_width, grid_for, WG_OVERRIDES};
use crate::shaders;
use crate::tape::record;
use crate::tensor::{numel, Tensor};

crate::kernel_params! {
    /// layout.wgsl's `Params`: the output's dims and the input's strides, 6 of each,
    /// padded at the front with dims of 1.
    pub struct PermuteParams {
        n: u32,
        _pad: [u32; 3],
        out_dims: [[u32; 4]; 2],
        in_strides: [[u32; 4]; 2],
    }
}

crate::kernel_params! {
    /// copy.wgsl's `Params`, in elements (or vec4s) of the block copied.
    pub struct CopyParams {
        /// Elements copied: outer * len * inner.
        n: u32,
        len_inner: u32,
        src_row: u32,
        dst_row: u32,
        src_offset: u32,
        dst_offset: u32,
    }
}

const PERMUTE: KernelDef<PermuteParams> = KernelDef::new(&shaders::LAYOUT, "permute", 1, 1);
/// The same for a permutation that keeps a last dim that is a multiple of 4 in place.
const PERMUTE_VEC4: KernelDef<PermuteParams> =
    KernelDef::new(&shaders::LAYOUT, "permute_vec4", 1, 1).bound_from(3);
const COPY_BLOCK: KernelDef<CopyParams> = KernelDef::new(&shaders::COPY, "copy_block", 1, 1);
/// The same when the copied rows are a multiple of 4 floats long.
const COPY_BLOCK_VEC4: KernelDef<CopyParams> =
    KernelDef::new(&shaders::COPY, "copy_block_vec4", 1, 1).bound_from(3);

const MAX_RANK: usize = 6;

/// Same data, new shape (no copy); the gradient is reshaped back.
pub fn reshape(x: &Tensor, shape: &[usize]) -> Result<Tensor> {
    let y = x.view(shape)?;
    let in_shape = x.shape().to_vec();
    record("reshape", &[x], &y, move |dy, _| {
        Ok(vec![Some(dy.view(&in_shape)?)])
    });
    Ok(y)
}

/// out = x.permute(perm): out's dim i is x's dim perm[i]. Rank at most 6.
pub fn permute_forward(x: &Tensor, perm: &[usize]) -> Result<Tensor> {
    let shape = x.shape();
    let rank = shape.len();
    let mut seen = [false; MAX_RANK];
    if rank > MAX_RANK
        || perm.len() != rank
        || perm
            .iter()
            .any(|&d| d >= rank || std::mem::replace(&mut seen[d], true))
    {
        return shape_err(
            "permute",
            format!("{perm:?} is not a permutation of the dims of {shape:?} (rank <= {MAX_RANK})"),
        );
    }
    let mut strides = vec![1usize; rank];
    for d in (0..rank.saturating_sub(1)).rev() {
        strides[d] = strides[d + 1] * shape[d + 1];
    }
    let out_shape: Vec<usize> = perm.iter().map(|&d| shape[d]).collect();
    let dev = x.device();
    let out = Tensor::empty(dev, &out_shape)?;
    // With the last dim kept in place and a multiple of 4, count in vec4s: the last
    // dim and every other stride shrink by 4 (the last stride stays one vec4).
    let vec4 = rank > 0 && perm[rank - 1] == rank - 1 && shape[rank - 1].is_multiple_of(4);
    let unit = if vec4 { 4 } else { 1 };
    let mut out_dims = out_shape;
    if vec4 {
        out_dims[rank - 1] /= 4;
        for stride in &mut strides[..rank - 1] {
            *stride /= 4;
        }
    }
    let n = x.numel() / unit;
    let mut params = PermuteParams {
        n: n as u32,
        ..PermuteParams::default()
    };
    for i in 0..MAX_RANK {
        let j = (i + rank) as isize - MAX_RANK as isize;
        let (size, stride) = if j < 0 {
            (1, 0)
        } else {
            (out_dims[j as usize], strides[perm[j as usize]])
        };
        params.out_dims[i / 4][i % 4] = size as u32;
        params.in_strides[i / 4][i % 4] = stride as u32;
    }
    dev.dispatch(
        if vec4 { &PERMUTE_VEC4 } else { &PERMUTE },
        WG_OVERRIDES,
        &params,
        &[x.buffer(), out.buffer()],
        grid_for(dev, n),
    )?;
    Ok(out)
}

/// Differentiable permute; the gradient is permuted back by the inverse permutation.
pub fn permute(x: &Tensor, perm: &[usize]) -> Result<Tensor> {
    let y = permute_forward(x, perm)?;
    let mut inverse = vec![0; perm.len()];
    for (i, &d) in perm.iter().enumerate() {
        inverse[d] = i;
    }
    record("permute", &[x], &y, move |dy, _| {
        Ok(vec![Some(permute_forward(dy, &inverse)?)])
    });
    Ok(y)
}

/// Images [B, C, H, W] -> patches [B, (H/p)*(W/p), C*p*p], patches in row-major grid
/// order and each patch flattened as (c, kh, kw): the layout of a Conv2d weight
/// [D, C, p, p], so Conv2d(stride = kernel = p) is `linear(patchify(x), w.view(D, C*p*p))`.
pub fn patchify(images: &Tensor, patch: usize) -> Result<Tensor> {
    let s = images.shape();
    if s.len() != 4 || patch == 0 || !s[2].is_multiple_of(patch) || !s[3].is_multiple_of(patch) {
        return shape_err("patchify", format!("images {s:?} must be [B, C, H, W] with H and W divisible by the patch size {patch}"));
    }
    let (b, c, gh, gw) = (s[0], s[1], s[2] / patch, s[3] / patch);
    let x = reshape(images, &[b, c, gh, patch, gw, patch])?;
    let x = permute(&x, &[0, 2, 4, 1, 3, 5])?;
    reshape(&x, &[b, gh * gw, c * patch * patch])
}

/// Copy rows [src_start, src_start + len) of `src` along `axis` into rows
/// [dst_start, ..) of `dst` (both viewed as [outer, rows, inner]).
fn copy_block(
    src: &Tensor,
    src_start: usize,
    dst: &Tensor,
    dst_start: usize,
    len: usize,
    axis: usize,
) -> Result<()> {
    let outer: usize = src.shape()[..axis].iter().product();
    let inner: usize = src.shape()[axis + 1..].iter().product();
    // Every size below is a multiple of `inner`: count in vec4s when it is one of 4.
    let (def, width) = by_width(inner, &COPY_BLOCK, &COPY_BLOCK_VEC4);
    let inner = inner / width;
    let n = outer * len * inner;
    let dev = src.device();
    dev.dispatch(
        def,
        WG_OVERRIDES,
        &CopyParams {
            n: n as u32,
            len_inner: (len * inner) as u32,
            src_row: (src.shape()[axis] * inner) as u32,
            dst_row: (dst.shape()[axis] * inner) as u32,
            src_offset: (src_start * inner) as u32,
            dst_offset: (dst_start * inner) as u32,
        },
        &[src.buffer(), dst.buffer()],
        grid_for(dev, n),
    )
}

/// `x` restricted to rows [start, start + len) along `axis`.
pub fn narrow_forward(x: &Tensor, axis: usize, start: usize, len: usize) -> Result<Tensor> {
    let s = x.shape();
    if axis >= s.len() || start + len > s[axis] {
        return shape_err(
            "narrow",
            format!(
                "rows {start}..{} of axis {axis} do not fit in {s:?}",
                start + len
            ),
        );
    }
    let mut out_shape = s.to_vec();
    out_shape[axis] = len;
    let out = Tensor::empty(x.device(), &out_shape)?;
    copy_block(x, start, &out, 0, len, axis)?;
    Ok(out)
}

/// Differentiable narrow: the gradient is dy placed in zeros of x's shape.
pub fn narrow(x: &Tensor, axis: usize, start: usize, len: usize) -> Result<Tensor> {
    let y = narrow_forward(x, axis, start, len)?;
    let shape = x.shape().to_vec();
    record("narrow", &[x], &y, move |dy, _| {
        let dx = Tensor::zeros(dy.device(), &shape)?;
        copy_block(dy, 0, &dx, start, len, axis)?;
        Ok(vec![Some(dx)])
    });
    Ok(y)
}

/// Concatenate along `axis`; all other dims must agree.
pub fn concat(parts: &[&Tensor], axis: usize) -> Result<Tensor> {
    let Some(first) = parts.first() else {
        return shape_err("concat", "no tensors to concatenate");
    };
    let s0 = first.shape();
    if axis >= s0.len() {
        return shape_err("concat", format!("axis {axis} out of range for {s0:?}"));
    }
    for p in parts {
        let s = p.shape();
        if s.len() != s0.len()
            || s.iter()
                .zip(s0)
                .enumerate()
                .any(|(d, (a, b))| d != axis && a != b)
        {
            return shape_err(
                "concat",
                format!("{s:?} does not match {s0:?} outside axis {axis}"),
            );
        }
    }
    let sizes: Vec<usize> = parts.iter().map(|p| p.shape()[axis]).collect();
    let mut out_shape = s0.to_vec();
    out_shape[axis] = sizes.iter().sum();
    let out = Tensor::empty(first.device(), &out_shape)?;
    let mut start = 0;
    for (p, &len) in parts.iter().zip(&sizes) {
        copy_block(p, 0, &out, start, len, axis)?;
        start += len;
    }
    record("concat", parts, &out, move |dy, needs| {
        let mut start = 0;
        let mut grads = Vec::new();
        for (&len, &need) in sizes.iter().zip(needs) {
            grads.push(if need {
                Some(narrow_forward(dy, axis, start, len)?)
            } else {
                None
            });
            start += len;
        }
        Ok(grads)
    });
    Ok(out)
}

/// [B, ..] -> [times * B, ..] with row j * B + b = x[b] (torch `x.repeat(times, 1, ..)`).
/// The gradient sums the copies.
pub fn repeat_batch(x: &Tensor, times: usize) -> Result<Tensor> {
    let s = x.shape();
    if s.is_empty() || times == 0 {
        return shape_err("repeat_batch", format!("cannot repeat {s:?} {times} times"));
    }
    let mut out_shape = s.to_vec();
    out_shape[0] *= times;
    let flat = broadcast_forward(&x.view(&[x.numel()])?, &[times, x.numel()], 1.0)?;
    let y = flat.view(&out_shape)?;
    let shape = s.to_vec();
    record("repeat_batch", &[x], &y, move |dy, _| {
        Ok(vec![Some(
            sum_leading_forward(dy, numel(&shape))?.view(&shape)?,
        )])
    });
    Ok(y)
}
