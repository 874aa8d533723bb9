//! The data flow of one I-JEPA step with the tensor shapes of the `fmnist-cpu` preset,
//! drawn as SVG for the tour (docs/tour/step.svg). Every shape is read from a tensor
//! this program computes, stage by stage, from the model's own modules; the staged
//! targets and predictions are checked equal to `IJepa::forward`'s, so the drawing
//! follows the model. tests/tour.rs redraws it and compares it with the committed file.
//!
//! Run: cargo run --release --example step_diagram [out.svg]

use std::fmt::Write;
use std::path::PathBuf;

use engine::cpu::max_abs_diff;
use engine::{no_grad, ops, Device, Tensor};
use model::ijepa::TARGET_LAYER_NORM_EPS;
use model::vit::VisionTransformer;
use model::{IJepa, Masks};
use train::config::PretrainConfig;
use train::multiblock::MaskCollator;
use train::synthetic::synthetic;

/// One box of the drawing: what happens, and the shape of what comes out.
struct Stage {
    what: String,
    shape: Vec<usize>,
}

fn stage(what: impl Into<String>, t: &Tensor) -> Stage {
    Stage {
        what: what.into(),
        shape: t.shape().to_vec(),
    }
}

/// images -> patch embeddings plus positions [B, N, D], as the encoder begins.
fn embed(vit: &VisionTransformer, images: &Tensor) -> anyhow::Result<Tensor> {
    let (n, d) = (vit.config.num_patches(), vit.config.embed_dim);
    Ok(ops::add(
        &vit.patch_embed.forward(images)?,
        &ops::reshape(&vit.pos_embed, &[n, d])?,
    )?)
}

/// The encoder's blocks and final LayerNorm.
fn blocks(vit: &VisionTransformer, mut x: Tensor) -> anyhow::Result<Tensor> {
    for block in &vit.blocks {
        x = block.forward(&x)?;
    }
    vit.norm.forward(&x)
}

