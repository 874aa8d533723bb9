//! Properties of the multi-block mask collator over many seeded batches.

use std::collections::HashSet;

use train::multiblock::{MaskCollator, MaskConfig, PatchBlock};

fn cells(b: &PatchBlock, g: usize) -> HashSet<u32> {
    (b.top..b.top + b.h)
        .flat_map(|r| (b.left..b.left + b.w).map(move |c| (r * g + c) as u32))
        .collect()
}

#[test]
fn masks_have_the_official_structure_over_many_batches() {
    for grid in [7, 8, 14] {
        let config = MaskConfig::official(grid);
        let collator = MaskCollator::new(config.clone(), 7).unwrap();
        // Every size the official formula gives for a draw r in [0, 1].
        let sizes: HashSet<(usize, usize)> = (0..=10_000)
            .map(|i| collator.pred_size(i as f64 / 10_000.0))
            .collect();
        let mut covered_by_targets = HashSet::new();
        let mut covered_by_context = HashSet::new();
        for step in 0..300 {
            let batch = 1 + step as usize % 5;
            let m = collator.sample(step, batch).unwrap();
            assert_eq!(m.context.len(), config.nenc);
            assert_eq!(m.target.len(), config.npred);
            // Equal lengths within the batch, per kind; more than min_keep kept.
            let kc = m.context[0][0].len();
            let kt = m.target[0][0].len();
            assert!(
                kc > config.min_keep && kt > config.min_keep,
                "grid {grid} step {step}: {kc} / {kt}"
            );
            assert!(m.context.iter().flatten().all(|v| v.len() == kc));
            assert!(m.target.iter().flatten().all(|v| v.len() == kt));
            for b in 0..batch {
                let targets = &m.target_blocks[b];
                // One target size per batch, within the sizes the scale/aspect range allows.
                let t0 = targets[0];
                assert!(m
                    .target_blocks
                    .iter()
                    .flatten()
                    .all(|t| (t.h, t.w) == (t0.h, t0.w)));
                assert!(
                    sizes.contains(&(t0.h, t0.w)),
                    "{t0:?} is not a size of the scale/aspect range"
                );
                let aspect = t0.h as f64 / t0.w as f64;
                assert!((0.5..=2.0).contains(&aspect), "aspect {aspect} of {t0:?}");
                let area = (t0.h * t0.w) as f64 / (grid * grid) as f64;
                assert!(
                    (0.09..=0.26).contains(&area),
                    "target area fraction {area} of {t0:?} on grid {grid}"
                );
                let ctx = m.context_blocks[b][0];
                assert_eq!(ctx.h, ctx.w, "context blocks are square");
                for (j, t) in targets.iter().enumerate() {
                    assert!(t.top + t.h <= grid && t.left + t.w <= grid);
                    // The target mask is the block's cells (a prefix after truncation).
                    let all = cells(t, grid);
                    assert!(m.target[j][b].iter().all(|i| all.contains(i)));
                    assert!(
                        m.target[j][b].windows(2).all(|w| w[0] < w[1]),
                        "ascending, distinct"
                    );
                    covered_by_targets.extend(all);
                }
                // Every context index lies in the context block and outside every target.
                let inside = cells(&ctx, grid);
                for &i in &m.context[0][b] {
                    assert!(inside.contains(&i));
                    assert!(
                        targets.iter().all(|t| !cells(t, grid).contains(&i)),
                        "context index {i} inside a target"
                    );
                    covered_by_context.insert(i);
                }
            }
        }
        // Every row and column (the last ones included) is reachable.
        for g in [&covered_by_targets, &covered_by_context] {
            let rows: HashSet<u32> = g.iter().map(|i| i / grid as u32).collect();
            let cols: HashSet<u32> = g.iter().map(|i| i % grid as u32).collect();
            assert_eq!(rows.len(), grid, "grid {grid}: rows reached {rows:?}");
            assert_eq!(cols.len(), grid, "grid {grid}: columns reached {cols:?}");
        }
        assert_eq!(
            covered_by_targets.len(),
            grid * grid,
            "grid {grid}: every patch can be a target"
        );
    }
}

#[test]
fn the_same_seed_and_step_give_the_same_masks() {
    let a = MaskCollator::new(MaskConfig::official(14), 3).unwrap();
    let b = MaskCollator::new(MaskConfig::official(14), 3).unwrap();
    assert_eq!(
        a.sample(5, 4).unwrap().context,
        b.sample(5, 4).unwrap().context
    );
    assert_eq!(
        a.sample(5, 4).unwrap().target,
        b.sample(5, 4).unwrap().target
    );
    assert_ne!(
        a.sample(5, 4).unwrap().target,
        a.sample(6, 4).unwrap().target
    );
}

#[test]
fn block_sizes_follow_the_official_formula() {
    let c = MaskCollator::new(MaskConfig::official(14), 0).unwrap();
    // Hand-computed from the official formula on a 14x14 grid (196 patches):
    // r = 0: scale 0.15 -> max_keep 29, aspect 0.75 -> h = round(sqrt(21.75)) = 5,
    //        w = round(sqrt(38.67)) = 6.
    // r = 1: scale 0.2 -> max_keep 39, aspect 1.5 -> h = round(sqrt(58.5)) = 8,
    //        w = round(sqrt(26)) = 5.
    assert_eq!(c.pred_size(0.0), (5, 6));
    assert_eq!(c.pred_size(1.0), (8, 5));
    // Context: scale 0.85 -> 166 -> 13x13; scale 1.0 -> 196 -> 14, kept below the grid: 13.
    assert_eq!(c.enc_size(0.0), (13, 13));
    assert_eq!(c.enc_size(1.0), (13, 13));
}

#[test]
fn impossible_settings_are_refused_before_training() {
    let mut c = MaskConfig::official(7);
    c.min_keep = 20;
    let e = MaskCollator::new(c, 0)
        .err()
        .expect("min_keep above any target block")
        .to_string();
    assert!(e.contains("min_keep = 20"), "{e}");

    let e = MaskCollator::new(MaskConfig::official(3), 0)
        .err()
        .expect("a 3x3 grid cannot hold these blocks")
        .to_string();
    assert!(e.contains("3x3 grid"), "{e}");

    // 7x7 targets and a 7x7 context on an 8x8 grid: at most 13 context patches can lie
    // outside the targets, never more than min_keep = 14.
    let mut c = MaskConfig::official(8);
    c.pred_scale = (0.9, 1.0);
    c.min_keep = 14;
    let e = MaskCollator::new(c, 0)
        .err()
        .expect("targets leave no context")
        .to_string();
    assert!(e.contains("dry run") && e.contains("context block"), "{e}");

    let mut c = MaskConfig::official(8);
    c.pred_scale = (0.3, 0.1);
    assert!(MaskCollator::new(c, 0).is_err());
}
