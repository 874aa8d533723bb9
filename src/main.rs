//! The `ijepa` command line.

mod bench;
mod commands;
mod plot;
mod world;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ijepa",
    version,
    about = "I-JEPA pretraining of Vision Transformers on any wgpu GPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the GPU adapter, its limits, optional features and cooperative-matrix shapes.
    Info,
    /// Pretrain an encoder with I-JEPA.
    Pretrain(commands::PretrainArgs),
    /// Evaluate a checkpoint: linear probe (all labels, 1%) and k-NN of the frozen
    /// target encoder, against raw pixels and a random-init encoder.
    Probe(commands::ProbeArgs),
    /// Import an official I-JEPA checkpoint (the official code's torch.save file, such
    /// as IN1K-vit.h.14-300e.pth.tar) as an ijepa checkpoint for probe, embed and
    /// pretrain --init.
    Import(commands::ImportArgs),
    /// Write a checkpoint's frozen, average-pooled features and labels of its data set
    /// (train and test splits) to a safetensors file.
    Embed(commands::EmbedArgs),
    /// Draw the training curves of one or several runs (loss, k-NN, target-feature std,
    /// learning rate, weight decay, EMA momentum) from their metrics.jsonl.
    Plot {
        /// Output directories of `ijepa pretrain`.
        #[arg(required = true)]
        runs: Vec<PathBuf>,
        /// PNG to write.
        #[arg(long, default_value = "curves.png")]
        out: PathBuf,
    },
    /// Draw sampled context and target blocks over images of the data set.
    Masks(commands::MasksArgs),
    /// Measure kernel throughput on the adapter in use.
    Bench {
        #[command(subcommand)]
        what: BenchKind,
    },
    /// Replay a golden I-JEPA step of the official PyTorch code and report the errors
    /// per group; exit status 1 when any is out of tolerance.
    CheckReference {
        /// A golden-step safetensors file (format: shared/reference/README.md).
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum BenchKind {
    /// Square and ViT-shaped matmuls; the last line is the size^3 case.
    Matmul {
        #[arg(long, default_value_t = 1024, value_parser = at_least_one)]
        size: usize,
        /// Time every kernel that takes each shape, the chosen one last.
        #[arg(long)]
        every_kernel: bool,
        /// f16 operands (f32 output), as mixed precision's forward products.
        #[arg(long)]
        f16: bool,
        /// Time this kernel only (a name `--every-kernel` prints, e.g. MixedCoop), on
        /// every shape it takes.
        #[arg(long)]
        kernel: Option<String>,
        /// Compile the cooperative-matrix kernel as one part of itself alone, to see what
        /// bounds it: `staging` (global loads and workgroup stores), `fragments`
        /// (fragment loads and products) or `half-accumulators`. Its products are then
        /// meaningless.
        #[arg(long, value_enum, requires = "kernel")]
        coop_anatomy: Option<CoopAnatomyArg>,
        /// Time these products instead of the default ones: `MxKxN` is [M, K] x [K, N];
        /// `MxKxN:ta` takes a stored [K, M] and transposed, as a weight gradient;
        /// `MxKxN:tb` a stored [N, K] and transposed, as x W^T in a linear layer.
        /// Repeat the option or separate shapes with commas.
        #[arg(long = "shape", value_delimiter = ',', value_parser = bench::ProductSize::parse)]
        shapes: Vec<bench::ProductSize>,
    },
    /// Attention forward + backward.
    Attention {
        /// Token counts.
        #[arg(long, value_delimiter = ',', default_value = "49,196,256,1024", value_parser = at_least_one)]
        tokens: Vec<usize>,
        /// Head dims.
        #[arg(long, value_delimiter = ',', default_value = "32,64", value_parser = at_least_one)]
        head_dims: Vec<usize>,
        /// Images per batch.
        #[arg(long, default_value_t = 2, value_parser = at_least_one)]
        batch: usize,
        /// Heads per image.
        #[arg(long, default_value_t = 4, value_parser = at_least_one)]
        heads: usize,
        /// An f16 qkv, as the qkv projection stores it under mixed precision.
        #[arg(long)]
        f16: bool,
    },
    /// The streaming data pipeline on an image folder: images/s and peak memory.
    Data {
        /// An image folder (with train/, or class sub-folders directly).
        #[arg(long)]
        folder: std::path::PathBuf,
        #[arg(long, default_value_t = 224, value_parser = at_least_one)]
        image_size: usize,
        #[arg(long, default_value_t = 128, value_parser = at_least_one)]
        batch: usize,
        /// Batches timed (after one of warm-up).
        #[arg(long, default_value_t = 20, value_parser = at_least_one)]
        batches: usize,
        /// Decoding threads (0: every core).
        #[arg(long, default_value_t = 0)]
        workers: usize,
    },
    /// A full I-JEPA training step (forward, backward, AdamW + EMA) of a preset.
    Step {
        #[arg(long, default_value = "fmnist")]
        preset: String,
        /// A JSON file of configuration keys applied over the preset (model,
        /// patch_size, batch_size, data.kind = "folder" with data.image_size and
        /// data.channels for the image geometry, ...).
        #[arg(long)]
        config: Option<std::path::PathBuf>,
        #[arg(long, default_value_t = 5, value_parser = at_least_one)]
        steps: usize,
        /// `f32` or `mixed` (f16 operands, f32 accumulation), over the configuration's.
        #[arg(long)]
        precision: Option<engine::Precision>,
    },
    /// All-reduce of the gradients of ViT-S/16, ViT-B/16 and ViT-H/14 I-JEPA between
    /// the processes of an MPI job (start it with mpirun -np N), as GB/s.
    #[cfg(feature = "mpi")]
    Allreduce {
        /// All-reduces timed per size (after one of warm-up).
        #[arg(long, default_value_t = 5, value_parser = at_least_one)]
        repeats: usize,
    },
}

/// A count argument that must be at least 1 (clap names the flag in its error).
fn at_least_one(arg: &str) -> std::result::Result<usize, String> {
    match arg.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e}: expected a whole number, at least 1")),
    }
}

