//! `ijepa pretrain`, `ijepa probe` and `ijepa masks`.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use engine::Device;
use indicatif::{ProgressBar, ProgressStyle};
use train::checkpoint::CHECKPOINT;
use train::config::PretrainConfig;
use train::config_file::ConfigFile;
use train::multiblock::{MaskCollator, MaskConfig};
use train::parallel::Collective;
use train::pretrain::{RunEnd, Trainer};
use train::probe::{
    embed_checkpoint, probe_checkpoint, Encoder, FeatureOptions, ProbeResult, LOW_SHOT_SPLITS,
};

#[derive(Args)]
pub struct PretrainArgs {
    /// Start from a preset: fmnist (the full Fashion-MNIST run), fmnist-cpu (small and
    /// short), or auto (fmnist on a GPU, fmnist-cpu on a CPU adapter).
    #[arg(long, default_value = "auto")]
    preset: String,
    /// A JSON or YAML file with any subset of the configuration (applied over the
    /// preset), or an official I-JEPA YAML file (configs/in1k_vith14_ep300.yaml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Output directory: checkpoint, metrics.jsonl, curves.png [default: an official
    /// file's logging.folder, else runs/ijepa].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue from the checkpoint in the output directory.
    #[arg(long, conflicts_with = "init")]
    resume: bool,
    /// Start from the weights of this checkpoint (encoder, predictor and target
    /// encoder of the same architecture), with a fresh optimizer at step 0.
    #[arg(long)]
    init: Option<PathBuf>,
    /// Override the number of epochs.
    #[arg(long, value_parser = crate::at_least_one)]
    epochs: Option<usize>,
    /// Stop after this many steps (the schedules still span all epochs).
    #[arg(long, value_parser = crate::at_least_one)]
    max_steps: Option<usize>,
    /// Override the data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Override the seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Print the resolved configuration as JSON and exit.
    #[arg(long)]
    print_config: bool,
}

/// The preset the quick start uses on this adapter.
pub fn auto_preset(device: &Device) -> &'static str {
    if device.is_cpu() {
        "fmnist-cpu"
    } else {
        "fmnist"
    }
}

/// The configuration a run will use, with its data geometry resolved, and its output
/// directory.
fn resolve_config(args: &PretrainArgs, device: &Device) -> Result<(PretrainConfig, PathBuf)> {
    let preset = if args.preset == "auto" {
        auto_preset(device)
    } else {
        args.preset.as_str()
    };
    let mut config = PretrainConfig::preset(preset)?;
    let mut out = PathBuf::from("runs/ijepa");
    if let Some(path) = &args.config {
        let file = ConfigFile::read(path)?;
        for note in &file.notes {
            eprintln!("note: {note}");
        }
        config = file.apply(&config)?;
        if let Some(dir) = file.out_dir {
            out = dir;
        }
    }
    if let Some(e) = args.epochs {
        config.epochs = e;
    }
    if let Some(d) = &args.data_dir {
        config.data.dir = d.clone();
    }
    if let Some(s) = args.seed {
        config.seed = s;
    }
    config.validate()?;
    config.data = config.data.resolved()?;
    Ok((config, args.out.clone().unwrap_or(out)))
}

