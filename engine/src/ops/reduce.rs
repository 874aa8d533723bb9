//! Sums: over leading dims (bias gradients, broadcast backward), and to a scalar.

use crate::device::{Device, KernelDef, CPU_LOOP_BUDGET};
use crate::error::{shape_err, Result};
use crate::ops::elementwise::broadcast_forward;
use crate::shaders;
use crate::tape::record;
use crate::tensor::{numel, Tensor};

crate::kernel_params! {
    /// reduce.wgsl's `Params`.
    pub struct ReduceParams {
        rows: u32,
        cols: u32,
        first_cols: u32,
        chunk: u32,
    }
}

const SUM_COLUMNS: KernelDef<ReduceParams> = KernelDef::new(&shaders::REDUCE, "sum_columns", 1, 1);
const SUM_COLUMNS_PAIR: KernelDef<ReduceParams> =
    KernelDef::new(&shaders::REDUCE, "sum_columns_pair", 2, 2).bound_from(3);
/// The same two on vec4s, for rows of whole vec4s (columns counted in vec4s).
const SUM_COLUMNS_VEC4: KernelDef<ReduceParams> =
    KernelDef::new(&shaders::REDUCE, "sum_columns_vec4", 1, 1).bound_from(7);
const SUM_COLUMNS_PAIR_VEC4: KernelDef<ReduceParams> =
    KernelDef::new(&shaders::REDUCE, "sum_columns_pair_vec4", 2, 2).bound_from(9);
const SUM_ALL: KernelDef<ReduceParams> = KernelDef::new(&shaders::REDUCE, "sum_all", 1, 1);

/// Columns per workgroup of `sum_columns` (and its pair) and of LayerNorm's parameter
/// gradients: 64 on GPUs; 8 on CPU adapters, which sum all the rows in one workgroup
/// per column group (see [`rows_per_workgroup`]), so that a 64-wide gradient still
/// gives their threads 8 workgroups to share instead of one.
pub fn columns_per_workgroup(dev: &Device) -> usize {
    if dev.plans_as_cpu() {
        8
    } else {
        64
    }
}

/// The grid of `sum_columns` and of LayerNorm's parameter gradients over `cols` columns
/// in `chunks` chunks of rows: a workgroup per column group and chunk, numbered across
/// a grid that is 2-D when they outnumber the per-dimension limit (a broadcast's
/// gradient sums copies of millions of columns).
pub(crate) fn column_sums_grid(dev: &Device, cols: usize, chunks: usize) -> [u32; 3] {
    dev.grid_1d((cols.div_ceil(columns_per_workgroup(dev)) * chunks) as u32)
}

/// Rows per workgroup of a column sum on a GPU.
const CHUNK: usize = 256;
/// Invocations per workgroup of `sum_all` (a power of two).
const SUM_WORKGROUP: usize = 256;
/// Values per workgroup of `sum_all` on a GPU: 4 per invocation.
const SUM_ALL_PER_GROUP: usize = 4 * SUM_WORKGROUP;

/// Row lanes of a column sum's workgroup (`ROW_LANES` of column_sums.wgsl): the
/// invocations that share a column's rows.
pub(crate) const ROW_LANES: usize = 4;

/// The most rows one workgroup of a sum over `cols` columns takes, so that no
/// invocation loops past `CPU_LOOP_BUDGET` (lavapipe's loop limiter): 131,072 rows of
/// a column sum, 8,388,608 values of `sum_all`.
pub fn max_rows_per_workgroup(cols: usize) -> usize {
    let lanes = if cols == 1 { SUM_WORKGROUP } else { ROW_LANES };
    CPU_LOOP_BUDGET * lanes
}

