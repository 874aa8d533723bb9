//! Reading `torch.save` files without Python: a zip archive holding `data.pkl` (a
//! pickle, protocol 2 as torch writes it) and one raw little-endian file per tensor
//! storage under `data/`. The pickle is run on a small stack machine that knows the
//! opcodes torch emits and builds tensors from `torch._utils._rebuild_tensor_v2`
//! calls over the storages the persistent ids name; any other object is kept as
//! its callable's name and arguments, never executed.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::rc::Rc;

use anyhow::{bail, Context, Result};

/// A value of the pickle.
#[derive(Clone, Debug)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Rc<RefCell<Vec<Value>>>),
    Tuple(Rc<Vec<Value>>),
    /// Also `collections.OrderedDict`, in insertion order.
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
    /// `module.name` of a class or function.
    Global(String),
    Storage(Rc<Storage>),
    Tensor(Rc<TensorRef>),
    /// An object the reader does not build: its callable and arguments.
    Object(String, Rc<Vec<Value>>),
}

/// A storage: a file of the archive, of one element type.
#[derive(Debug)]
pub struct Storage {
    /// The storage class, such as `FloatStorage`.
    pub kind: String,
    pub key: String,
}

/// A tensor: a strided view of a storage.
#[derive(Debug)]
pub struct TensorRef {
    pub storage: Rc<Storage>,
    pub offset: usize,
    pub shape: Vec<usize>,
    pub stride: Vec<usize>,
}

impl Value {
    /// The entries of a dict, keyed by string.
    pub fn dict(&self) -> Option<Vec<(String, Value)>> {
        match self {
            Value::Dict(d) => Some(
                d.borrow()
                    .iter()
                    .filter_map(|(k, v)| match k {
                        Value::Str(k) => Some((k.clone(), v.clone())),
                        _ => None,
                    })
                    .collect(),
            ),
            _ => None,
        }
    }
}

/// A `torch.save` file: its pickle run, its storages read when a tensor is asked for
/// (a checkpoint's optimiser state, often the larger part, is never read).
pub struct TorchFile {
    path: String,
    archive: RefCell<zip::ZipArchive<std::fs::File>>,
    /// The folder of the archive that holds data.pkl.
    prefix: String,
    pub root: Value,
}

impl TorchFile {
    pub fn open(path: &Path) -> Result<TorchFile> {
        let name = path.display().to_string();
        let file = std::fs::File::open(path).with_context(|| format!("cannot read {name}"))?;
        let mut archive = zip::ZipArchive::new(file).with_context(|| {
            format!(
                "{name} is not a torch.save archive (a zip file, as PyTorch 1.6 and later write)"
            )
        })?;
        let pickle = archive
            .file_names()
            .filter_map(|k| k.ok())
            .find(|k| k.ends_with("data.pkl"))
            .map(|k| k.into_owned())
            .with_context(|| format!("{name}: no data.pkl in the archive"))?;
        let prefix = pickle.trim_end_matches("data.pkl").to_string();
        let bytes = read_entry(&mut archive, &pickle).with_context(|| name.clone())?;
        let root = unpickle(&bytes).with_context(|| format!("{name}: {pickle}"))?;
        Ok(TorchFile {
            path: name,
            archive: RefCell::new(archive),
            prefix,
            root,
        })
    }

