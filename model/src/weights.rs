//! safetensors save and load of named parameters, names as the official `state_dict()`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use engine::Tensor;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

/// Write tensors (name, host data, shape) and string metadata to `path` atomically:
/// a temporary file in the same directory, then a rename, so a crash never leaves a
/// half-written file where a good one was.
pub fn write_safetensors(
    path: &Path,
    tensors: &[(String, Vec<f32>, Vec<usize>)],
    metadata: HashMap<String, String>,
) -> Result<()> {
    let values: Vec<(String, Values, Vec<usize>)> = tensors
        .iter()
        .map(|(name, data, shape)| (name.clone(), Values::F32(data), shape.clone()))
        .collect();
    write_tensors(path, &values, metadata)
}

/// A tensor's values for [`write_tensors`].
pub enum Values<'a> {
    F32(&'a [f32]),
    I64(&'a [i64]),
}

/// [`write_safetensors`] for tensors of f32 or i64 values.
pub fn write_tensors(
    path: &Path,
    tensors: &[(String, Values, Vec<usize>)],
    metadata: HashMap<String, String>,
) -> Result<()> {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(name, values, shape)| {
            let (dtype, bytes) = match values {
                Values::F32(v) => (Dtype::F32, bytemuck::cast_slice(v)),
                Values::I64(v) => (Dtype::I64, bytemuck::cast_slice(v)),
            };
            let view = TensorView::new(dtype, shape.clone(), bytes)
                .with_context(|| format!("tensor `{name}`"))?;
            Ok((name.clone(), view))
        })
        .collect::<Result<_>>()?;
    let bytes = safetensors::serialize(views, Some(metadata)).context("serialising safetensors")?;
    write_atomically(path, &bytes)
}

/// Write `bytes` to `path` through a temporary file in the same directory
/// (`.<name>.tmp<pid>`), synced to disk, then a rename; on any failure the temporary
/// is removed and `path` keeps what it held before.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .with_context(|| format!("{} is not a file path", path.display()))?;
    let tmp = dir.join(format!(
        ".{}{TEMPORARY}{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = (|| -> Result<()> {
        let mut file = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot move {} to {}", tmp.display(), path.display()))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// What marks a temporary of [`write_atomically`]: `.<name>.tmp<pid>`.
const TEMPORARY: &str = ".tmp";

/// Remove the temporaries [`write_atomically`] left in `dir` when a process died while
/// writing; returns what was removed. Call it only while no other process writes
/// into `dir` (with the run directory's lock held).
pub fn remove_stale_temporaries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for entry in
        std::fs::read_dir(dir).with_context(|| format!("cannot read folder {}", dir.display()))?
    {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let stale = name.starts_with('.')
            && name
                .rsplit_once(TEMPORARY)
                .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()));
        if stale && path.is_file() {
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
            removed.push(path);
        }
    }
    Ok(removed)
}

/// Save named GPU tensors (read back to the host).
pub fn save(
    path: &Path,
    params: &[(String, Tensor)],
    metadata: HashMap<String, String>,
) -> Result<()> {
    let host: Vec<(String, Vec<f32>, Vec<usize>)> = params
        .iter()
        .map(|(n, t)| (n.clone(), t.to_vec(), t.shape().to_vec()))
        .collect();
    write_safetensors(path, &host, metadata)
}

/// A safetensors file read into memory.
pub struct SafetensorsFile {
    path: String,
    bytes: Vec<u8>,
}