/// Both paths of one step, stage by stage: (target path, context path, loss).
fn trace(
    model: &IJepa,
    images: &Tensor,
    masks: &Masks,
) -> anyhow::Result<(Vec<Stage>, Vec<Stage>, Tensor)> {
    let c = &model.config;
    let (depth, pdepth) = (c.encoder.depth, c.predictor.depth);
    let mut target_path = vec![];
    let targets = no_grad(|| -> anyhow::Result<Tensor> {
        let x = embed(&model.target_encoder, images)?;
        target_path.push(stage("target encoder: patch embed + sin-cos positions", &x));
        let x = blocks(&model.target_encoder, x)?;
        target_path.push(stage(
            format!("{depth} blocks + LayerNorm (all patches)"),
            &x,
        ));
        let x = ops::layernorm(&x, None, TARGET_LAYER_NORM_EPS)?;
        target_path.push(stage("layer_norm without parameters", &x));
        let x = ops::gather_rows(&x, &masks.target_rows)?;
        target_path.push(stage("gather the 4 target blocks: targets", &x));
        Ok(x)
    })?;

    let mut context_path = vec![];
    let x = embed(&model.encoder, images)?;
    context_path.push(stage("context encoder: patch embed + positions", &x));
    let x = ops::gather_rows(&x, &masks.context)?;
    context_path.push(stage("gather the context block (targets removed)", &x));
    let context = blocks(&model.encoder, x)?;
    context_path.push(stage(
        format!("{depth} blocks + LayerNorm (context only)"),
        &context,
    ));

    let p = &model.predictor;
    let (n, dp) = (c.encoder.num_patches(), c.predictor.embed_dim);
    let table = ops::reshape(&p.predictor_pos_embed, &[1, n, dp])?;
    let x = p.predictor_embed.forward(&context)?;
    let x = ops::add(&x, &ops::gather_rows(&table, &masks.context)?)?;
    context_path.push(stage("predictor_embed to Dp + positions", &x));
    let token = ops::reshape(&p.mask_token, &[dp])?;
    let mask_tokens = ops::add(&ops::gather_rows(&table, &masks.target_rows)?, &token)?;
    let mut x = ops::concat(&[&ops::repeat_batch(&x, masks.npred)?, &mask_tokens], 1)?;
    context_path.push(stage(
        "repeat per target, append mask tokens + positions",
        &x,
    ));
    for block in &p.predictor_blocks {
        x = block.forward(&x)?;
    }
    let x = p.predictor_norm.forward(&x)?;
    context_path.push(stage(format!("predictor: {pdepth} blocks + LayerNorm"), &x));
    let (kc, kt) = (masks.context.shape()[1], masks.target.shape()[1]);
    let prediction = p.predictor_proj.forward(&ops::narrow(&x, 1, kc, kt)?)?;
    context_path.push(stage(
        "mask-token rows, predictor_proj to D: predictions",
        &prediction,
    ));

    // The staged computation must be the model's own.
    let out = model.forward(images, masks)?;
    let differences = [
        max_abs_diff(&targets.to_vec(), &out.target.to_vec()),
        max_abs_diff(&prediction.to_vec(), &out.prediction.to_vec()),
    ];
    if differences.iter().any(|&d| d > 0.0) {
        anyhow::bail!(
            "the staged step differs from IJepa::forward (targets {:e}, predictions {:e})",
            differences[0],
            differences[1]
        );
    }
    Ok((target_path, context_path, out.loss))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

const BOX_W: usize = 400;
const BOX_H: usize = 46;
const GAP: usize = 22;
const LEFT_X: usize = 20;
const RIGHT_X: usize = 460;
const TOP: usize = 96;

fn draw_box(svg: &mut String, x: usize, y: usize, title: &str, detail: &str, fill: &str) {
    let _ = writeln!(
        svg,
        r##"<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6" fill="{fill}" stroke="#444"/>
<text x="{}" y="{}" class="t">{}</text>
<text x="{}" y="{}" class="s">{}</text>"##,
        x + 10,
        y + 19,
        escape(title),
        x + 10,
        y + 37,
        escape(detail)
    );
}

fn arrow(svg: &mut String, (x1, y1): (usize, usize), (x2, y2): (usize, usize), dashed: bool) {
    let dash = if dashed {
        r#" stroke-dasharray="6 4""#
    } else {
        ""
    };
    let _ = writeln!(
        svg,
        r##"<line x1="{x1}" y1="{y1}" x2="{x2}" y2="{y2}" stroke="#444" marker-end="url(#arrow)"{dash}/>"##
    );
}

fn svg(
    title: &str,
    legend: &str,
    target_path: &[Stage],
    context_path: &[Stage],
    loss: &Tensor,
    images: &Tensor,
) -> String {
    let rows = context_path.len().max(target_path.len());
    let row_y = |i: usize| TOP + GAP + i * (BOX_H + GAP);
    let (loss_y, update_y) = (row_y(rows), row_y(rows + 1));
    let height = update_y + BOX_H + 20;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="880" height="{height}" viewBox="0 0 880 {height}" font-family="DejaVu Sans, sans-serif">
<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0 0 L10 5 L0 10 z" fill="#444"/></marker></defs>
<style>.t {{ font-size: 13px; }} .s {{ font-size: 12px; fill: #333; font-family: DejaVu Sans Mono, monospace; }} .h {{ font-size: 15px; font-weight: bold; }}</style>
<rect width="880" height="{height}" fill="white"/>
<text x="20" y="26" class="h">{}</text>
<text x="20" y="46" class="t">{}</text>"##,
        escape(title),
        escape(legend)
    );
    let center = (LEFT_X + RIGHT_X + BOX_W) / 2;
    draw_box(
        &mut s,
        center - BOX_W / 2,
        58 - 4,
        "images",
        &format!("{:?}", images.shape()),
        "#eeeeee",
    );
    for (column, x, fill) in [
        (target_path, LEFT_X, "#dbe9f6"),
        (context_path, RIGHT_X, "#fbe3cf"),
    ] {
        arrow(
            &mut s,
            (center, 54 + BOX_H),
            (x + BOX_W / 2, row_y(0)),
            false,
        );
        for (i, st) in column.iter().enumerate() {
            draw_box(
                &mut s,
                x,
                row_y(i),
                &st.what,
                &format!("{:?}", st.shape),
                fill,
            );
            if i + 1 < column.len() {
                arrow(
                    &mut s,
                    (x + BOX_W / 2, row_y(i) + BOX_H),
                    (x + BOX_W / 2, row_y(i + 1)),
                    false,
                );
            }
        }
    }
    for (column, x) in [(target_path, LEFT_X), (context_path, RIGHT_X)] {
        arrow(
            &mut s,
            (x + BOX_W / 2, row_y(column.len() - 1) + BOX_H),
            (center, loss_y),
            false,
        );
    }
    draw_box(
        &mut s,
        center - BOX_W / 2,
        loss_y,
        "smooth L1 loss (predictions vs targets)",
        &format!("{:?}", loss.shape()),
        "#e4f2dc",
    );
    arrow(&mut s, (center, loss_y + BOX_H), (center, update_y), false);
    draw_box(
        &mut s,
        center - BOX_W / 2,
        update_y,
        "backward, AdamW on context encoder + predictor",
        "then EMA: target = m target + (1 - m) encoder",
        "#e4f2dc",
    );
    // The EMA feeds the target encoder; no gradient flows there.
    let _ = writeln!(
        s,
        r##"<path d="M {} {} H {} V {}" fill="none" stroke="#444" stroke-dasharray="6 4" marker-end="url(#arrow)"/>
<text x="{}" y="{}" class="s">EMA, no gradient</text>"##,
        center - BOX_W / 2,
        update_y + BOX_H / 2,
        LEFT_X - 8 + 4,
        row_y(0) + BOX_H / 2 + 2,
        LEFT_X + 8,
        update_y + BOX_H / 2 - 6
    );
    s.push_str("</svg>\n");
    s
}

fn main() -> anyhow::Result<()> {
    engine::device::private_runtime_dir();
    let out = std::env::args().nth(1).map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/tour/step.svg"),
        PathBuf::from,
    );
    let device = Device::shared()?;
    let preset = PretrainConfig::preset("fmnist-cpu")?;
    let config = preset.model_config(1, 28)?;
    let model = IJepa::new(&device, &config, 0)?;
    let grid = config.encoder.grid();
    let batch = preset.batch_size;
    let drawn = MaskCollator::new(preset.mask_config(grid), preset.seed)?.sample(0, batch)?;
    let masks = Masks::new(&device, &drawn.context, &drawn.target, grid * grid)?;
    let images = synthetic(&device, &[batch, 1, 28, 28])?;
    let (target_path, context_path, loss) = trace(&model, &images, &masks)?;
    let (e, p) = (&config.encoder, &config.predictor);
    let title = format!(
        "One I-JEPA step, fmnist-cpu preset: {} (D={}, {} blocks, {} heads), predictor Dp={}, {} blocks",
        preset.model, e.embed_dim, e.depth, e.num_heads, p.embed_dim, p.depth
    );
    let legend = format!(
        "B={batch} images of {}x{}x{}, {}x{} patches: N={}; this batch keeps Kc={} context and Kt={} target patches per mask, {} targets",
        e.in_chans,
        e.img_size,
        e.img_size,
        e.patch_size,
        e.patch_size,
        e.num_patches(),
        masks.context.shape()[1],
        masks.target.shape()[1],
        masks.npred
    );
    model::weights::write_atomically(
        &out,
        svg(&title, &legend, &target_path, &context_path, &loss, &images).as_bytes(),
    )?;
    println!("wrote {}", out.display());
    Ok(())
}
