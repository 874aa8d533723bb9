//! Data sets held in memory as u8 pixels [N, C, H, W]: Fashion-MNIST/MNIST IDX files
//! (gzip or plain), CIFAR-10 binary batches, and image folders (one sub-folder per
//! class, JPEG/PNG).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The default data: Debian's `dataset-fashion-mnist` package.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

#[derive(Clone, Debug)]
pub struct Dataset {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    /// [N, C, H, W] pixels.
    pub pixels: Vec<u8>,
    pub labels: Vec<u32>,
    pub classes: usize,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    pub fn image(&self, i: usize) -> &[u8] {
        &self.pixels[i * self.image_len()..(i + 1) * self.image_len()]
    }

    /// The first `n` images (all if fewer).
    pub fn take(&self, n: usize) -> Dataset {
        let n = n.min(self.len());
        Dataset {
            pixels: self.pixels[..n * self.image_len()].to_vec(),
            labels: self.labels[..n].to_vec(),
            ..self.clone()
        }
    }

    /// Per-channel mean and standard deviation of the pixels scaled to [0, 1].
    pub fn channel_stats(&self) -> Vec<(f32, f32)> {
        let plane = self.height * self.width;
        (0..self.channels)
            .map(|c| {
                let (mut s, mut s2, mut n) = (0f64, 0f64, 0f64);
                for i in 0..self.len() {
                    for &p in &self.image(i)[c * plane..(c + 1) * plane] {
                        let v = p as f64 / 255.0;
                        s += v;
                        s2 += v * v;
                        n += 1.0;
                    }
                }
                let mean = s / n;
                (mean as f32, (s2 / n - mean * mean).max(1e-12).sqrt() as f32)
            })
            .collect()
    }
}

/// The kinds of data `data.kind` names.
pub const DATA_KINDS: [&str; 3] = ["idx", "cifar10", "folder"];

/// The largest side folder images are resized to (the official configs use 224 and
/// 448).
pub const MAX_FOLDER_IMAGE_SIZE: usize = 2048;

/// Where the data comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// "idx" (Fashion-MNIST/MNIST), "cifar10" or "folder".
    pub kind: String,
    pub dir: PathBuf,
    /// Image side for "folder" data (IDX and CIFAR keep their own size).
    pub image_size: usize,
    /// Channels for "folder" data: 1 or 3.
    pub channels: usize,
    /// Use only the first N training images (0: all).
    pub train_limit: usize,
    /// Use only the first N test images (0: all).
    pub test_limit: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            kind: "idx".into(),
            dir: FASHION_MNIST_DIR.into(),
            image_size: 32,
            channels: 3,
            train_limit: 0,
            test_limit: 0,
        }
    }
}

impl DataConfig {
    /// (channels, side) of the images this configuration loads, known without loading
    /// them (for benchmarks on synthetic images; IDX data is taken to be 28x28
    /// Fashion-MNIST or MNIST).
    pub fn geometry(&self) -> Result<(usize, usize)> {
        self.validate()?;
        Ok(match self.kind.as_str() {
            "idx" => (1, 28),
            "cifar10" => (3, 32),
            "folder" => (self.channels, self.image_size),
            other => unreachable!("data.kind {other:?} passed validate"),
        })
    }

    /// Check the keys that do not need the files: the kind, and a folder's channels
    /// and image side.
    pub fn validate(&self) -> Result<()> {
        if !DATA_KINDS.contains(&self.kind.as_str()) {
            bail!(
                "data.kind = {:?}: must be one of {}",
                self.kind,
                DATA_KINDS.join(", ")
            );
        }
        if self.kind == "folder" {
            if self.channels != 1 && self.channels != 3 {
                bail!("data.channels = {}: must be 1 or 3", self.channels);
            }
            if !(1..=MAX_FOLDER_IMAGE_SIZE).contains(&self.image_size) {
                bail!(
                    "data.image_size = {}: must be in 1..={MAX_FOLDER_IMAGE_SIZE}",
                    self.image_size
                );
            }
        }
        Ok(())
    }