impl SafetensorsFile {
    pub fn open(path: &Path) -> Result<SafetensorsFile> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        SafeTensors::deserialize(&bytes)
            .with_context(|| format!("{} is not a valid safetensors file", path.display()))?;
        Ok(SafetensorsFile {
            path: path.display().to_string(),
            bytes,
        })
    }

    fn tensors(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("validated in open")
    }

    /// The names of the file's tensors, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .tensors()
            .names()
            .into_iter()
            .map(String::from)
            .collect();
        names.sort();
        names
    }

    pub fn metadata(&self) -> HashMap<String, String> {
        SafeTensors::read_metadata(&self.bytes)
            .ok()
            .and_then(|(_, m)| m.metadata().clone())
            .unwrap_or_default()
    }

    /// An f32 tensor's values and shape.
    pub fn f32(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let st = self.tensors();
        let t = st
            .tensor(name)
            .with_context(|| format!("{}: no tensor named `{name}`", self.path))?;
        if t.dtype() != Dtype::F32 {
            bail!("{}: `{name}` is {:?}, expected F32", self.path, t.dtype());
        }
        let data = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok((data, t.shape().to_vec()))
    }

    /// An integer tensor (I32 or I64) as i64 values and its shape.
    pub fn ints(&self, name: &str) -> Result<(Vec<i64>, Vec<usize>)> {
        let st = self.tensors();
        let t = st
            .tensor(name)
            .with_context(|| format!("{}: no tensor named `{name}`", self.path))?;
        let data = match t.dtype() {
            Dtype::I32 => t
                .data()
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as i64)
                .collect(),
            Dtype::I64 => t
                .data()
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            other => bail!(
                "{}: `{name}` is {other:?}, expected an integer type",
                self.path
            ),
        };
        Ok((data, t.shape().to_vec()))
    }

    /// Write the file's tensors `prefix + name` into `params` (in place), refusing a
    /// file whose names or shapes do not fit: the error lists what is missing,
    /// unexpected or of the wrong shape.
    pub fn load_into(&self, prefix: &str, params: &[(String, Tensor)]) -> Result<()> {
        let st = self.tensors();
        let found: Vec<(String, Vec<usize>)> = st
            .names()
            .into_iter()
            .filter_map(|n| {
                Some((
                    n.strip_prefix(prefix)?.to_string(),
                    st.tensor(n).ok()?.shape().to_vec(),
                ))
            })
            .collect();
        // A checkpoint may hold other groups (optimiser state): only names under the
        // model's top-level groups count as left over.
        let group = |n: &str| n.split('.').next().unwrap_or("").to_string();
        let groups: std::collections::HashSet<String> =
            params.iter().map(|(n, _)| group(n)).collect();
        let mut problems = fit_problems(params, &found, |n| groups.contains(&group(n)));
        for (name, _) in params {
            if let Ok(v) = st.tensor(&format!("{prefix}{name}")) {
                if v.dtype() != Dtype::F32 {
                    problems.push(format!("`{prefix}{name}` is {:?}, expected F32", v.dtype()));
                }
            }
        }
        refuse_unfit(&self.path, &problems)?;
        for (name, t) in params {
            let full = format!("{prefix}{name}");
            let (data, _) = self.f32(&full)?;
            check_finite(&self.path, &full, &data)?;
            t.write(&data)?;
        }
        Ok(())
    }
}

/// Refuse values with a NaN or an infinity, naming the file, the tensor and the first
/// bad element.
pub fn check_finite(file: &str, name: &str, data: &[f32]) -> Result<()> {
    if let Some((i, v)) = data.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        bail!("{file}: `{name}` holds a non-finite value ({v} at element {i})");
    }
    Ok(())
}

/// Why named tensors `found` (name, shape) do not fill `params` exactly: each name
/// missing or of another shape, and each name left over that `counts` accepts; empty
/// when they fit.
pub fn fit_problems(
    params: &[(String, Tensor)],
    found: &[(String, Vec<usize>)],
    counts: impl Fn(&str) -> bool,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, t) in params {
        match found.iter().find(|(n, _)| n == name) {
            None => problems.push(format!("missing `{name}` {:?}", t.shape())),
            Some((_, shape)) if shape != t.shape() => problems.push(format!(
                "`{name}` is {shape:?} in the file but {:?} in the model",
                t.shape()
            )),
            Some(_) => {}
        }
    }
    for (name, _) in found {
        if counts(name) && !params.iter().any(|(n, _)| n == name) {
            problems.push(format!("unexpected `{name}`"));
        }
    }
    problems
}

/// Refuse weights that do not fit, naming `what` and the first problems.
pub fn refuse_unfit(what: &str, problems: &[String]) -> Result<()> {
    if problems.is_empty() {
        return Ok(());
    }
    let shown = problems.len().min(8);
    bail!(
        "{what} does not fit the configured model ({} problem(s)): {}{}",
        problems.len(),
        problems[..shown].join("; "),
        if problems.len() > shown { "; ..." } else { "" }
    )
}
