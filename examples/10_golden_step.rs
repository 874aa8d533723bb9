//! Tour chapter 10 (docs/tour/10-golden-step.md): one whole training step against the
//! official PyTorch code. A golden file holds the official model's weights, a batch and
//! its masks, and what the official step computed: features, loss, every gradient and
//! every parameter after AdamW and the EMA. `train_step`, the trainer's own step, replays
//! it here.
//!
//! Run: cargo run --release --example 10_golden_step [golden.safetensors]

use std::path::PathBuf;

use engine::Device;
use train::reference::{check_reference, print_groups, print_summary};

fn main() -> anyhow::Result<()> {
    engine::device::private_runtime_dir();
    let path = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data/ijepa_step_small.safetensors")
        });
    let device = Device::shared()?;
    let report = check_reference(&device, &path)?;
    let shown = path
        .strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .unwrap_or(&path);
    println!(
        "{}: {} groups compared",
        shown.display(),
        report.groups.len()
    );
    // The forward groups and the first gradients; `ijepa check-reference` lists all.
    print_groups(
        report
            .groups
            .iter()
            .filter(|g| !g.group.starts_with("after_step"))
            .take(9),
    );
    println!("...");
    print_summary(&report);
    Ok(())
}