/// `ijepa pretrain` as one process of `world` (see [`Trainer::with_world`]); rank 0
/// alone reports progress and draws the curves.
pub fn pretrain(args: PretrainArgs, world: Box<dyn Collective>) -> Result<()> {
    let device = Device::shared()?;
    let (rank, ranks) = (world.rank(), world.size());
    let (config, out) = resolve_config(&args, &device)?;
    if args.print_config {
        if rank == 0 {
            println!("{}", serde_json::to_string_pretty(&config)?);
        }
        return Ok(());
    }
    if ranks > 1 {
        crate::world::eprint_line(&format!("rank {rank} of {ranks}: {}", device.info().name));
    }
    let mut trainer = Trainer::with_world(&device, config, &out, world)?;
    let checkpoint = out.join(CHECKPOINT);
    if args.resume {
        if !checkpoint.exists() {
            bail!(
                "--resume: {} holds no {CHECKPOINT} to continue; start the run without --resume",
                out.display()
            );
        }
        trainer.resume(&checkpoint)?;
        if rank == 0 {
            eprintln!(
                "resumed from {} at step {}",
                checkpoint.display(),
                trainer.step
            );
        }
    } else if checkpoint.exists() {
        bail!(
            "{} already exists: pass --resume to continue it, or choose another --out",
            checkpoint.display()
        );
    }
    if let Some(init) = &args.init {
        trainer.init_from(init)?;
        eprintln!("starting from the weights of {}", init.display());
    }
    let until = args
        .max_steps
        .map_or(trainer.total_steps(), |m| m.min(trainer.total_steps()));
    let m = &trainer.state.model.config;
    let batch = match ranks {
        1 => trainer.config.batch_size.to_string(),
        n => format!(
            "{} ({n} processes x {})",
            n * trainer.config.batch_size,
            trainer.config.batch_size
        ),
    };
    if rank == 0 {
        eprintln!(
        "[{}] pretraining {} (D={}, depth {}, predictor {}x{}, {} precision) on {} images of {}x{}x{}: {} steps of {} ({} per epoch)",
        device.info().name,
        trainer.config.model,
        m.encoder.embed_dim,
        m.encoder.depth,
        m.predictor.embed_dim,
        m.predictor.depth,
        trainer.config.precision.name(),
        trainer.splits.train.len(),
        trainer.splits.train.channels,
        trainer.splits.train.height,
        trainer.splits.train.width,
        trainer.total_steps(),
        batch,
        trainer.steps_per_epoch
    );
    }
    let bar = match rank {
        0 => ProgressBar::new(until as u64),
        _ => ProgressBar::hidden(),
    };
    bar.set_style(ProgressStyle::with_template(
        "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
    )?);
    bar.set_position(trainer.step as u64);
    // The first interrupt (Ctrl-C, SIGTERM) ends the run after this step with a
    // checkpoint; a second one ends the process at once.
    let stop = trainer.stop_handle();
    ctrlc::set_handler(move || {
        if stop.swap(true, std::sync::atomic::Ordering::SeqCst) {
            eprintln!("\nsecond interrupt: stopping now, without a checkpoint of this step");
            std::process::exit(INTERRUPTED);
        }
        eprintln!("\ninterrupt: finishing this step, then writing a checkpoint (interrupt again to stop now)");
    })?;
    let result = trainer.run(until, |m| {
        bar.set_position(m.step as u64);
        let knn = m
            .knn_top1
            .map_or(String::new(), |k| format!(" knn {k:.1}%"));
        bar.set_message(format!(
            "loss {:.4} lr {:.2e} {:.0} img/s{knn}",
            m.loss, m.lr, m.images_per_s
        ));
        if let Some(k) = m.knn_top1 {
            let replaced = if m.replaced_images > 0 {
                format!(", {} unreadable image(s) replaced", m.replaced_images)
            } else {
                String::new()
            };
            let identical = m.state_checksum.as_ref().map_or(String::new(), |sum| {
                format!(", state identical on {ranks} processes (checksum {sum})")
            });
            let line = format!(
                "epoch {} done: step {}, loss {:.4}, {:.0} img/s, k-NN top-1 {k:.2}%, RankMe {:.1}, target std {:.3}, context {} patches, GPU buffers {:.0} MiB{replaced}{identical}",
                m.epoch + 1,
                m.step,
                m.loss,
                m.images_per_s,
                m.rankme.unwrap_or(f64::NAN),
                m.target_std.unwrap_or(f64::NAN),
                m.context_patches,
                device.memory_held() as f64 / (1 << 20) as f64
            );
            // indicatif draws nothing when stderr is not a terminal (logs, CI).
            if std::io::stderr().is_terminal() {
                bar.println(line);
            } else {
                eprintln!("{line}");
            }
        }
    });
    bar.finish();
    // The curves are drawn whatever happened, but the run's own error comes first.
    let plotted = match rank {
        0 => crate::plot::plot_runs(std::slice::from_ref(&out), &out.join(CURVES)),
        _ => Ok(()),
    };
    match result {
        Err(e) => {
            if let Err(p) = plotted {
                eprintln!("warning: {p:#}");
            }
            Err(
                if matches!(e.downcast_ref(), Some(engine::Error::OutOfMemory { .. })) {
                    e.context(format!(
                        "a batch of {} images does not fit in GPU memory for {}: set a smaller \"batch_size\" with --config",
                        trainer.config.batch_size, trainer.config.model
                    ))
                } else {
                    e
                },
            )
        }
        Ok(RunEnd::Interrupted) => {
            if let Err(p) = plotted {
                eprintln!("warning: {p:#}");
            }
            eprintln!(
                "interrupted after step {}: checkpoint {} written; continue with the same arguments and --resume",
                trainer.step,
                checkpoint.display()
            );
            std::process::exit(INTERRUPTED);
        }
        Ok(RunEnd::Reached) => {
            if rank == 0 {
                if let Some(file) = device.plan_file() {
                    eprintln!("{file}");
                }
                eprintln!(
                    "checkpoint: {} (step {})",
                    checkpoint.display(),
                    trainer.step
                );
            }
            plotted
        }
    }
}

