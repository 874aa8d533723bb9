//! A run directory has one writer: [`RunLock`] holds an exclusive OS lock on its
//! `.lock` file (which names the owner's pid) for the life of the run. The OS drops the
//! lock when the owner exits, however it exits, so the directory of a dead run is taken
//! over without a stale-lock check; the newcomer then removes the temporaries the dead
//! run left behind.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The lock file's name in a run directory.
pub const LOCK: &str = ".lock";

/// The exclusive lock on a run directory; released when dropped.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    pub path: PathBuf,
}

impl RunLock {
    /// Create `dir` if needed and lock it, or say which process holds it. Leftover
    /// temporaries of a dead run are removed once the lock is held.
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create output directory {}", dir.display()))?;
        let path = dir.join(LOCK);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("output directory {} is not writable", dir.display()))?;
        match lock_now_or_after_own_children(&file, &path) {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let owner = std::fs::read_to_string(&path).unwrap_or_default();
                let owner = owner.trim();
                bail!(
                    "{} is in use by another run (process {}, lock {}): wait for it to end, stop it, or choose another --out",
                    dir.display(),
                    if owner.is_empty() { "unknown" } else { owner },
                    path.display()
                );
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
        file.set_len(0)
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .with_context(|| format!("cannot write {}", path.display()))?;
        for stale in model::weights::remove_stale_temporaries(dir)? {
            eprintln!(
                "removed {}, left by a run that ended while writing it",
                stale.display()
            );
        }
        Ok(RunLock { _file: file, path })
    }
}

/// Take the lock. When the lock file names this very process, the holder can be a child
/// it is spawning: between fork and exec a child shares the open lock file of a run
/// that has since ended here, until exec closes it (it is opened close-on-exec). That
/// lasts milliseconds, so wait for it, up to a second; a run of this process that still
/// holds the directory is refused after that.
fn lock_now_or_after_own_children(file: &File, path: &Path) -> Result<(), TryLockError> {
    let ours = || {
        std::fs::read_to_string(path)
            .is_ok_and(|owner| owner.trim() == std::process::id().to_string())
    };
    for _ in 0..50 {
        match file.try_lock() {
            Err(TryLockError::WouldBlock) if ours() => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            other => return other,
        }
    }
    file.try_lock()
}

/// Keep the lines of a metrics log whose `step` is at most `step`, dropping the rest
/// (steps a resumed run will take again, and a line cut short by a kill), through an
/// atomic rewrite. A missing log is left missing.
pub fn truncate_metrics(path: &Path, step: usize) -> Result<()> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let kept: String = text
        .lines()
        .filter(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s as usize <= step)
        })
        .map(|line| format!("{line}\n"))
        .collect();
    if kept.len() != text.len() {
        model::weights::write_atomically(path, kept.as_bytes())?;
    }
    Ok(())
}
