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
        Ok(match self.kind.as_str() {
            "idx" => (1, 28),
            "cifar10" => (3, 32),
            "folder" => (self.channels, self.image_size),
            other => bail!("data kind `{other}` is not one of idx, cifar10, folder"),
        })
    }

    pub fn load(&self) -> Result<Splits> {
        let mut splits = match self.kind.as_str() {
            "idx" => load_idx_dir(&self.dir)?,
            "cifar10" => load_cifar10_dir(&self.dir)?,
            "folder" => {
                let (train, report) =
                    load_image_folder(&self.dir.join("train"), self.image_size, self.channels)?;
                let (test, report2) =
                    load_image_folder(&self.dir.join("val"), self.image_size, self.channels)?;
                for (f, e) in report.skipped.iter().chain(&report2.skipped) {
                    eprintln!("warning: skipped unreadable image {}: {e}", f.display());
                }
                let skipped = report.skipped.len() + report2.skipped.len();
                if skipped > 0 {
                    eprintln!("warning: {skipped} unreadable image(s) skipped");
                }
                Splits {
                    train: Arc::new(train),
                    test: Arc::new(test),
                }
            }
            other => bail!("data kind `{other}` is not one of idx, cifar10, folder"),
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

/// What loading an image folder skipped.
#[derive(Debug, Default)]
pub struct FolderReport {
    pub skipped: Vec<(PathBuf, String)>,
}

/// An ImageNet-style folder: `dir/<class>/<image>`; classes in sorted order. Each
/// image is resized (shorter side to `size`, bilinear) and centre-cropped to
/// size x size, as `channels` (1 = luma, 3 = RGB), decoding on every core. Unreadable
/// images are skipped and reported, not fatal.
pub fn load_image_folder(
    dir: &Path,
    size: usize,
    channels: usize,
) -> Result<(Dataset, FolderReport)> {
    if channels != 1 && channels != 3 {
        bail!("image folders load as 1 or 3 channels, not {channels}");
    }
    let classes = sorted_entries(dir, Path::is_dir)?;
    if classes.is_empty() {
        bail!("{}: no class sub-folders", dir.display());
    }
    let mut files: Vec<(PathBuf, u32)> = Vec::new();
    for (label, class_dir) in classes.iter().enumerate() {
        let in_class = sorted_entries(class_dir, Path::is_file)?;
        files.extend(in_class.into_iter().map(|f| (f, label as u32)));
    }

    // Every image decodes into its own slot; the threads take consecutive runs of files.
    let image_len = size * size * channels;
    let mut pixels = vec![0u8; files.len() * image_len];
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
    let mut report = FolderReport::default();
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

/// The entries of a folder that `keep` accepts, sorted.
fn sorted_entries(dir: &Path, keep: fn(&Path) -> bool) -> Result<Vec<PathBuf>> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
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
