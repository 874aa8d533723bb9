//! Data sets: Fashion-MNIST/MNIST IDX files (gzip or plain) and CIFAR-10 binary
//! batches held in memory as u8 pixels [N, C, H, W], and image folders (one sub-folder
//! per class, JPEG/PNG) indexed once and decoded when a batch needs an image, so that
//! memory does not grow with the folder.

use std::borrow::Cow;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// The default data: Debian's `dataset-fashion-mnist` package.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// Labelled images, in memory or streamed from files.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub channels: usize,
    /// The size images are evaluated at: in-memory images' own, a folder's
    /// `data.image_size`.
    pub height: usize,
    pub width: usize,
    pub labels: Vec<u32>,
    pub classes: usize,
    images: Images,
}

#[derive(Clone, Debug)]
enum Images {
    /// [N, C, H, W] pixels.
    InMemory(Arc<Vec<u8>>),
    /// One file per image, decoded on demand.
    Files(Arc<Vec<PathBuf>>),
}

/// One image at its own size: planar [C, H, W] (data in memory) or interleaved
/// [H, W, C] (as decoders write it).
pub struct Image<'a> {
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    pub interleaved: bool,
    pub pixels: Cow<'a, [u8]>,
}

impl Dataset {
    /// Images held in memory: `pixels` is [N, C, H, W] with N = `labels.len()`.
    pub fn in_memory(
        (channels, height, width): (usize, usize, usize),
        pixels: Vec<u8>,
        labels: Vec<u32>,
        classes: usize,
    ) -> Result<Dataset> {
        if pixels.len() != labels.len() * channels * height * width {
            bail!(
                "{} pixels are not {} images of {channels}x{height}x{width}",
                pixels.len(),
                labels.len()
            );
        }
        Ok(Dataset {
            channels,
            height,
            width,
            labels,
            classes,
            images: Images::InMemory(Arc::new(pixels)),
        })
    }

    /// Images streamed from `files`, evaluated at `size` x `size` as `channels`.
    pub fn from_files(
        channels: usize,
        size: usize,
        files: Vec<PathBuf>,
        labels: Vec<u32>,
        classes: usize,
    ) -> Dataset {
        assert_eq!(files.len(), labels.len(), "one label per file");
        Dataset {
            channels,
            height: size,
            width: size,
            labels,
            classes,
            images: Images::Files(Arc::new(files)),
        }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Values of one image at the evaluation size.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The file image `i` is read from, for streamed data.
    pub fn path(&self, i: usize) -> Option<&Path> {
        match &self.images {
            Images::InMemory(_) => None,
            Images::Files(files) => Some(&files[i]),
        }
    }

    /// Image `i` at its own size, for training crops: in-memory pixels are borrowed, a
    /// file is decoded (an error names it).
    pub fn source(&self, i: usize) -> Result<Image<'_>> {
        match &self.images {
            Images::InMemory(pixels) => {
                let n = self.image_len();
                Ok(Image {
                    height: self.height,
                    width: self.width,
                    channels: self.channels,
                    interleaved: false,
                    pixels: Cow::Borrowed(&pixels[i * n..(i + 1) * n]),
                })
            }
            Images::Files(files) => decode(&files[i], self.channels),
        }
    }