    pub fn load(&self) -> Result<Splits> {
        self.validate()?;
        let mut splits = match self.kind.as_str() {
            "idx" => load_idx_dir(&self.dir)?,
            "cifar10" => load_cifar10_dir(&self.dir)?,
            "folder" => {
                // Labels are numbered by the training split's class names, so that a
                // class has the same label in both splits.
                let classes = folder_classes(&self.dir.join("train"))?;
                let mut warnings = Vec::new();
                let mut load = |split: &str| -> Result<Dataset> {
                    let (data, report) = load_image_folder(
                        &self.dir.join(split),
                        &classes,
                        self.image_size,
                        self.channels,
                    )?;
                    warnings.extend(report.warnings());
                    Ok(data)
                };
                let (train, test) = (load("train")?, load("val")?);
                for w in warnings {
                    eprintln!("warning: {w}");
                }
                Splits {
                    train: Arc::new(train),
                    test: Arc::new(test),
                }
            }
            other => unreachable!("data.kind {other:?} passed validate"),
        };
        if self.train_limit > 0 {
            splits.train = Arc::new(splits.train.take(self.train_limit));
        }
        if self.test_limit > 0 {
            splits.test = Arc::new(splits.test.take(self.test_limit));
        }
        Ok(splits)
    }
}

/// A train and a test split, shared with the background loader without copies.
pub struct Splits {
    pub train: Arc<Dataset>,
    pub test: Arc<Dataset>,
}

/// Read a file, gunzipping it when it starts with the gzip magic bytes.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .with_context(|| format!("{} is not a valid gzip file", path.display()))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// An IDX file of u8 values: returns the dims and the data, checking the header
/// against the file's length.
pub fn read_idx(path: &Path) -> Result<(Vec<usize>, Vec<u8>)> {
    let bytes = read_maybe_gz(path)?;
    let name = path.display();
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        bail!("{name}: not an IDX file (bad magic number)");
    }
    if bytes[2] != 0x08 {
        bail!(
            "{name}: IDX element type 0x{:02x}, expected 0x08 (unsigned byte)",
            bytes[2]
        );
    }
    let rank = bytes[3] as usize;
    let header = 4 + 4 * rank;
    if rank == 0 || bytes.len() < header {
        bail!("{name}: truncated IDX header");
    }
    let dims: Vec<usize> = (0..rank)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let expected: usize = dims.iter().product();
    if bytes.len() - header != expected {
        bail!(
            "{name}: header says {dims:?} = {expected} values, the file holds {}",
            bytes.len() - header
        );
    }
    Ok((dims, bytes[header..].to_vec()))
}

fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    for candidate in [format!("{stem}.gz"), stem.to_string()] {
        let p = dir.join(&candidate);
        if p.exists() {
            return Ok(p);
        }
    }
    bail!("{}: no {stem} or {stem}.gz", dir.display())
}

