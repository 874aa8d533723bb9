//! The fixed 2-D sin-cos position table of I-JEPA (no class token).
//!
//! For a grid of g x g patches and width D: the first D/2 channels encode the column
//! index and the last D/2 the row index; each half is [sin(pos * w), cos(pos * w)]
//! with w_i = 1 / 10000^(i / (D/4)), i < D/4.
//!
//! Explained in the tour: docs/tour/07-vit.md.

/// The table [g * g, dim], row-major over the grid.
pub fn sincos_2d(dim: usize, grid: usize) -> Vec<f32> {
    assert!(
        dim.is_multiple_of(4),
        "sin-cos table width {dim} must be a multiple of 4"
    );
    let quarter = dim / 4;
    let mut table = Vec::with_capacity(grid * grid * dim);
    for row in 0..grid {
        for col in 0..grid {
            for pos in [col, row] {
                let angles: Vec<f64> = (0..quarter)
                    .map(|i| pos as f64 / 10000f64.powf(i as f64 / quarter as f64))
                    .collect();
                table.extend(angles.iter().map(|a| a.sin() as f32));
                table.extend(angles.iter().map(|a| a.cos() as f32));
            }
        }
    }
    table
}
