//! Configuration files: JSON or YAML holding any subset of our keys, or an official
//! I-JEPA YAML file (`configs/in1k_vith14_ep300.yaml` and the like: sections `data`,
//! `logging`, `mask`, `meta`, `optimization`) read as it is, each of its keys mapped
//! onto ours, accepted as having no effect, or refused with the reason.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};

use crate::config::PretrainConfig;

/// A configuration file, ready to apply over a preset.
#[derive(Debug)]
pub struct ConfigFile {
    path: PathBuf,
    /// Our keys, as JSON.
    keys: Value,
    /// The official `logging.folder`, the run directory when `--out` is not given.
    pub out_dir: Option<PathBuf>,
    /// What the run does differently from the official code, to be printed.
    pub notes: Vec<String>,
}

/// The top-level sections of an official configuration file.
const OFFICIAL_SECTIONS: [&str; 5] = ["data", "logging", "mask", "meta", "optimization"];

impl ConfigFile {
    /// Read a `.json`, `.yaml` or `.yml` file. A file whose top level has any of the
    /// official sections other than `data` is read as an official configuration.
    pub fn read(path: &Path) -> Result<ConfigFile> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let yaml = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
        let value = if yaml {
            parse_yaml(&text).with_context(|| format!("config file {}", path.display()))?
        } else {
            serde_json::from_str(&text)
                .with_context(|| format!("config file {}", path.display()))?
        };
        let official = value.as_object().is_some_and(|o| {
            o.keys()
                .any(|k| k != "data" && OFFICIAL_SECTIONS.contains(&k.as_str()))
        });
        let mut file = ConfigFile {
            path: path.to_path_buf(),
            keys: value,
            out_dir: None,
            notes: Vec::new(),
        };
        if official {
            file.map_official()
                .with_context(|| format!("official config file {}", path.display()))?;
        }
        Ok(file)
    }

    /// `base` with this file's keys applied over it (nested objects key by key);
    /// unknown keys and bad values are errors that name the file.
    pub fn apply(&self, base: &PretrainConfig) -> Result<PretrainConfig> {
        let mut value = serde_json::to_value(base)?;
        merge_json(&mut value, self.keys.clone());
        serde_json::from_value(value)
            .with_context(|| format!("config file {}", self.path.display()))
    }

    /// Replace the official keys by ours.
    fn map_official(&mut self) -> Result<()> {
        let Value::Object(sections) = std::mem::take(&mut self.keys) else {
            unreachable!("checked to be an object")
        };
        let mut ours = Map::new();
        let mut set = |key: &str, v: Value| {
            let mut at = &mut ours;
            let mut parts = key.split('.').peekable();
            while let Some(part) = parts.next() {
                if parts.peek().is_none() {
                    at.insert(part.to_string(), v);
                    return;
                }
                at = at
                    .entry(part)
                    .or_insert_with(|| Value::Object(Map::new()))
                    .as_object_mut()
                    .expect("our keys nest objects");
            }
        };
        let section = |name: &str| -> Result<Map<String, Value>> {
            match sections.get(name) {
                None | Some(Value::Null) => Ok(Map::new()),
                Some(Value::Object(m)) => Ok(m.clone()),
                Some(other) => bail!("`{name}` is {other}, expected a section of keys"),
            }
        };
        for name in sections.keys() {
            if !OFFICIAL_SECTIONS.contains(&name.as_str()) {
                bail!(
                    "unknown section `{name}`; the official sections are {}",
                    OFFICIAL_SECTIONS.join(", ")
                );
            }
        }
        let no_effect = |notes: &mut Vec<String>, key: &str, why: &str| {
            notes.push(format!("{key}: no effect here ({why})"));
        };
        let epochs = section("optimization")?
            .get("epochs")
            .and_then(Value::as_f64);

        let data = section("data")?;
        // The official runs read every image of the folder, in RGB.
        set("data.kind", json!("folder"));
        set("data.channels", json!(3));
        set("data.train_limit", json!(0));
        set("data.test_limit", json!(0));
        let root = data.get("root_path").and_then(Value::as_str);
        let folder = data.get("image_folder").and_then(Value::as_str);
        for (key, v) in [("root_path", root), ("image_folder", folder)] {
            if v.is_some_and(|v| v.contains("$replace")) {
                bail!(
                    "data.{key} is the placeholder {:?}: set it to your data",
                    v.unwrap()
                );
            }
        }
        match (root, folder) {
            (Some(root), Some(folder)) => set("data.dir", json!(Path::new(root).join(folder))),
            (Some(root), None) => set("data.dir", json!(root)),
            (None, _) => bail!("data.root_path is missing: the folder that holds image_folder"),
        }
        for (key, v) in &data {
            let full = format!("data.{key}");
            match key.as_str() {
                "root_path" | "image_folder" => {}
                "batch_size" => set("batch_size", v.clone()),
                "crop_size" => set("data.image_size", v.clone()),
                "crop_scale" => set("crop_scale", v.clone()),
                "num_workers" => set("data.workers", v.clone()),
                "use_color_distortion" | "use_gaussian_blur" | "use_horizontal_flip" => {
                    if v.as_bool() != Some(false) {
                        bail!("{full}: {v} is not supported: I-JEPA's only augmentation is RandomResizedCrop (set it to false)");
                    }
                }
                "color_jitter_strength" => {
                    if v.as_f64() != Some(0.0) {
                        no_effect(&mut self.notes, &full, "colour distortion is off");
                    }
                }
                "pin_mem" => no_effect(&mut self.notes, &full, "it tunes the PyTorch loader"),
                _ => bail!("unknown key `{full}`"),
            }
        }

        for (key, v) in section("logging")? {
            let full = format!("logging.{key}");
            match key.as_str() {
                "folder" => match v.as_str() {
                    Some(dir) if !dir.contains("$replace") => self.out_dir = Some(dir.into()),
                    _ => no_effect(
                        &mut self.notes,
                        &full,
                        "a placeholder: the run goes to --out",
                    ),
                },
                "write_tag" => no_effect(
                    &mut self.notes,
                    &full,
                    "the files are checkpoint.safetensors and metrics.jsonl",
                ),
                _ => bail!("unknown key `{full}`"),
            }
        }

        for (key, v) in section("mask")? {
            let ours = match key.as_str() {
                "patch_size" => "patch_size",
                "min_keep" => "min_keep",
                "num_enc_masks" => "nenc",
                "num_pred_masks" => "npred",
                "enc_mask_scale" => "enc_mask_scale",
                "pred_mask_scale" => "pred_mask_scale",
                "aspect_ratio" => "aspect_ratio",
                "allow_overlap" => "allow_overlap",
                _ => bail!("unknown key `mask.{key}`"),
            };
            set(ours, v);
        }

        let meta = section("meta")?;
        for (key, v) in &meta {
            let full = format!("meta.{key}");
            match key.as_str() {
                "model_name" => set("model", v.clone()),
                "pred_depth" => set("pred_depth", v.clone()),
                "pred_emb_dim" => set("pred_embed_dim", v.clone()),
                "use_bfloat16" => {
                    if v.as_bool() == Some(true) {
                        set("precision", json!("mixed"));
                        self.notes.push(format!(
                            "{full}: true: mixed precision, with f16 operands in place of bfloat16 (WGSL has no bfloat16) and f32 gradients"
                        ));
                    }
                }
                "load_checkpoint" => {
                    if v.as_bool() == Some(true) {
                        bail!("{full}: true: continue a run with `ijepa pretrain --resume --out DIR` instead");
                    }
                }
                "read_checkpoint" => {
                    if !v.is_null() {
                        no_effect(&mut self.notes, &full, "load_checkpoint is false");
                    }
                }
                "copy_data" => no_effect(&mut self.notes, &full, "it tunes the PyTorch loader"),
                _ => bail!("unknown key `{full}`"),
            }
        }

        for (key, v) in section("optimization")? {
            let full = format!("optimization.{key}");
            match key.as_str() {
                "ema" | "epochs" | "lr" | "start_lr" | "final_lr" | "weight_decay"
                | "final_weight_decay" => set(&key, v),
                "warmup" => {
                    let (Some(warmup), Some(epochs)) = (v.as_f64(), epochs) else {
                        bail!(
                            "{full}: {v} needs a number of warm-up epochs and optimization.epochs"
                        );
                    };
                    if epochs <= 0.0 || !(0.0..epochs).contains(&warmup) {
                        bail!("{full}: {warmup} warm-up epochs must be in [0, epochs = {epochs})");
                    }
                    set("warmup_fraction", json!(warmup / epochs));
                }
                "ipe_scale" => {
                    if v.as_f64() != Some(1.0) {
                        bail!("{full}: {v} is not supported: the schedules span the run (1.0)");
                    }
                }
                _ => bail!("unknown key `{full}`"),
            }
        }
        self.keys = Value::Object(ours);
        Ok(())
    }
}