    /// Image `i` at the evaluation size, [C, H, W]: a file is decoded, its shorter side
    /// resized to the size (bilinear) and the centre cropped.
    pub fn eval_image(&self, i: usize) -> Result<Cow<'_, [u8]>> {
        match &self.images {
            Images::InMemory(_) => Ok(self.source(i)?.pixels),
            Images::Files(files) => {
                let mut out = vec![0u8; self.image_len()];
                decode_centred(&files[i], self.height, self.channels, &mut out)
                    .with_context(|| format!("cannot read image {}", files[i].display()))?;
                Ok(Cow::Owned(out))
            }
        }
    }

    /// `n` images (all if fewer) for a subset: the first ones of data in memory (IDX
    /// and CIFAR-10 files are in no class order), evenly spread over a folder (whose
    /// images are in class order).
    pub fn subset(&self, n: usize) -> Vec<usize> {
        let n = n.min(self.len());
        match &self.images {
            Images::InMemory(_) => (0..n).collect(),
            Images::Files(_) => (0..n).map(|k| k * self.len() / n).collect(),
        }
    }

    /// The images [`Dataset::subset`] picks.
    pub fn take(&self, n: usize) -> Dataset {
        let picked = self.subset(n);
        let images = match &self.images {
            Images::InMemory(p) => {
                let len = self.image_len();
                Images::InMemory(Arc::new(p[..picked.len() * len].to_vec()))
            }
            Images::Files(f) => {
                Images::Files(Arc::new(picked.iter().map(|&i| f[i].clone()).collect()))
            }
        };
        Dataset {
            labels: picked.iter().map(|&i| self.labels[i]).collect(),
            images,
            ..self.clone()
        }
    }

    /// Per-channel mean and standard deviation of the pixels scaled to [0, 1], at the
    /// evaluation size: over every image in memory, over up to [`STATS_SAMPLE`] images
    /// spread evenly over a streamed data set (unreadable ones left out).
    pub fn channel_stats(&self) -> Vec<(f32, f32)> {
        let picked = match &self.images {
            Images::InMemory(_) => self.subset(self.len()),
            Images::Files(_) => self.subset(STATS_SAMPLE),
        };
        let images = eval_images(self, &picked, 0);
        let plane = self.height * self.width;
        let mut sums = vec![(0f64, 0f64, 0f64); self.channels];
        for image in images.iter().flatten() {
            for (c, (s, s2, n)) in sums.iter_mut().enumerate() {
                for &p in &image[c * plane..(c + 1) * plane] {
                    let v = p as f64 / 255.0;
                    *s += v;
                    *s2 += v * v;
                    *n += 1.0;
                }
            }
        }
        sums.into_iter()
            .map(|(s, s2, n)| {
                let mean = s / n.max(1.0);
                (
                    mean as f32,
                    (s2 / n.max(1.0) - mean * mean).max(1e-12).sqrt() as f32,
                )
            })
            .collect()
    }
}

/// Images a streamed data set's channel statistics are taken over.
pub const STATS_SAMPLE: usize = 1000;

/// Images `indices` of `data` at the evaluation size, decoded on `threads` threads (0:
/// every core), in order; an unreadable file is an error in its slot.
pub fn eval_images<'a>(
    data: &'a Dataset,
    indices: &[usize],
    threads: usize,
) -> Vec<Result<Cow<'a, [u8]>>> {
    if !matches!(data.images, Images::Files(_)) {
        return indices.iter().map(|&i| data.eval_image(i)).collect();
    }
    parallel_map(indices, threads, |&i| data.eval_image(i))
}

/// `f` over `items` on `threads` threads (0: every core), each taking a consecutive run;
/// the results in item order.
pub fn parallel_map<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let per_thread = items.len().div_ceil(worker_count(threads)).max(1);
    let f = &f;
    std::thread::scope(|scope| {
        let workers: Vec<_> = items
            .chunks(per_thread)
            .map(|chunk| scope.spawn(move || chunk.iter().map(f).collect::<Vec<R>>()))
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a data worker thread panicked"))
            .collect()
    })
}