fn main() -> Result<()> {
    engine::device::private_runtime_dir();
    let command = Cli::parse().command;
    let launch = world::Launch::init();
    let result = run(command, &launch);
    launch.finish(result)
}

/// `--coop-anatomy`'s parts (`engine::ops::matmul::CoopAnatomy`).
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum CoopAnatomyArg {
    Staging,
    Fragments,
    HalfAccumulators,
}

impl From<CoopAnatomyArg> for engine::ops::matmul::CoopAnatomy {
    fn from(part: CoopAnatomyArg) -> Self {
        match part {
            CoopAnatomyArg::Staging => Self::Staging,
            CoopAnatomyArg::Fragments => Self::Fragments,
            CoopAnatomyArg::HalfAccumulators => Self::HalfAccumulators,
        }
    }
}

fn run(command: Command, launch: &world::Launch) -> Result<()> {
    match command {
        Command::Info => info(),
        Command::Pretrain(args) => commands::pretrain(args, launch.world()),
        Command::Probe(args) => commands::probe(args),
        Command::Embed(args) => commands::embed(args),
        Command::Import(args) => commands::import(args),
        Command::Masks(args) => commands::masks(args),
        Command::Plot { runs, out } => {
            plot::plot_runs(&runs, &out)?;
            println!("wrote {} ({} run(s))", out.display(), runs.len());
            Ok(())
        }
        Command::Bench { what } => match what {
            BenchKind::Matmul {
                size,
                every_kernel,
                f16,
                kernel,
                coop_anatomy,
                shapes,
            } => {
                let dev = engine::Device::shared()?;
                let kernel = kernel
                    .map(|name| bench::kernel_named(&dev, &name))
                    .transpose()?;
                let anatomy = coop_anatomy.map(Into::into);
                bench::matmul(&dev, size, &shapes, every_kernel, f16, kernel, anatomy)
            }
            BenchKind::Attention {
                tokens,
                head_dims,
                batch,
                heads,
                f16,
            } => bench::attention(
                &engine::Device::shared()?,
                &tokens,
                &head_dims,
                batch,
                heads,
                f16,
            ),
            BenchKind::Step {
                preset,
                config,
                steps,
                precision,
            } => bench::step(
                &engine::Device::shared()?,
                &preset,
                config.as_deref(),
                steps,
                precision,
            ),
            BenchKind::Data {
                folder,
                image_size,
                batch,
                batches,
                workers,
            } => bench::data(&folder, image_size, batch, batches, workers),
            #[cfg(feature = "mpi")]
            BenchKind::Allreduce { repeats } => launch.bench_allreduce(repeats),
        },
        Command::CheckReference { file } => {
            let report = train::reference::check_reference(&engine::Device::shared()?, &file)?;
            train::reference::print(&report);
            if !report.passed() {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

fn info() -> Result<()> {
    let device = engine::Device::shared()?;
    let i = device.info();
    println!("adapter:                {}", i.name);
    println!("backend:                {}", i.backend);
    println!("device type:            {:?}", i.device_type);
    println!(
        "plans:                  {}",
        match (device.is_cpu(), device.plans_as_cpu()) {
            (_, true) => "a CPU adapter's rules",
            (true, false) => "a GPU's rules, on a CPU adapter (IJEPA_GPU_PLANS=1)",
            (false, false) => "a GPU's rules",
        }
    );
    println!("driver:                 {} ({})", i.driver, i.driver_info);
    println!(
        "max storage binding:    {} MiB",
        i.max_storage_binding >> 20
    );
    println!("max buffer size:        {} MiB", i.max_buffer_size >> 20);
    println!("workgroup storage:      {} KiB", i.workgroup_storage >> 10);
    println!("invocations/workgroup:  {}", i.invocations_per_workgroup);
    println!("workgroups/dimension:   {}", i.workgroups_per_dimension);
    match i.subgroup_size {
        Some((lo, hi)) => println!("subgroup size:          {lo}..{hi}"),
        None => println!("subgroup size:          (no subgroup support)"),
    }
    println!(
        "optional features:      {}",
        if i.features.is_empty() {
            "none".into()
        } else {
            i.features.join(", ")
        }
    );
    println!(
        "cooperative matrices:   {}",
        if i.cooperative_matrices.is_empty() {
            "none exposed".into()
        } else {
            i.cooperative_matrices.join(", ")
        }
    );
    println!(
        "cooperative kernels:    {}",
        match i.cooperative_subgroup {
            Some(lanes) => format!(
                "on (a candidate for f16 products where plans are measured, four {lanes}-lane subgroups a tile)"
            ),
            None => format!(
                "off ({}=1 turns them on)",
                engine::device::COOPERATIVE_MATRIX_ENV
            ),
        }
    );
    Ok(())
}