fn overrides(dev: &Device) -> [(&'static str, f64); 3] {
    [
        ("COLS_PER_WG", columns_per_workgroup(dev) as f64),
        ("ROW_LANES", ROW_LANES as f64),
        ("SUM_WG", SUM_WORKGROUP as f64),
    ]
}

/// Rows per workgroup of a sum over `rows` rows of `cols` columns (`sum_columns` and its
/// pair, LayerNorm's parameter gradients; `sum_all` when `cols` is 1). On a GPU, a chunk
/// (`CHUNK` rows, `SUM_ALL_PER_GROUP` values): many workgroups share the rows and
/// their partial sums are reduced again. On a CPU adapter, all of them: its few cores
/// are kept busy by the column groups alone, and a second pass would cost one more
/// dispatch for every bias and LayerNorm gradient of the step. The kernels' launchers
/// cap every chunk, this one or a caller's, at `max_rows_per_workgroup`.
pub fn rows_per_workgroup(dev: &Device, rows: usize, cols: usize) -> usize {
    if dev.plans_as_cpu() {
        rows.max(1)
    } else if cols == 1 {
        SUM_ALL_PER_GROUP
    } else {
        CHUNK
    }
}

/// x viewed as [rows, inner] summed over rows: out [inner].
pub fn sum_leading_forward(x: &Tensor, inner: usize) -> Result<Tensor> {
    let rows = x.numel() / inner.max(1);
    sum_leading_forward_with(x, inner, rows_per_workgroup(x.device(), rows, inner))
}

/// `sum_leading_forward` with `chunk` rows per workgroup in each pass.
pub fn sum_leading_forward_with(x: &Tensor, inner: usize, chunk: usize) -> Result<Tensor> {
    let rows = leading_rows("sum_leading", x, inner)?;
    let dev = x.device();
    if rows == 0 {
        return Tensor::zeros(dev, &[inner]);
    }
    if inner > 1 {
        let [sum] = sum_columns_passes([(x, inner)], rows, chunk)?;
        return Ok(sum);
    }
    let mut current = x.clone();
    let mut values = rows;
    // Each pass shrinks the values by the chunk until one is left: a chunk of one value
    // would not shrink them, so it sums two.
    let chunk = chunk.min(max_rows_per_workgroup(1));
    while values > 1 {
        let chunk = chunk.clamp(2, values);
        let groups = values.div_ceil(chunk);
        let out = Tensor::empty(dev, &[groups])?;
        dev.dispatch(
            &SUM_ALL,
            &overrides(dev),
            &ReduceParams {
                rows: values as u32,
                cols: 1,
                first_cols: 1,
                chunk: chunk as u32,
            },
            &[current.buffer(), out.buffer()],
            dev.grid_1d(groups as u32),
        )?;
        current = out;
        values = groups;
    }
    current.view(&[1])
}

/// x viewed as [rows, inner] and y as [rows, inner_y] (the same rows), each summed over
/// its rows: ([inner], [inner_y]) in one dispatch per pass where `sum_leading_forward`
/// would make two (a split product's partial products and their row sums).
pub fn sum_leading_pair_forward(
    x: &Tensor,
    inner: usize,
    y: &Tensor,
    inner_y: usize,
) -> Result<(Tensor, Tensor)> {
    let rows = x.numel() / inner.max(1);
    let chunk = rows_per_workgroup(x.device(), rows, inner + inner_y);
    sum_leading_pair_forward_with(x, inner, y, inner_y, chunk)
}

/// `sum_leading_pair_forward` with `chunk` rows per workgroup in each pass.
pub fn sum_leading_pair_forward_with(
    x: &Tensor,
    inner: usize,
    y: &Tensor,
    inner_y: usize,
    chunk: usize,
) -> Result<(Tensor, Tensor)> {
    let rows = leading_rows("sum_leading_pair", x, inner)?;
    if leading_rows("sum_leading_pair", y, inner_y)? != rows {
        return shape_err(
            "sum_leading_pair",
            format!(
                "{:?} and {:?} have different rows of {inner} and {inner_y}",
                x.shape(),
                y.shape()
            ),
        );
    }
    let [sum_x, sum_y] = sum_columns_passes([(x, inner), (y, inner_y)], rows, chunk)?;
    Ok((sum_x, sum_y))
}

/// The rows of x viewed as [rows, inner].
fn leading_rows(op: &'static str, x: &Tensor, inner: usize) -> Result<usize> {
    if inner == 0 || !x.numel().is_multiple_of(inner) {
        return shape_err(op, format!("{:?} is not a multiple of {inner}", x.shape()));
    }
    Ok(x.numel() / inner)
}

/// Each of `parts` (a tensor viewed as [rows, its columns], every part `rows` long)
/// summed over its rows, `chunk` rows per workgroup, pass after pass until one row is
/// left: [columns] each (zeros for no rows). One part is `sum_columns`; two share
/// `sum_columns_pair`'s dispatches.
fn sum_columns_passes<const N: usize>(
    parts: [(&Tensor, usize); N],
    mut rows: usize,
    chunk: usize,
) -> Result<[Tensor; N]> {
    const { assert!(N == 1 || N == 2, "sum_columns takes one or two parts") };
    let dev = parts[0].0.device();
    let cols = parts.map(|(_, c)| c);
    // Rows of whole vec4s are summed four columns a load.
    let (kernel, width) = match (N, cols.iter().all(|c| c.is_multiple_of(4))) {
        (1, false) => (&SUM_COLUMNS, 1),
        (1, true) => (&SUM_COLUMNS_VEC4, 4),
        (_, false) => (&SUM_COLUMNS_PAIR, 1),
        (_, true) => (&SUM_COLUMNS_PAIR_VEC4, 4),
    };
    let total: usize = cols.iter().sum();
    let mut current: Vec<Tensor> = if rows == 0 {
        cols.iter()
            .map(|&c| Tensor::zeros(dev, &[1, c]))
            .collect::<Result<_>>()?
    } else {
        parts.iter().map(|(t, _)| (*t).clone()).collect()
    };
    // Each pass shrinks rows by the chunk until one row is left: a chunk of one row
    // would not shrink them, so it sums two.
    let chunk = chunk.min(max_rows_per_workgroup(total));
    while rows > 1 {
        let chunk = chunk.clamp(2, rows);
        let chunks = rows.div_ceil(chunk);
        let outs = cols
            .iter()
            .map(|&c| Tensor::empty(dev, &[chunks, c]))
            .collect::<Result<Vec<_>>>()?;
        let buffers: Vec<_> = current.iter().chain(&outs).map(Tensor::buffer).collect();
        dev.dispatch(
            kernel,
            &overrides(dev),
            &ReduceParams {
                rows: rows as u32,
                cols: (total / width) as u32,
                first_cols: (cols[0] / width) as u32,
                chunk: chunk as u32,
            },
            &buffers,
            column_sums_grid(dev, total / width, chunks),
        )?;
        current = outs;
        rows = chunks;
    }
    let sums = current
        .iter()
        .zip(cols)
        .map(|(t, c)| t.view(&[c]))
        .collect::<Result<Vec<_>>>()?;
    Ok(sums
        .try_into()
        .unwrap_or_else(|_| unreachable!("one sum per part")))
}

/// Sum `t` over the leading dims it has beyond `shape` (a suffix of t's shape, or a
/// one-element shape): the gradient of a broadcast operand.
pub fn sum_to_shape(t: &Tensor, shape: &[usize]) -> Result<Tensor> {
    let n = numel(shape);
    if t.numel() == n {
        return t.view(shape);
    }
    sum_leading_forward(t, n)?.view(shape)
}

/// Sum over leading dims: x [.., inner dims] -> [inner dims] where `inner` = number of
/// trailing dims kept. dx = dy broadcast back.
pub fn sum_leading(x: &Tensor, keep_dims: usize) -> Result<Tensor> {
    let rank = x.shape().len();
    if keep_dims > rank {
        return shape_err(
            "sum_leading",
            format!("cannot keep {keep_dims} dims of {:?}", x.shape()),
        );
    }
    let kept = x.shape()[rank - keep_dims..].to_vec();
    let y = sum_leading_forward(x, numel(&kept))?.view(&kept)?;
    let shape = x.shape().to_vec();
    record("sum_leading", &[x], &y, move |dy, _| {
        Ok(vec![Some(broadcast_forward(dy, &shape, 1.0)?)])
    });
    Ok(y)
}

/// Sum of all elements: [1].
pub fn sum(x: &Tensor) -> Result<Tensor> {
    scaled_total("sum", x, 1.0)
}

/// Mean of all elements: [1].
pub fn mean(x: &Tensor) -> Result<Tensor> {
    scaled_total("mean", x, 1.0 / x.numel() as f32)
}

fn scaled_total(op: &'static str, x: &Tensor, s: f32) -> Result<Tensor> {
    if x.numel() == 0 {
        return shape_err(op, "empty tensor");
    }
    let total = sum_leading_forward(x, 1)?;
    let y = if s == 1.0 {
        total
    } else {
        crate::ops::elementwise::scale_forward(&total, s)?
    };
    let shape = x.shape().to_vec();
    record(op, &[x], &y, move |dy, _| {
        Ok(vec![Some(broadcast_forward(dy, &shape, s)?)])
    });
    Ok(y)
}
