//! PyTorch's `torch.save` files (`.bin`, `.pt`, `.pth`: the Hub's `open_clip_pytorch_model.bin`,
//! Chinese-CLIP's `.pt`) read as a [`StateDict`], without Python and without executing anything.
//!
//! A `torch.save` file (PyTorch ≥ 1.6) is a ZIP archive whose entries are stored uncompressed:
//! `NAME/data.pkl`, a pickle of the saved object, and `NAME/data/KEY`, the raw bytes of each
//! storage. The pickle is run on a small stack machine that knows only the opcodes and globals a
//! state dict uses (`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`, the typed
//! storages); any other global is an error naming it, so a file is never half-read and no code in
//! it is run. Tensors are gathered through their strides (a saved transposed view comes back as
//! the view) and widened to f32 as [`StateDict::read_safetensors`] does.
//!
//! The state dict is the saved object itself, or its `state_dict` / `model` entry when it is a
//! training checkpoint (Chinese-CLIP's, with the optimizer's state beside it); a `module.` prefix
//! that every key has (a model saved from `DistributedDataParallel`) is removed.

use crate::openclip::{ImportError, StateDict};
use std::collections::HashMap;
use std::path::Path;

/// A value on the pickle machine's stack.
#[derive(Debug, Clone)]
enum Value {
    None,
    /// A flag or a float: saved beside tensors (`requires_grad`, an epoch's loss), never needed.
    Scalar,
    Int(i64),
    Str(String),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    /// `module.name`, as GLOBAL names it.
    Global(String),
    /// A storage named by a persistent id: its element type and archive key.
    Storage {
        dtype: Dtype,
        key: String,
    },
    Tensor(TensorRef),
    Mark,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dtype {
    F32,
    F64,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl Dtype {
    fn of_storage(name: &str) -> Option<Self> {
        Some(match name {
            "torch.FloatStorage" => Dtype::F32,
            "torch.DoubleStorage" => Dtype::F64,
            "torch.HalfStorage" => Dtype::F16,
            "torch.BFloat16Storage" => Dtype::BF16,
            "torch.LongStorage" => Dtype::I64,
            "torch.IntStorage" => Dtype::I32,
            "torch.ShortStorage" => Dtype::I16,
            "torch.CharStorage" => Dtype::I8,
            "torch.ByteStorage" => Dtype::U8,
            "torch.BoolStorage" => Dtype::Bool,
            _ => return None,
        })
    }

    fn size(self) -> usize {
        match self {
            Dtype::F64 | Dtype::I64 => 8,
            Dtype::F32 | Dtype::I32 => 4,
            Dtype::F16 | Dtype::BF16 | Dtype::I16 => 2,
            Dtype::I8 | Dtype::U8 | Dtype::Bool => 1,
        }
    }

    fn read(self, b: &[u8]) -> f64 {
        match self {
            Dtype::F32 => f32::from_le_bytes(b[..4].try_into().expect("4 bytes")) as f64,
            Dtype::F64 => f64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
            Dtype::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f64(),
            Dtype::BF16 => half::bf16::from_le_bytes([b[0], b[1]]).to_f64(),
            Dtype::I64 => i64::from_le_bytes(b[..8].try_into().expect("8 bytes")) as f64,
            Dtype::I32 => i32::from_le_bytes(b[..4].try_into().expect("4 bytes")) as f64,
            Dtype::I16 => i16::from_le_bytes([b[0], b[1]]) as f64,
            Dtype::I8 => b[0] as i8 as f64,
            Dtype::U8 | Dtype::Bool => b[0] as f64,
        }
    }
}

#[derive(Debug, Clone)]
struct TensorRef {
    dtype: Dtype,
    key: String,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

/// The stored entries of a ZIP archive by name: `(offset of the data, length)`.
fn zip_entries(bytes: &[u8]) -> Result<HashMap<String, (usize, usize)>, String> {
    let u16_at = |i: usize| bytes.get(i..i + 2).map(|b| u16::from_le_bytes([b[0], b[1]]) as usize);
    let u32_at = |i: usize| bytes.get(i..i + 4).map(|b| u32::from_le_bytes(b.try_into().expect("4")) as usize);
    let u64_at = |i: usize| bytes.get(i..i + 8).map(|b| u64::from_le_bytes(b.try_into().expect("8")) as usize);
    let cut = || "the archive is cut short".to_string();
    // the end-of-central-directory record, within the last 64 KiB + 22 bytes
    let from = bytes.len().saturating_sub(22 + 65_535);
    let eocd = (from..bytes.len().saturating_sub(21))
        .rev()
        .find(|&i| bytes[i..i + 4] == [0x50, 0x4b, 0x05, 0x06])
        .ok_or("no end-of-central-directory record: not a ZIP archive (a torch.save file from before PyTorch 1.6?)")?;
    let (mut count, mut dir) = (u16_at(eocd + 10).ok_or_else(cut)?, u32_at(eocd + 16).ok_or_else(cut)?);
    if count == 0xffff || dir == 0xffff_ffff {
        // ZIP64: the locator sits just before the record
        let loc =
            eocd.checked_sub(20).filter(|&l| bytes[l..l + 4] == [0x50, 0x4b, 0x06, 0x07]).ok_or("a ZIP64 archive without its locator")?;
        let rec = u64_at(loc + 8).ok_or_else(cut)?;
        if bytes.get(rec..rec + 4) != Some(&[0x50, 0x4b, 0x06, 0x06]) {
            return Err("a ZIP64 locator that points at no ZIP64 record".into());
        }
        count = u64_at(rec + 32).ok_or_else(cut)?;
        dir = u64_at(rec + 48).ok_or_else(cut)?;
    }
    let mut out = HashMap::new();
    let mut at = dir;
    for _ in 0..count {
        if bytes.get(at..at + 4) != Some(&[0x50, 0x4b, 0x01, 0x02]) {
            return Err(format!("a damaged central directory at byte {at}"));
        }
        let method = u16_at(at + 10).ok_or_else(cut)?;
        let (mut size, name_len, extra_len, comment_len) = (
            u32_at(at + 20).ok_or_else(cut)?,
            u16_at(at + 28).ok_or_else(cut)?,
            u16_at(at + 30).ok_or_else(cut)?,
            u16_at(at + 32).ok_or_else(cut)?,
        );
        let mut local = u32_at(at + 42).ok_or_else(cut)?;
        let name = String::from_utf8_lossy(bytes.get(at + 46..at + 46 + name_len).ok_or_else(cut)?).into_owned();
        // ZIP64 sizes and offsets live in the extra field (id 1), in this order, when saturated
        let mut e = at + 46 + name_len;
        let extra_end = e + extra_len;
        while e + 4 <= extra_end {
            let (id, len) = (u16_at(e).ok_or_else(cut)?, u16_at(e + 2).ok_or_else(cut)?);
            if id == 1 {
                let mut f = e + 4;
                if u32_at(at + 24).ok_or_else(cut)? == 0xffff_ffff {
                    f += 8; // uncompressed size
                }
                if size == 0xffff_ffff {
                    size = u64_at(f).ok_or_else(cut)?;
                    f += 8;
                }
                if local == 0xffff_ffff {
                    local = u64_at(f).ok_or_else(cut)?;
                }
            }
            e += 4 + len;
        }
        if method != 0 {
            return Err(format!("{name} is compressed (method {method}); torch.save stores entries uncompressed"));
        }
        if bytes.get(local..local + 4) != Some(&[0x50, 0x4b, 0x03, 0x04]) {
            return Err(format!("{name}: no local header where the directory says"));
        }
        let data = local + 30 + u16_at(local + 26).ok_or_else(cut)? + u16_at(local + 28).ok_or_else(cut)?;
        if data + size > bytes.len() {
            return Err(format!("{name} runs past the end of the file"));
        }
        out.insert(name, (data, size));
        at += 46 + name_len + extra_len + comment_len;
    }
    Ok(out)
}

/// Runs a state-dict pickle; storages become [`Value::Storage`] and tensors [`Value::Tensor`].
fn unpickle(p: &[u8]) -> Result<Value, String> {
    let mut stack: Vec<Value> = Vec::new();
    let mut memo: HashMap<usize, Value> = HashMap::new();
    let mut i = 0;
    let cut = || "the pickle is cut short".to_string();
    let take = |i: &mut usize, n: usize| -> Result<&[u8], String> {
        let s = p.get(*i..*i + n).ok_or_else(cut)?;
        *i += n;
        Ok(s)
    };
    let pop = |stack: &mut Vec<Value>| stack.pop().ok_or_else(|| "pickle stack underflow".to_string());
    let pop_mark = |stack: &mut Vec<Value>| -> Result<Vec<Value>, String> {
        let m = stack.iter().rposition(|v| matches!(v, Value::Mark)).ok_or("pickle: no mark")?;
        let items = stack.split_off(m + 1);
        stack.pop();
        Ok(items)
    };
    loop {
        let op = *p.get(i).ok_or_else(cut)?;
        i += 1;
        match op {
            0x80 => i += 1,                 // PROTO
            0x95 => i += 8,                 // FRAME
            b'.' => return pop(&mut stack), // STOP
            b'}' => stack.push(Value::Dict(Vec::new())),
            b']' => stack.push(Value::List(Vec::new())),
            b')' => stack.push(Value::Tuple(Vec::new())),
            b'(' => stack.push(Value::Mark),
            b'N' => stack.push(Value::None),
            0x88 | 0x89 => stack.push(Value::Scalar),
            b'K' => stack.push(Value::Int(take(&mut i, 1)?[0] as i64)),
            b'M' => {
                let b = take(&mut i, 2)?;
                stack.push(Value::Int(u16::from_le_bytes([b[0], b[1]]) as i64))
            }
            b'J' => stack.push(Value::Int(i32::from_le_bytes(take(&mut i, 4)?.try_into().expect("4")) as i64)),
            0x8a => {
                // LONG1: little-endian two's complement of n bytes
                let n = take(&mut i, 1)?[0] as usize;
                let b = take(&mut i, n)?;
                if n > 8 {
                    return Err("pickle: an integer wider than 64 bits".into());
                }
                let mut v: i64 = 0;
                for (k, &x) in b.iter().enumerate() {
                    v |= (x as i64) << (8 * k);
                }
                if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                stack.push(Value::Int(v))
            }
            b'G' => {
                take(&mut i, 8)?;
                stack.push(Value::Scalar)
            }
            b'X' | 0x8c | 0x8d => {
                let n = match op {
                    b'X' => u32::from_le_bytes(take(&mut i, 4)?.try_into().expect("4")) as usize,
                    0x8c => take(&mut i, 1)?[0] as usize,
                    _ => u64::from_le_bytes(take(&mut i, 8)?.try_into().expect("8")) as usize,
                };
                let s = std::str::from_utf8(take(&mut i, n)?).map_err(|e| format!("pickle: a string that is not UTF-8: {e}"))?;
                stack.push(Value::Str(s.to_string()))
            }
            b'c' => {
                // GLOBAL "module\nname\n"
                let line = |i: &mut usize| -> Result<String, String> {
                    let end = p[*i..].iter().position(|&c| c == b'\n').ok_or_else(cut)?;
                    let s = String::from_utf8_lossy(&p[*i..*i + end]).into_owned();
                    *i += end + 1;
                    Ok(s)
                };
                let (module, name) = (line(&mut i)?, line(&mut i)?);
                stack.push(Value::Global(format!("{module}.{name}")))
            }
            0x93 => {
                // STACK_GLOBAL
                let (name, module) = (pop(&mut stack)?, pop(&mut stack)?);
                match (module, name) {
                    (Value::Str(m), Value::Str(n)) => stack.push(Value::Global(format!("{m}.{n}"))),
                    _ => return Err("pickle: STACK_GLOBAL without two strings".into()),
                }
            }
            b'q' => {
                let k = take(&mut i, 1)?[0] as usize;
                memo.insert(k, stack.last().ok_or("pickle: BINPUT on an empty stack")?.clone());
            }
            b'r' => {
                let k = u32::from_le_bytes(take(&mut i, 4)?.try_into().expect("4")) as usize;
                memo.insert(k, stack.last().ok_or("pickle: LONG_BINPUT on an empty stack")?.clone());
            }
            0x94 => {
                let k = memo.len();
                memo.insert(k, stack.last().ok_or("pickle: MEMOIZE on an empty stack")?.clone());
            }
            b'h' | b'j' => {
                let k = if op == b'h' {
                    take(&mut i, 1)?[0] as usize
                } else {
                    u32::from_le_bytes(take(&mut i, 4)?.try_into().expect("4")) as usize
                };
                stack.push(memo.get(&k).cloned().ok_or_else(|| format!("pickle: memo {k} was never set"))?)
            }
            b't' => {
                let items = pop_mark(&mut stack)?;
                stack.push(Value::Tuple(items))
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let at = stack.len().checked_sub(n).ok_or("pickle stack underflow")?;
                let items = stack.split_off(at);
                stack.push(Value::Tuple(items))
            }
            b'a' | b'e' => {
                let items = if op == b'a' { vec![pop(&mut stack)?] } else { pop_mark(&mut stack)? };
                match stack.last_mut() {
                    Some(Value::List(l)) => l.extend(items),
                    _ => return Err("pickle: APPEND to something that is not a list".into()),
                }
            }
            b's' | b'u' => {
                let items = if op == b's' {
                    let v = pop(&mut stack)?;
                    vec![pop(&mut stack)?, v]
                } else {
                    pop_mark(&mut stack)?
                };
                match stack.last_mut() {
                    Some(Value::Dict(d)) => {
                        let mut it = items.into_iter();
                        while let (Some(k), Some(v)) = (it.next(), it.next()) {
                            d.push((k, v));
                        }
                    }
                    _ => return Err("pickle: SETITEM on something that is not a dict".into()),
                }
            }
            b'Q' => {
                // BINPERSID: ('storage', storage type, key, location, numel)
                let pid = pop(&mut stack)?;
                let Value::Tuple(t) = pid else { return Err("pickle: a persistent id that is not a tuple".into()) };
                match t.as_slice() {
                    [Value::Str(kind), Value::Global(ty), Value::Str(key), ..] if kind == "storage" => {
                        let dtype =
                            Dtype::of_storage(ty).ok_or_else(|| format!("tensors of storage type {ty} are not weights vlp can load"))?;
                        stack.push(Value::Storage { dtype, key: key.clone() })
                    }
                    _ => return Err("pickle: a persistent id that is not a storage".into()),
                }
            }
            b'R' => {
                let args = pop(&mut stack)?;
                let f = pop(&mut stack)?;
                stack.push(reduce(f, args)?)
            }
            b'b' => {
                // BUILD: state set on an object; an OrderedDict's (or a tensor's) is ignored
                pop(&mut stack)?;
            }
            0x81 => {
                // NEWOBJ
                let args = pop(&mut stack)?;
                let cls = pop(&mut stack)?;
                stack.push(reduce(cls, args)?)
            }
            other => return Err(format!("pickle opcode 0x{other:02x} at byte {} is not one a state dict uses", i - 1)),
        }
    }
}

fn reduce(f: Value, args: Value) -> Result<Value, String> {
    let Value::Global(name) = f else { return Err("pickle: REDUCE on something that is not a global".into()) };
    let Value::Tuple(args) = args else { return Err(format!("pickle: {name} called without an argument tuple")) };
    let ints = |v: &Value| -> Result<Vec<usize>, String> {
        match v {
            Value::Tuple(t) => t
                .iter()
                .map(|x| if let Value::Int(n) = x { Ok(*n as usize) } else { Err("a size that is not an integer".to_string()) })
                .collect(),
            _ => Err("a shape that is not a tuple".into()),
        }
    };
    match name.as_str() {
        "collections.OrderedDict" => Ok(Value::Dict(Vec::new())),
        "torch._utils._rebuild_tensor_v2" | "torch._utils._rebuild_tensor" => match args.as_slice() {
            [Value::Storage { dtype, key }, Value::Int(offset), shape, stride, ..] => Ok(Value::Tensor(TensorRef {
                dtype: *dtype,
                key: key.clone(),
                offset: *offset as usize,
                shape: ints(shape)?,
                stride: ints(stride)?,
            })),
            _ => Err(format!("pickle: {name} with arguments it does not take")),
        },
        "torch._utils._rebuild_parameter" => match args.into_iter().next() {
            Some(t @ Value::Tensor(_)) => Ok(t),
            _ => Err("pickle: a parameter that holds no tensor".into()),
        },
        _ => Err(format!("the file calls {name}, which a state dict does not use; vlp runs nothing else")),
    }
}

/// Every tensor of a state-dict value by key; nested dicts are not entered.
fn tensors_of(dict: &[(Value, Value)]) -> Vec<(String, TensorRef)> {
    dict.iter()
        .filter_map(|(k, v)| match (k, v) {
            (Value::Str(k), Value::Tensor(t)) => Some((k.clone(), t.clone())),
            _ => None,
        })
        .collect()
}

/// Reads a `torch.save` file; see the module docs.
pub fn read_pytorch(path: &Path) -> Result<StateDict, ImportError> {
    let err = |message: String| ImportError::Read { path: path.display().to_string(), message };
    let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    let entries = zip_entries(&bytes).map_err(err)?;
    let (pkl_name, &(at, len)) = entries
        .iter()
        .find(|(n, _)| n.ends_with("/data.pkl") || n.as_str() == "data.pkl")
        .ok_or_else(|| err("no data.pkl in the archive: not a torch.save file".into()))?;
    let root = pkl_name.strip_suffix("data.pkl").expect("suffix").to_string();
    let top = unpickle(&bytes[at..at + len]).map_err(err)?;
    let Value::Dict(top) = top else { return Err(err("the saved object is not a dict of tensors".into())) };
    let nested = top.iter().find_map(|(k, v)| match (k, v) {
        (Value::Str(k), Value::Dict(d)) if k == "state_dict" || k == "model" => Some(d.clone()),
        _ => None,
    });
    let mut found = tensors_of(nested.as_deref().unwrap_or(&top));
    if found.is_empty() {
        return Err(err("the saved object holds no tensors (nor a `state_dict` of them)".into()));
    }
    if found.iter().all(|(k, _)| k.starts_with("module.")) {
        for (k, _) in found.iter_mut() {
            *k = k["module.".len()..].to_string();
        }
    }
    let mut out = StateDict::default();
    for (key, t) in found {
        if crate::openclip::is_step_counter(&key) {
            continue;
        }
        let (start, size) = *entries
            .get(&format!("{root}data/{}", t.key))
            .ok_or_else(|| err(format!("{key}: its storage {} is not in the archive", t.key)))?;
        let storage = &bytes[start..start + size];
        let numel: usize = t.shape.iter().product();
        let w = t.dtype.size();
        let int = matches!(t.dtype, Dtype::I64 | Dtype::I32);
        let contiguous =
            t.shape.iter().zip(&t.stride).rev().try_fold(1usize, |want, (&n, &s)| (n <= 1 || s == want).then_some(want * n)).is_some();
        if contiguous && !int {
            let span = storage.get(t.offset * w..(t.offset + numel) * w).ok_or_else(|| err(format!("{key} reaches past its storage")))?;
            out.insert(key, t.shape, span.chunks_exact(w).map(|b| t.dtype.read(b) as f32).collect());
            continue;
        }
        let mut values = Vec::with_capacity(numel);
        let mut index = vec![0usize; t.shape.len()];
        for _ in 0..numel {
            let element = t.offset + index.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
            let b = storage.get(element * w..element * w + w).ok_or_else(|| err(format!("{key} reaches past its storage")))?;
            let v = t.dtype.read(b);
            if int && v.abs() > (1u64 << 24) as f64 {
                return Err(err(format!("{key}: the integer {v} does not fit f32 exactly")));
            }
            values.push(v as f32);
            // the next index, last dimension fastest
            for d in (0..index.len()).rev() {
                index[d] += 1;
                if index[d] < t.shape[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        out.insert(key, t.shape, values);
    }
    Ok(out)
}