    /// A tensor's values as f32 (from f32, f64, f16 or bf16 storage), in row-major order.
    pub fn values(&self, t: &TensorRef) -> Result<Vec<f32>> {
        let key = format!("{}data/{}", self.prefix, t.storage.key);
        let bytes = read_entry(&mut self.archive.borrow_mut(), &key)
            .with_context(|| format!("{}: storage {key}", self.path))?;
        let (size, read): (usize, fn(&[u8]) -> f32) = match t.storage.kind.as_str() {
            "FloatStorage" => (4, |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            "DoubleStorage" => (8, |b| f64::from_le_bytes(b.try_into().unwrap()) as f32),
            "HalfStorage" => (2, |b| half_to_f32(u16::from_le_bytes([b[0], b[1]]))),
            "BFloat16Storage" => (2, |b| {
                f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16)
            }),
            other => bail!("{}: a tensor of {other}, not floating point", self.path),
        };
        let n: usize = t.shape.iter().product();
        let mut out = Vec::with_capacity(n);
        let mut index = vec![0usize; t.shape.len()];
        for _ in 0..n {
            let at = t.offset
                + index
                    .iter()
                    .zip(&t.stride)
                    .map(|(i, s)| i * s)
                    .sum::<usize>();
            let b = bytes.get(at * size..(at + 1) * size).with_context(|| {
                format!("{}: storage {key} is shorter than its tensor", self.path)
            })?;
            out.push(read(b));
            for d in (0..index.len()).rev() {
                index[d] += 1;
                if index[d] < t.shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        Ok(out)
    }
}

/// The contents of one archive entry.
fn read_entry(archive: &mut zip::ZipArchive<std::fs::File>, name: &str) -> Result<Vec<u8>> {
    let mut entry = archive
        .by_name(name)
        .with_context(|| format!("no entry {name} in the archive"))?;
    let mut bytes = Vec::with_capacity(entry.size() as usize);
    entry
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {name}"))?;
    Ok(bytes)
}

fn half_to_f32(h: u16) -> f32 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let (exp, frac) = (((h >> 10) & 0x1f) as i32, (h & 0x3ff) as f32);
    sign * match exp {
        0 => frac * 2f32.powi(-24),
        31 if frac == 0.0 => f32::INFINITY,
        31 => f32::NAN,
        _ => (1.0 + frac / 1024.0) * 2f32.powi(exp - 15),
    }
}

/// Run a pickle: the value it returns.
fn unpickle(data: &[u8]) -> Result<Value> {
    let mut at = 0usize;
    let mut stack: Vec<Value> = Vec::new();
    let mut marks: Vec<usize> = Vec::new();
    let mut memo: HashMap<u32, Value> = HashMap::new();
    let take = |at: &mut usize, n: usize| -> Result<&[u8]> {
        let b = data
            .get(*at..*at + n)
            .context("the pickle ends in the middle of an opcode")?;
        *at += n;
        Ok(b)
    };
    let line = |at: &mut usize| -> Result<String> {
        let end = data[*at..]
            .iter()
            .position(|&b| b == b'\n')
            .context("an unterminated GLOBAL")?;
        let s = String::from_utf8_lossy(&data[*at..*at + end]).into_owned();
        *at += end + 1;
        Ok(s)
    };
    let pop = |stack: &mut Vec<Value>| stack.pop().context("the pickle's stack ran empty");
    let since_mark = |stack: &mut Vec<Value>, marks: &mut Vec<usize>| -> Result<Vec<Value>> {
        let m = marks.pop().context("no MARK")?;
        Ok(stack.split_off(m))
    };
    loop {
        let op = *take(&mut at, 1)?.first().unwrap();
        match op {
            0x80 => {
                take(&mut at, 1)?;
            }
            0x95 => {
                take(&mut at, 8)?;
            }
            b'.' => return pop(&mut stack),
            b'(' => marks.push(stack.len()),
            b'}' => stack.push(Value::Dict(Rc::default())),
            b']' => stack.push(Value::List(Rc::default())),
            b')' => stack.push(Value::Tuple(Rc::default())),
            b'N' => stack.push(Value::None),
            0x88 => stack.push(Value::Bool(true)),
            0x89 => stack.push(Value::Bool(false)),
            b'K' => stack.push(Value::Int(take(&mut at, 1)?[0] as i64)),
            b'M' => {
                let b = take(&mut at, 2)?;
                stack.push(Value::Int(u16::from_le_bytes([b[0], b[1]]) as i64));
            }
            b'J' => {
                let b = take(&mut at, 4)?;
                stack.push(Value::Int(i32::from_le_bytes(b.try_into().unwrap()) as i64));
            }
            0x8a => {
                let n = take(&mut at, 1)?[0] as usize;
                let b = take(&mut at, n)?;
                if n > 8 {
                    bail!("an integer of {n} bytes");
                }
                let mut v = [if b.last().is_some_and(|&x| x & 0x80 != 0) {
                    0xff
                } else {
                    0
                }; 8];
                v[..n].copy_from_slice(b);
                stack.push(Value::Int(i64::from_le_bytes(v)));
            }
            b'G' => {
                let b = take(&mut at, 8)?;
                stack.push(Value::Float(f64::from_be_bytes(b.try_into().unwrap())));
            }
            b'X' | b'T' | b'U' | 0x8c | b'B' | b'C' => {
                let n = match op {
                    b'X' | b'T' | b'B' => {
                        let b = take(&mut at, 4)?;
                        u32::from_le_bytes(b.try_into().unwrap()) as usize
                    }
                    _ => take(&mut at, 1)?[0] as usize,
                };
                let b = take(&mut at, n)?.to_vec();
                stack.push(if matches!(op, b'B' | b'C') {
                    Value::Bytes(b)
                } else {
                    Value::Str(String::from_utf8_lossy(&b).into_owned())
                });
            }
            b'q' => {
                let k = take(&mut at, 1)?[0] as u32;
                memo.insert(k, stack.last().context("BINPUT on an empty stack")?.clone());
            }
            b'r' => {
                let k = u32::from_le_bytes(take(&mut at, 4)?.try_into().unwrap());
                memo.insert(
                    k,
                    stack
                        .last()
                        .context("LONG_BINPUT on an empty stack")?
                        .clone(),
                );
            }
            0x94 => {
                let k = memo.len() as u32;
                memo.insert(
                    k,
                    stack.last().context("MEMOIZE on an empty stack")?.clone(),
                );
            }
            b'h' | b'j' => {
                let k = if op == b'h' {
                    take(&mut at, 1)?[0] as u32
                } else {
                    u32::from_le_bytes(take(&mut at, 4)?.try_into().unwrap())
                };
                stack.push(
                    memo.get(&k)
                        .with_context(|| format!("no memo {k}"))?
                        .clone(),
                );
            }
            b'c' => {
                let module = line(&mut at)?;
                let name = line(&mut at)?;
                stack.push(Value::Global(format!("{module}.{name}")));
            }
            b't' => {
                let items = since_mark(&mut stack, &mut marks)?;
                stack.push(Value::Tuple(Rc::new(items)));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    bail!("TUPLE{n} on a stack of {}", stack.len());
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(Value::Tuple(Rc::new(items)));
            }
            b's' => {
                let (v, k) = (pop(&mut stack)?, pop(&mut stack)?);
                match stack.last() {
                    Some(Value::Dict(d)) => d.borrow_mut().push((k, v)),
                    _ => bail!("SETITEM on something that is not a dict"),
                }
            }
            b'u' => {
                let items = since_mark(&mut stack, &mut marks)?;
                match stack.last() {
                    Some(Value::Dict(d)) => {
                        let mut d = d.borrow_mut();
                        for pair in items.chunks(2) {
                            if let [k, v] = pair {
                                d.push((k.clone(), v.clone()));
                            }
                        }
                    }
                    _ => bail!("SETITEMS on something that is not a dict"),
                }
            }
            b'a' => {
                let v = pop(&mut stack)?;
                match stack.last() {
                    Some(Value::List(l)) => l.borrow_mut().push(v),
                    _ => bail!("APPEND on something that is not a list"),
                }
            }
            b'e' => {
                let items = since_mark(&mut stack, &mut marks)?;
                match stack.last() {
                    Some(Value::List(l)) => l.borrow_mut().extend(items),
                    _ => bail!("APPENDS on something that is not a list"),
                }
            }
            b'Q' => {
                let pid = pop(&mut stack)?;
                stack.push(storage(&pid)?);
            }
            b'R' | 0x81 => {
                let args = pop(&mut stack)?;
                let callable = pop(&mut stack)?;
                stack.push(reduce(callable, args)?);
            }
            b'b' => {
                // The state of an object (a state_dict's `_metadata`): not needed.
                pop(&mut stack)?;
            }
            other => bail!(
                "pickle opcode 0x{other:02x} at byte {} is not supported",
                at - 1
            ),
        }
    }
}

/// The storage a persistent id `('storage', <class>, key, location, numel)` names.
fn storage(pid: &Value) -> Result<Value> {
    let Value::Tuple(t) = pid else {
        bail!("a persistent id that is not a tuple: {pid:?}");
    };
    match t.as_slice() {
        [Value::Str(tag), Value::Global(class), Value::Str(key), ..] if tag == "storage" => {
            Ok(Value::Storage(Rc::new(Storage {
                kind: class.rsplit('.').next().unwrap_or_default().to_string(),
                key: key.clone(),
            })))
        }
        _ => bail!("a persistent id that is not a storage: {pid:?}"),
    }
}

fn usizes(v: &Value) -> Result<Vec<usize>> {
    match v {
        Value::Tuple(t) => t
            .iter()
            .map(|x| match x {
                Value::Int(i) if *i >= 0 => Ok(*i as usize),
                other => bail!("a size or stride {other:?}"),
            })
            .collect(),
        other => bail!("a size or stride tuple expected, got {other:?}"),
    }
}

/// A call of `callable` on `args`: tensors and ordered dicts are built, anything else
/// is kept by name.
fn reduce(callable: Value, args: Value) -> Result<Value> {
    let Value::Global(name) = &callable else {
        bail!("a call of {callable:?}");
    };
    let Value::Tuple(args) = args else {
        bail!("{name} called with {args:?}");
    };
    Ok(match (name.as_str(), args.as_slice()) {
        (
            "torch._utils._rebuild_tensor_v2",
            [Value::Storage(s), Value::Int(offset), size, stride, ..],
        ) => Value::Tensor(Rc::new(TensorRef {
            storage: s.clone(),
            offset: *offset as usize,
            shape: usizes(size)?,
            stride: usizes(stride)?,
        })),
        ("torch._utils._rebuild_parameter", [tensor @ Value::Tensor(_), ..]) => tensor.clone(),
        ("collections.OrderedDict", _) => Value::Dict(Rc::default()),
        _ => Value::Object(name.clone(), args),
    })
}