/// `threads`, or every core when 0.
pub fn worker_count(threads: usize) -> usize {
    if threads > 0 {
        threads
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// The kinds of data `data.kind` names.
pub const DATA_KINDS: [&str; 3] = ["idx", "cifar10", "folder"];

/// The largest side folder images are resized to (the official configs use 224 and
/// 448).
pub const MAX_FOLDER_IMAGE_SIZE: usize = 2048;

/// Where the data comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// "idx" (Fashion-MNIST/MNIST), "cifar10" or "folder".
    pub kind: String,
    pub dir: PathBuf,
    /// Image side: what "folder" images are cropped to; IDX and CIFAR-10 images keep
    /// their own, which a resolved configuration shows here.
    pub image_size: usize,
    /// Channels: 1 (luma) or 3 (RGB) for "folder" data; IDX's 1 and CIFAR-10's 3 are
    /// shown here once resolved.
    pub channels: usize,
    /// Use only N training images (0: all): the first ones, or spread evenly over a
    /// folder's classes.
    pub train_limit: usize,
    /// Use only N test images (0: all), picked the same way.
    pub test_limit: usize,
    /// Threads that decode and crop a batch (0: every core).
    pub workers: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            kind: "idx".into(),
            dir: FASHION_MNIST_DIR.into(),
            image_size: 28,
            channels: 1,
            train_limit: 0,
            test_limit: 0,
            workers: 0,
        }
    }
}

impl DataConfig {
    /// (channels, side) of the images this configuration loads, known without loading
    /// them: a folder's from the keys, CIFAR-10's 3x32x32, IDX files' from their header
    /// (28x28 Fashion-MNIST when the files are not there, for benchmarks on synthetic
    /// images).
    pub fn geometry(&self) -> Result<(usize, usize)> {
        self.validate()?;
        Ok(match self.kind.as_str() {
            "idx" => match find(&self.dir, "train-images-idx3-ubyte") {
                Ok(path) => {
                    let dims = read_idx_dims(&path)?;
                    if dims.len() != 3 || dims[1] != dims[2] {
                        bail!("{}: images {dims:?} are not square", path.display());
                    }
                    (1, dims[1])
                }
                Err(_) => (1, 28),
            },
            "cifar10" => (3, 32),
            "folder" => (self.channels, self.image_size),
            other => unreachable!("data.kind {other:?} passed validate"),
        })
    }