/// The training curves `pretrain` draws in its output directory.
pub const CURVES: &str = "curves.png";

/// The exit status of a run stopped by an interrupt (128 + SIGINT, as shells report).
const INTERRUPTED: i32 = 130;

/// The probe's table: the 1% column on seed 0's split, as every earlier result, then
/// the mean and spread over `LOW_SHOT_SPLITS` splits.
pub fn print_table(results: &[ProbeResult]) {
    println!(
        "| features probed (test top-1) | all labels | 1% labels | 1% labels, {LOW_SHOT_SPLITS} splits | k-NN (k=20) |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for r in results {
        let (mean, std) = r.one_percent_spread();
        println!(
            "| {} | {:.2} | {:.2} | {mean:.2} +- {std:.2} | {:.2} |",
            r.features,
            r.all_labels,
            r.one_percent(),
            r.knn
        );
    }
}

/// Which features of a checkpoint, for `probe` and `embed`.
#[derive(Args)]
pub struct FeatureArgs {
    /// The encoder: target (the EMA encoder the paper evaluates) or context.
    #[arg(long, default_value = "target", value_parser = ["target", "context"])]
    encoder: String,
    /// The means of the last N blocks side by side (1: the last layer, the primary
    /// protocol; the paper also reports 4).
    #[arg(long, default_value_t = 1, value_parser = crate::at_least_one)]
    layers: usize,
    /// Use only N training images (0: as the checkpoint's data configuration).
    #[arg(long, default_value_t = 0)]
    train_limit: usize,
    /// Use only N test images (0: as the checkpoint's data configuration).
    #[arg(long, default_value_t = 0)]
    test_limit: usize,
}

impl FeatureArgs {
    fn options(&self) -> FeatureOptions {
        FeatureOptions {
            encoder: if self.encoder == "context" {
                Encoder::Context
            } else {
                Encoder::Target
            },
            layers: self.layers,
            limits: (self.train_limit, self.test_limit),
        }
    }
}

#[derive(Args)]
pub struct ProbeArgs {
    /// A checkpoint of `ijepa pretrain`.
    checkpoint: PathBuf,
    #[command(flatten)]
    features: FeatureArgs,
    /// Also write the probed features (as `ijepa embed` does) to this file.
    #[arg(long)]
    save_features: Option<PathBuf>,
}

pub fn probe(args: ProbeArgs) -> Result<()> {
    let device = Device::shared()?;
    let checkpoint = &args.checkpoint;
    eprintln!("[{}] probing {}", device.info().name, checkpoint.display());
    let options = args.features.options();
    let results = probe_checkpoint(
        &device,
        checkpoint,
        &options,
        args.save_features.as_deref(),
        |r| {
            let (mean, std) = r.one_percent_spread();
            eprintln!(
                "{}: all labels {:.2}%, 1% labels {:.2}% ({mean:.2} +- {std:.2} over {LOW_SHOT_SPLITS} splits), k-NN {:.2}%",
                r.features, r.all_labels, r.one_percent(), r.knn
            );
        },
    )?;
    print_table(&results);
    Ok(())
}

#[derive(Args)]
pub struct EmbedArgs {
    /// A checkpoint of `ijepa pretrain`.
    checkpoint: PathBuf,
    /// The features file to write (safetensors: train.features [n, D] f32,
    /// train.labels [n] i64, and the same for test).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    features: FeatureArgs,
}

