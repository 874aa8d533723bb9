//! Tour chapter 8 (docs/tour/08-masks.md): the multi-block masks. Per batch one target
//! block size and one context block size; per image 4 target blocks and a context block
//! with the targets removed. Draws one batch, then checks over many batches that
//! contexts never overlap targets and that every patch, the last row and column too,
//! can be a target.
//!
//! Run: cargo run --release --example 08_masks

use train::multiblock::{MaskCollator, MaskConfig};

fn main() -> anyhow::Result<()> {
    engine::device::private_runtime_dir();
    let grid = 7; // fmnist: 28x28 images in 4x4 patches
    let config = MaskConfig::official(grid);
    println!(
        "{grid}x{grid} grid; {} context block(s) of scale {:?}, {} target blocks of scale {:?} and aspect {:?}, min_keep {}",
        config.nenc, config.enc_scale, config.npred, config.pred_scale, config.pred_aspect, config.min_keep
    );
    let collator = MaskCollator::new(config.clone(), 0)?;

    let batch = collator.sample(0, 3)?;
    println!(
        "batch 0: target blocks {}x{}, context block {}x{}; each image keeps {} context and {} target patches per mask",
        batch.target_blocks[0][0].h,
        batch.target_blocks[0][0].w,
        batch.context_blocks[0][0].h,
        batch.context_blocks[0][0].w,
        batch.context[0][0].len(),
        batch.target[0][0].len()
    );
    println!("(c: context, 1-4: target block, *: in two targets, .: neither)");
    let pictures: Vec<Vec<String>> = (0..3)
        .map(|b| {
            let mut cells = vec!['.'; grid * grid];
            for &i in &batch.context[0][b] {
                cells[i as usize] = 'c';
            }
            for (j, target) in batch.target.iter().enumerate() {
                for &i in &target[b] {
                    let cell = &mut cells[i as usize];
                    *cell = if cell.is_ascii_digit() {
                        '*'
                    } else {
                        char::from(b'1' + j as u8)
                    };
                }
            }
            cells
                .chunks(grid)
                .map(|r| r.iter().collect::<String>())
                .collect()
        })
        .collect();
    for row in 0..grid {
        let line: Vec<&str> = pictures.iter().map(|p| p[row].as_str()).collect();
        println!("  {}", line.join("    "));
    }

    // Over 500 batches of 16: overlaps between context and targets, and how often each
    // patch is a target.
    let (batches, per_batch) = (500, 16);
    let mut overlaps = 0;
    let mut target_count = vec![0usize; grid * grid];
    let (mut kc, mut kt) = (usize::MAX, usize::MAX);
    for step in 0..batches {
        let b = collator.sample(step, per_batch)?;
        kc = kc.min(b.context[0][0].len());
        kt = kt.min(b.target[0][0].len());
        for img in 0..per_batch {
            let mut in_target = vec![false; grid * grid];
            for target in &b.target {
                for &i in &target[img] {
                    in_target[i as usize] = true;
                }
            }
            overlaps += b.context[0][img]
                .iter()
                .filter(|&&i| in_target[i as usize])
                .count();
            for (count, hit) in target_count.iter_mut().zip(&in_target) {
                *count += *hit as usize;
            }
        }
    }
    let images = (batches * per_batch as u64) as f64;
    println!("{} images: {overlaps} context patches inside a target; fewest kept: {kc} context, {kt} target", images);
    println!("share of images in which each patch is a target (%):");
    for row in target_count.chunks(grid) {
        let line: Vec<String> = row
            .iter()
            .map(|&c| format!("{:3.0}", 100.0 * c as f64 / images))
            .collect();
        println!("  {}", line.join(" "));
    }
    Ok(())
}