    /// This configuration with `channels` and `image_size` set to the images' own for
    /// IDX and CIFAR-10 data (for those kinds the keys are not read, only shown).
    pub fn resolved(&self) -> Result<DataConfig> {
        let (channels, image_size) = self.geometry()?;
        Ok(DataConfig {
            channels,
            image_size,
            ..self.clone()
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

/// The dims in an IDX file's header, reading no further.
fn read_idx_dims(path: &Path) -> Result<Vec<usize>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut peek = std::io::BufReader::new(file);
    let gz = std::io::BufRead::fill_buf(&mut peek)
        .map(|b| b.starts_with(&[0x1f, 0x8b]))
        .unwrap_or(false);
    let mut reader: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(peek))
    } else {
        Box::new(peek)
    };
    let name = path.display();
    let mut magic = [0u8; 4];
    reader
        .read_exact(&mut magic)
        .with_context(|| format!("{name}: truncated IDX header"))?;
    if magic[..2] != [0, 0] || magic[2] != 0x08 || magic[3] == 0 {
        bail!("{name}: not an IDX file of unsigned bytes");
    }
    (0..magic[3])
        .map(|_| {
            let mut d = [0u8; 4];
            reader
                .read_exact(&mut d)
                .with_context(|| format!("{name}: truncated IDX header"))?;
            Ok(u32::from_be_bytes(d) as usize)
        })
        .collect()
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
    Dataset::in_memory((1, dims[1], dims[2]), pixels, labels, classes)
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
        Dataset::in_memory((3, 32, 32), pixels, labels, 10)
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

/// What indexing an image folder left out.
#[derive(Debug, Default)]
pub struct FolderReport {
    /// Files without an image extension (.jpg, .jpeg, .png).
    pub not_images: Vec<PathBuf>,
    /// Folders inside a class folder (images are read one level deep).
    pub nested: Vec<PathBuf>,
}

impl FolderReport {
    /// One line per kind of thing left out.
    pub fn warnings(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(first) = self.not_images.first() {
            lines.push(format!(
                "left out {} file(s) without an image extension (.jpg, .jpeg, .png), such as {}",
                self.not_images.len(),
                first.display()
            ));
        }
        lines.extend(self.nested.iter().map(|d| {
            format!(
                "left out folder {}: images are read one level below the class folders",
                d.display()
            )
        }));
        lines
    }
}

/// The class names of an image folder `dir/<class>/<image>`: its sub-folders, sorted
/// (as torchvision's `ImageFolder` numbers them).
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

/// The extensions an image folder's images have (any case).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

fn is_image_file(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// Index an ImageNet-style folder `dir/<class>/<image>`: the images of each class in
/// name order, labelled by the position of the class's name in `classes` (a sub-folder
/// not in `classes` is an error naming it), to be decoded when a batch needs them and
/// evaluated at `size` x `size` as `channels` (1 = luma, 3 = RGB). A class folder
/// without a readable image is an error naming it; nested folders and other files are
/// left out and reported.
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
    let (mut files, mut labels) = (Vec::new(), Vec::new());
    for class_dir in sorted_entries(dir, Path::is_dir)? {
        let name = class_dir.file_name().unwrap_or_default().to_string_lossy();
        let Some(label) = classes.iter().position(|c| *c == name) else {
            bail!(
                "{}: class `{name}` is not among the training classes ({})",
                dir.display(),
                classes.join(", ")
            );
        };
        let mut images = Vec::new();
        for entry in sorted_entries(&class_dir, |_| true)? {
            if entry.is_dir() {
                report.nested.push(entry);
            } else if is_image_file(&entry) {
                images.push(entry);
            } else {
                report.not_images.push(entry);
            }
        }
        // The headers tell a class of unreadable files before training starts.
        if !images
            .iter()
            .any(|f| image::ImageReader::open(f).is_ok_and(|r| r.into_dimensions().is_ok()))
        {
            bail!(
                "class folder {} holds no readable image ({} file(s) with an image extension)",
                class_dir.display(),
                images.len()
            );
        }
        labels.extend(std::iter::repeat_n(label as u32, images.len()));
        files.extend(images);
    }
    if files.is_empty() {
        bail!("{}: no class sub-folders", dir.display());
    }
    Ok((
        Dataset::from_files(channels, size, files, labels, classes.len()),
        report,
    ))
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

fn open_image(path: &Path) -> Result<image::DynamicImage> {
    let img = image::open(path).with_context(|| format!("cannot read image {}", path.display()))?;
    if img.width() == 0 || img.height() == 0 {
        bail!(
            "{}: an empty {}x{} image",
            path.display(),
            img.width(),
            img.height()
        );
    }
    Ok(img)
}

/// `img` as planar [C, H, W] bytes (1 = luma, 3 = RGB).
fn planar(img: &image::DynamicImage, channels: usize, out: &mut [u8]) {
    if channels == 1 {
        out.copy_from_slice(img.to_luma8().as_raw());
    } else {
        let plane = (img.width() * img.height()) as usize;
        for (i, p) in img.to_rgb8().pixels().enumerate() {
            for c in 0..3 {
                out[c * plane + i] = p.0[c];
            }
        }
    }
}

/// A whole image file at its own size, interleaved as the decoder wrote it (converted
/// to luma or RGB only when it is not already).
fn decode(path: &Path, channels: usize) -> Result<Image<'static>> {
    let img = open_image(path)?;
    let (height, width) = (img.height() as usize, img.width() as usize);
    let pixels = if channels == 1 {
        img.into_luma8().into_raw()
    } else {
        img.into_rgb8().into_raw()
    };
    Ok(Image {
        height,
        width,
        channels,
        interleaved: true,
        pixels: Cow::Owned(pixels),
    })
}

/// An image file resized (shorter side to `size`, bilinear), centre-cropped and written
/// to `out` as `channels` planes of size x size.
fn decode_centred(path: &Path, size: usize, channels: usize, out: &mut [u8]) -> Result<()> {
    let img = open_image(path)?;
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
    planar(&img, channels, out);
    Ok(())
}