/// YAML as JSON values: mappings with string keys, sequences, and scalars.
fn parse_yaml(text: &str) -> Result<Value> {
    use yaml_rust2::{Yaml, YamlLoader};
    fn convert(y: &Yaml) -> Result<Value> {
        Ok(match y {
            Yaml::Real(r) => {
                let v: f64 = r.parse().with_context(|| format!("{r} is not a number"))?;
                json!(v)
            }
            Yaml::Integer(i) => json!(i),
            Yaml::String(s) => json!(s),
            Yaml::Boolean(b) => json!(b),
            Yaml::Array(a) => Value::Array(a.iter().map(convert).collect::<Result<_>>()?),
            Yaml::Hash(h) => {
                let mut m = Map::new();
                for (k, v) in h {
                    let Yaml::String(k) = k else {
                        bail!("a key {k:?} that is not a string");
                    };
                    m.insert(k.clone(), convert(v)?);
                }
                Value::Object(m)
            }
            Yaml::Null => Value::Null,
            other => bail!("unsupported YAML value {other:?}"),
        })
    }
    let docs = YamlLoader::load_from_str(text).context("not valid YAML")?;
    match docs.as_slice() {
        [doc] => convert(doc),
        [] => Ok(Value::Object(Map::new())),
        _ => bail!("{} YAML documents; expected one", docs.len()),
    }
}

/// `over`'s keys written into `base`, objects merged key by key.
pub fn merge_json(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge_json(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}
