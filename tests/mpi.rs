//! Data-parallel pretraining over MPI (the `mpi` feature; needs Open MPI's `mpirun`):
//! 2 processes x batch 8 compute what 1 process x batch 16 computes, keep identical
//! states, resume from their checkpoint with 2 processes (and refuse 1), and a killed
//! process ends the job with an error while the last checkpoint still loads.
#![cfg(feature = "mpi")]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::runs::{losses, mpirun_pretrain_command, pretrain_command, temp_dir, tiny_config};
use model::weights::SafetensorsFile;
use train::checkpoint::{Checkpoint, CHECKPOINT};
use train::config::PretrainConfig;

/// Per-step losses of 2 x 8 against 1 x 16 agree to this relative tolerance: the
/// sums run in another order (each rank's mean, then the mean of the two; one
/// all-reduce of the gradients), so f32 rounding differs, and AdamW passes it on.
/// Measured on lavapipe: 1.5e-7.
const LOSS_RTOL: f32 = 1e-5;
/// Parameters after the 20 steps agree to this absolute tolerance (they are about 0.02
/// to 1 in size). Measured on lavapipe: 6e-8.
const PARAM_ATOL: f32 = 1e-6;

/// A 20-step run (320 images, one epoch) with `batch` images per process.
fn config(batch: usize) -> PretrainConfig {
    PretrainConfig {
        batch_size: batch,
        ..tiny_config(320, 1)
    }
}

fn run_ok(mut cmd: std::process::Command, what: &str) -> String {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{what} failed:\n{stderr}");
    stderr
}

fn params(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let file = SafetensorsFile::open(&dir.join(CHECKPOINT)).unwrap();
    let names = file
        .names()
        .into_iter()
        .filter(|n| !n.starts_with("optim."));
    names
        .map(|n| {
            let (v, _) = file.f32(&n).unwrap();
            (n, v)
        })
        .collect()
}