pub fn embed(args: EmbedArgs) -> Result<()> {
    let device = Device::shared()?;
    let options = args.features.options();
    let features = embed_checkpoint(&device, &args.checkpoint, &options)?;
    features.save(&args.out, options.metadata(&args.checkpoint))?;
    println!(
        "wrote {}: {} train and {} test features of {} ({})",
        args.out.display(),
        features.train.1.len(),
        features.test.1.len(),
        features.dim,
        options.describe()
    );
    Ok(())
}

#[derive(Args)]
pub struct ImportArgs {
    /// The official checkpoint (.pth.tar).
    file: PathBuf,
    /// The ijepa checkpoint to write (safetensors).
    #[arg(long)]
    out: PathBuf,
    /// A configuration file (JSON, YAML, or an official YAML such as
    /// in1k_vith14_ep300.yaml) naming the data the checkpoint will be probed and
    /// embedded on; its images set the normalisation.
    #[arg(long)]
    config: PathBuf,
}

pub fn import(args: ImportArgs) -> Result<()> {
    use train::import::{check_fits, read_official, write_imported, IMAGENET_STATS};
    let device = Device::shared()?;
    let imported = read_official(&args.file)?;
    let model = model::IJepa::new(&device, &imported.model, 0)?;
    check_fits(&imported, &model.named_params())?;
    let file = ConfigFile::read(&args.config)?;
    let mut base = file.apply(&PretrainConfig::default())?;
    base.data = base.data.resolved()?;
    let e = &imported.model.encoder;
    if (base.data.channels, base.data.image_size) != (e.in_chans, e.img_size) {
        bail!(
            "{}: the data is {}x{}x{} images, the imported encoder takes {}x{}x{}",
            args.config.display(),
            base.data.channels,
            base.data.image_size,
            base.data.image_size,
            e.in_chans,
            e.img_size,
            e.img_size
        );
    }
    let stats = match base.data.load() {
        Ok(splits) => splits.train.channel_stats(),
        Err(err) if e.in_chans == 3 => {
            eprintln!(
                "note: {err:#}; normalising with ImageNet's mean and std, as the official code"
            );
            IMAGENET_STATS.to_vec()
        }
        Err(err) => return Err(err),
    };
    write_imported(&imported, &base, stats, &args.out)?;
    println!(
        "wrote {}: {} (D={}, depth {}, patch {}, {}x{}x{}), predictor {}x{}{}",
        args.out.display(),
        imported.preset,
        e.embed_dim,
        e.depth,
        e.patch_size,
        e.in_chans,
        e.img_size,
        e.img_size,
        imported.model.predictor.embed_dim,
        imported.model.predictor.depth,
        imported.epoch.map_or(String::new(), |ep| format!(
            ", epoch {ep} of the official run"
        ))
    );
    Ok(())
}

#[derive(Args)]
pub struct MasksArgs {
    /// PNG to write.
    #[arg(long, default_value = "masks.png")]
    out: PathBuf,
    /// Images to draw.
    #[arg(long, default_value_t = 8, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=64))]
    count: usize,
    /// Patch size (the grid is image size / patch size).
    #[arg(long, default_value_t = 4, value_parser = crate::at_least_one)]
    patch_size: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Data directory (MNIST-format IDX files).
    #[arg(long, default_value = train::data::FASHION_MNIST_DIR)]
    data_dir: PathBuf,
}

pub fn masks(args: MasksArgs) -> Result<()> {
    let splits = train::data::load_idx_dir(&args.data_dir)?;
    let data = &splits.train;
    if args.count > data.len() {
        bail!(
            "--count {}: {} holds only {} training images",
            args.count,
            args.data_dir.display(),
            data.len()
        );
    }
    if data.height % args.patch_size != 0 {
        bail!(
            "--patch-size {}: the image size {} is not divisible by it",
            args.patch_size,
            data.height
        );
    }
    let grid = data.height / args.patch_size;
    let collator = MaskCollator::new(MaskConfig::official(grid), args.seed)?;
    let batch = collator.sample(0, args.count)?;
    crate::plot::masks(&args.out, data, &batch, args.patch_size, args.count)?;
    println!(
        "wrote {} ({} images, {grid}x{grid} grid)",
        args.out.display(),
        args.count
    );
    Ok(())
}