fn idx_split(dir: &Path, prefix: &str) -> Result<Dataset> {
    let images = find(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let labels = find(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let (dims, pixels) = read_idx(&images)?;
    let (ldims, labels_u8) = read_idx(&labels)?;
    if dims.len() != 3 || ldims.len() != 1 || dims[0] != ldims[0] {
        bail!(
            "{}: images {dims:?} and labels {ldims:?} do not match",
            dir.display()
        );
    }
    let labels: Vec<u32> = labels_u8.iter().map(|&l| l as u32).collect();
    let classes = labels.iter().max().map_or(0, |&m| m as usize + 1);
    Ok(Dataset {
        channels: 1,
        height: dims[1],
        width: dims[2],
        pixels,
        labels,
        classes,
    })
}

/// MNIST-format data (Fashion-MNIST, MNIST): `train-*` and `t10k-*` IDX files.
pub fn load_idx_dir(dir: &Path) -> Result<Splits> {
    if !dir.is_dir() {
        bail!("data directory {} does not exist (for Fashion-MNIST: apt-get install dataset-fashion-mnist)", dir.display());
    }
    Ok(Splits {
        train: Arc::new(idx_split(dir, "train")?),
        test: Arc::new(idx_split(dir, "t10k")?),
    })
}

/// CIFAR-10 binary batches: `data_batch_{1..5}.bin` and `test_batch.bin`, records of
/// one label byte and 3x32x32 pixels.
pub fn load_cifar10_dir(dir: &Path) -> Result<Splits> {
    if !dir.is_dir() {
        bail!("data directory {} does not exist", dir.display());
    }
    let read = |files: &[PathBuf]| -> Result<Dataset> {
        let (mut pixels, mut labels) = (Vec::new(), Vec::new());
        for f in files {
            let bytes = std::fs::read(f).with_context(|| format!("cannot read {}", f.display()))?;
            const RECORD: usize = 1 + 3 * 32 * 32;
            if bytes.is_empty() || bytes.len() % RECORD != 0 {
                bail!(
                    "{}: {} bytes is not a whole number of {RECORD}-byte CIFAR-10 records",
                    f.display(),
                    bytes.len()
                );
            }
            for rec in bytes.chunks(RECORD) {
                if rec[0] > 9 {
                    bail!("{}: label {} out of range 0..10", f.display(), rec[0]);
                }
                labels.push(rec[0] as u32);
                pixels.extend_from_slice(&rec[1..]);
            }
        }
        Ok(Dataset {
            channels: 3,
            height: 32,
            width: 32,
            pixels,
            labels,
            classes: 10,
        })
    };
    let train: Vec<PathBuf> = (1..=5)
        .map(|i| dir.join(format!("data_batch_{i}.bin")))
        .collect();
    for f in &train {
        if !f.exists() {
            bail!("{}: missing {}", dir.display(), f.display());
        }
    }
    Ok(Splits {
        train: Arc::new(read(&train)?),
        test: Arc::new(read(&[dir.join("test_batch.bin")])?),
    })
}

/// What loading an image folder left out.
#[derive(Debug, Default)]
pub struct FolderReport {
    /// Files that did not decode as images, with the decoder's error.
    pub skipped: Vec<(PathBuf, String)>,
    /// Folders inside a class folder (images are read one level deep).
    pub nested: Vec<PathBuf>,
    /// Class folders without a file.
    pub empty_classes: Vec<PathBuf>,
}

impl FolderReport {
    /// One line per thing left out, then a count of the skipped images.
    pub fn warnings(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .skipped
            .iter()
            .map(|(f, e)| format!("skipped unreadable image {}: {e}", f.display()))
            .collect();
        if !self.skipped.is_empty() {
            lines.push(format!(
                "{} unreadable image(s) skipped",
                self.skipped.len()
            ));
        }
        lines.extend(self.nested.iter().map(|d| {
            format!(
                "skipped folder {}: images are read one level below the class folders",
                d.display()
            )
        }));
        lines.extend(
            self.empty_classes
                .iter()
                .map(|d| format!("class folder {} holds no images", d.display())),
        );
        lines
    }
}

/// The class names of an image folder `dir/<class>/<image>`: its sub-folders, sorted.
pub fn folder_classes(dir: &Path) -> Result<Vec<String>> {
    let classes: Vec<String> = sorted_entries(dir, Path::is_dir)?
        .iter()
        .map(|d| {
            d.file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    if classes.is_empty() {
        bail!("{}: no class sub-folders", dir.display());
    }
    Ok(classes)
}

/// An ImageNet-style folder: `dir/<class>/<image>`, labelled by the position of the
/// class's name in `classes` (a sub-folder not in `classes` is an error naming it).
/// Each image is resized (shorter side to `size`, bilinear) and centre-cropped to
/// size x size, as `channels` (1 = luma, 3 = RGB), decoding on every core. Unreadable
/// images, nested folders and empty classes are left out and reported, not fatal.
pub fn load_image_folder(
    dir: &Path,
    classes: &[String],
    size: usize,
    channels: usize,
) -> Result<(Dataset, FolderReport)> {
    if channels != 1 && channels != 3 {
        bail!("image folders load as 1 or 3 channels, not {channels}");
    }
    let mut report = FolderReport::default();
    let mut files: Vec<(PathBuf, u32)> = Vec::new();
    for class_dir in sorted_entries(dir, Path::is_dir)? {
        let name = class_dir.file_name().unwrap_or_default().to_string_lossy();
        let Some(label) = classes.iter().position(|c| *c == name) else {
            bail!(
                "{}: class `{name}` is not among the training classes ({})",
                dir.display(),
                classes.join(", ")
            );
        };
        let in_class = sorted_entries(&class_dir, |_| true)?;
        let (nested, images): (Vec<PathBuf>, Vec<PathBuf>) =
            in_class.into_iter().partition(|p| p.is_dir());
        report.nested.extend(nested);
        if images.is_empty() {
            report.empty_classes.push(class_dir.clone());
        }
        files.extend(images.into_iter().map(|f| (f, label as u32)));
    }
    if files.is_empty() {
        bail!("{}: no images in its class folders", dir.display());
    }

    // Every image decodes into its own slot; the threads take consecutive runs of files.
    let image_len = size * size * channels;
    let bytes = files.len().saturating_mul(image_len);
    let mut pixels = Vec::new();
    pixels.try_reserve_exact(bytes).map_err(|_| {
        anyhow::anyhow!(
            "{}: {} images of {channels}x{size}x{size} need {:.1} GiB of memory, more than can be allocated; \
             lower data.image_size",
            dir.display(),
            files.len(),
            bytes as f64 / (1u64 << 30) as f64
        )
    })?;
    pixels.resize(bytes, 0u8);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_thread = files.len().div_ceil(threads).max(1);
    let failures: Vec<Option<String>> = std::thread::scope(|scope| {
        let decoders: Vec<_> = files
            .chunks(per_thread)
            .zip(pixels.chunks_mut(per_thread * image_len))
            .map(|(files, slots)| {
                scope.spawn(move || {
                    files
                        .iter()
                        .zip(slots.chunks_mut(image_len))
                        .map(|((path, _), slot)| decode_into(path, size, channels, slot).err())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        decoders
            .into_iter()
            .flat_map(|d| d.join().expect("an image decoder thread panicked"))
            .collect()
    });

    // Keep the readable images, in order.
    let mut data = Dataset {
        channels,
        height: size,
        width: size,
        pixels: Vec::new(),
        labels: Vec::new(),
        classes: classes.len(),
    };
    for (i, ((path, label), failure)) in files.into_iter().zip(failures).enumerate() {
        match failure {
            None => {
                let kept = data.labels.len();
                pixels.copy_within(i * image_len..(i + 1) * image_len, kept * image_len);
                data.labels.push(label);
            }
            Some(e) => report.skipped.push((path, e)),
        }
    }
    pixels.truncate(data.labels.len() * image_len);
    data.pixels = pixels;
    if data.is_empty() {
        bail!("{}: no readable images", dir.display());
    }
    Ok((data, report))
}

/// The entries of a folder that `keep` accepts, sorted; hidden entries (a leading
/// `.`) are not data.
fn sorted_entries(dir: &Path, keep: fn(&Path) -> bool) -> Result<Vec<PathBuf>> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .filter(|p| keep(p))
        .collect();
    entries.sort();
    Ok(entries)
}

/// One image resized (shorter side to `size`), centre-cropped and written to `out` as
/// `channels` planes of size x size.
fn decode_into(
    path: &Path,
    size: usize,
    channels: usize,
    out: &mut [u8],
) -> std::result::Result<(), String> {
    let img = image::open(path).map_err(|e| e.to_string())?;
    if img.width() == 0 || img.height() == 0 {
        return Err(format!("an empty {}x{} image", img.width(), img.height()));
    }
    let (w, h) = (img.width() as f64, img.height() as f64);
    let s = size as f64 / w.min(h);
    let (nw, nh) = (
        (w * s).round().max(size as f64) as u32,
        (h * s).round().max(size as f64) as u32,
    );
    let img = img.resize_exact(nw, nh, image::imageops::FilterType::Triangle);
    let img = img.crop_imm(
        (nw - size as u32) / 2,
        (nh - size as u32) / 2,
        size as u32,
        size as u32,
    );
    if channels == 1 {
        out.copy_from_slice(img.to_luma8().as_raw());
    } else {
        let plane = size * size;
        for (i, p) in img.to_rgb8().pixels().enumerate() {
            for c in 0..3 {
                out[c * plane + i] = p.0[c];
            }
        }
    }
    Ok(())
}