#[test]
fn two_processes_train_what_one_process_trains_on_the_global_batch() {
    let dir = temp_dir("mpi_equal");
    let (one, two, resumed) = (dir.join("one"), dir.join("two"), dir.join("resumed"));
    run_ok(pretrain_command(&config(16), &one, &[]), "1 x 16");
    let log = run_ok(mpirun_pretrain_command(2, &config(8), &two, &[]), "2 x 8");
    assert!(log.contains("rank 1 of 2"), "{log}");

    let (a, b) = (losses(&one), losses(&two));
    assert_eq!(a.len(), 20);
    assert_eq!(
        a.iter().map(|l| l.0).collect::<Vec<_>>(),
        b.iter().map(|l| l.0).collect::<Vec<_>>()
    );
    let mut worst_loss = 0.0f32;
    for ((step, x), (_, y)) in a.iter().zip(&b) {
        assert!(
            (x - y).abs() <= LOSS_RTOL * x.abs(),
            "step {step}: loss {x} (1 x 16) vs {y} (2 x 8)"
        );
        worst_loss = worst_loss.max((x - y).abs() / x.abs());
    }
    let mut worst = (0.0f32, String::new());
    for ((name, x), (other, y)) in params(&one).iter().zip(params(&two)) {
        assert_eq!(name, &other);
        for (p, q) in x.iter().zip(&y) {
            if (p - q).abs() > worst.0 {
                worst = ((p - q).abs(), name.clone());
            }
        }
    }
    assert!(worst.0 <= PARAM_ATOL, "{} differs by {}", worst.1, worst.0);
    eprintln!(
        "2 x 8 vs 1 x 16 over 20 steps: losses within {worst_loss:.1e} relative, parameters within {:.1e} ({})",
        worst.0, worst.1
    );
    // The ranks' whole states were found identical at the end of the epoch.
    let text = std::fs::read_to_string(two.join("metrics.jsonl")).unwrap();
    assert!(
        text.lines().last().unwrap().contains("state_checksum"),
        "{text}"
    );
    assert!(log.contains("state identical on 2 processes"), "{log}");

    // Stopped at step 10 and resumed by 2 processes: the same losses, bit for bit.
    run_ok(
        mpirun_pretrain_command(2, &config(8), &resumed, &["--max-steps", "10"]),
        "first half",
    );
    run_ok(
        mpirun_pretrain_command(2, &config(8), &resumed, &["--resume"]),
        "resume",
    );
    assert_eq!(losses(&resumed), b);
    // A checkpoint of 2 processes is refused by 1: the global batch would change.
    let out = pretrain_command(&config(8), &resumed, &["--resume"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("written by a run of 2 process(es)"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// In mixed precision the ranks scale the same loss and take the same decision on the
/// averaged gradients, so their states stay identical (checked at the end of the epoch,
/// where a difference stops the job).
#[test]
fn two_processes_in_mixed_precision_keep_one_state() {
    let dir = temp_dir("mpi_mixed");
    let config = PretrainConfig {
        precision: engine::Precision::Mixed,
        ..config(8)
    };
    let log = run_ok(
        mpirun_pretrain_command(2, &config, &dir, &[]),
        "2 x 8 mixed",
    );
    assert!(log.contains("state identical on 2 processes"), "{log}");
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 20);
    assert!(
        text.lines().all(|l| l.contains("\"loss_scale\":")),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The pids of the `ijepa` processes whose parent is `parent`.
fn children(parent: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some((comm, rest)) = stat.split_once(") ") else {
            continue;
        };
        let ppid: u32 = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        if ppid == parent && comm.ends_with("(ijepa") {
            found.push(pid);
        }
    }
    found
}

#[test]
fn a_killed_process_ends_the_job_and_the_last_checkpoint_loads() {
    let dir = temp_dir("mpi_kill");
    let out = dir.join("run");
    let long = PretrainConfig {
        epochs: 20,
        ..config(8)
    };
    let mut job = mpirun_pretrain_command(2, &long, &out, &[])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !out.join(CHECKPOINT).exists() {
        if let Some(status) = job.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(job.stderr.as_mut().unwrap(), &mut stderr).unwrap();
            panic!("the job ended ({status}) before its first checkpoint:\n{stderr}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "no checkpoint after 5 minutes"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let ranks = children(job.id());
    assert_eq!(ranks.len(), 2, "the job's processes: {ranks:?}");
    let killed = Instant::now();
    std::process::Command::new("kill")
        .args(["-9", &ranks[1].to_string()])
        .status()
        .unwrap();
    let status = loop {
        if let Some(status) = job.try_wait().unwrap() {
            break status;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "the job still runs a minute after a rank was killed"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(job.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success() && stderr.contains("rank 1"), "{stderr}");
    eprintln!(
        "the job ended {:.1} s after a rank was killed; mpirun said:\n{stderr}",
        killed.elapsed().as_secs_f64()
    );
    let checkpoint = Checkpoint::open(&out.join(CHECKPOINT)).unwrap();
    assert!(checkpoint.meta.step >= 10 && checkpoint.meta.ranks == 2);
    let device = engine::Device::shared().unwrap();
    let model = model::IJepa::new(&device, &checkpoint.meta.model, 0).unwrap();
    checkpoint
        .file
        .load_into("", &model.named_params())
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An error on one process only (here rank 0 finds the run directory locked by another
/// run; rank 1, which does not lock it, goes on to its first all-reduce) ends the whole
/// job at once, with the error and the rank that met it.
#[test]
fn an_error_on_one_process_ends_the_job_naming_its_rank() {
    let dir = temp_dir("mpi_abort");
    let out = dir.join("run");
    let _held = train::rundir::RunLock::acquire(&out).unwrap();
    let started = Instant::now();
    let result = mpirun_pretrain_command(2, &config(8), &out, &[])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success(), "{stderr}");
    assert!(
        stderr.contains("error on rank 0 of 2") && stderr.contains("in use by another run"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "the job took {:?} to end",
        started.elapsed()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
