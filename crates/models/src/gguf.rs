//! GGUF, llama.cpp's model file (version 2 and 3): a header, typed metadata key/values (the architecture's numbers,
//! the tokenizer's vocabulary, merges and chat template), a tensor index (name, shape, type, offset) and the aligned
//! tensor data. This reads the header, metadata and index from the file's bytes and hands out each tensor's bytes;
//! it does no arithmetic on them. Every length and offset is checked against the file, so a truncated or hostile
//! file gives a typed error, never a panic or a huge allocation.

use std::collections::BTreeMap;

use neurolov_kernels::quant::QuantType;

/// `GGUF` in little-endian.
pub const MAGIC: u32 = 0x4655_4747;
/// Tensor data starts at a multiple of this unless `general.alignment` says otherwise.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Most metadata entries, tensors, array elements and dimensions a file may declare: far above any real model,
/// far below what would exhaust memory.
pub const MAX_METADATA: u64 = 1 << 16;
pub const MAX_TENSORS: u64 = 1 << 16;
pub const MAX_ARRAY_LEN: u64 = 1 << 24;
pub const MAX_DIMS: u32 = 4;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GgufError {
    #[error("not a gguf file (magic {0:#x})")]
    Magic(u32),
    #[error("gguf version {0} is not supported (2 and 3 are)")]
    Version(u32),
    #[error("the file ends inside {0}")]
    Truncated(&'static str),
    #[error("{what} {value} is past the limit {limit}")]
    TooMany { what: &'static str, value: u64, limit: u64 },
    #[error("unknown metadata value type {0}")]
    ValueType(u32),
    #[error("unknown tensor type {0}")]
    TensorType(u32),
    #[error("a string is not utf-8")]
    Utf8,
    #[error("tensor {0}: {1}")]
    Tensor(String, String),
    #[error("alignment {0} is not a power of two")]
    Alignment(u64),
}

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    /// An unsigned integer of any width (GGUF writers differ in which they use for counts).
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            Value::F32(v) => Some(v),
            Value::F64(v) => Some(v as f32),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        if let Value::String(s) = self { Some(s) } else { None }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        if let Value::Array(a) = self { Some(a) } else { None }
    }
}

/// How a tensor's elements are stored: ggml's type numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
    Bf16,
}

impl TensorType {
    fn from_code(code: u32) -> Result<TensorType, GgufError> {
        Ok(match code {
            0 => TensorType::F32,
            1 => TensorType::F16,
            2 => TensorType::Q4_0,
            3 => TensorType::Q4_1,
            6 => TensorType::Q5_0,
            7 => TensorType::Q5_1,
            8 => TensorType::Q8_0,
            9 => TensorType::Q8_1,
            10 => TensorType::Q2K,
            11 => TensorType::Q3K,
            12 => TensorType::Q4K,
            13 => TensorType::Q5K,
            14 => TensorType::Q6K,
            15 => TensorType::Q8K,
            30 => TensorType::Bf16,
            other => return Err(GgufError::TensorType(other)),
        })
    }

    /// The storage type the engine reads, if it is one it reads.
    pub fn quant_type(self) -> Option<QuantType> {
        Some(match self {
            TensorType::F32 => QuantType::F32,
            TensorType::F16 => QuantType::F16,
            TensorType::Bf16 => QuantType::Bf16,
            TensorType::Q8_0 => QuantType::Q8_0,
            TensorType::Q4_0 => QuantType::Q4_0,
            TensorType::Q4_1 => QuantType::Q4_1,
            _ => return None,
        })
    }

    /// Elements per block and bytes per block (ggml's `blck_size` and `type_size`).
    pub fn block(self) -> (u64, u64) {
        match self {
            TensorType::F32 => (1, 4),
            TensorType::F16 | TensorType::Bf16 => (1, 2),
            TensorType::Q4_0 => (32, 18),
            TensorType::Q4_1 => (32, 20),
            TensorType::Q5_0 => (32, 22),
            TensorType::Q5_1 => (32, 24),
            TensorType::Q8_0 => (32, 34),
            TensorType::Q8_1 => (32, 36),
            TensorType::Q2K => (256, 84),
            TensorType::Q3K => (256, 110),
            TensorType::Q4K => (256, 144),
            TensorType::Q5K => (256, 176),
            TensorType::Q6K => (256, 210),
            TensorType::Q8K => (256, 292),
        }
    }
}

/// One tensor of the index.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions, innermost (contiguous) first, as GGUF stores them.
    pub dims: Vec<u64>,
    pub kind: TensorType,
    /// Where its bytes start, from the start of the tensor data.
    pub offset: u64,
    /// How many bytes it takes.
    pub size: u64,
}

impl TensorInfo {
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// A parsed GGUF file over its bytes.
#[derive(Debug)]
pub struct Gguf<'a> {
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    /// The tensor data section (from its aligned start to the end of the file).
    data: &'a [u8],
}

impl<'a> Gguf<'a> {
    /// Reads the header, metadata and tensor index of `bytes`, and checks that every tensor lies inside the file.
    pub fn parse(bytes: &'a [u8]) -> Result<Gguf<'a>, GgufError> {
        let mut r = Reader { bytes, at: 0 };
        let magic = r.u32("the magic")?;
        if magic != MAGIC {
            return Err(GgufError::Magic(magic));
        }
        let version = r.u32("the version")?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::Version(version));
        }
        let tensor_count = limit("tensors", r.u64("the tensor count")?, MAX_TENSORS)?;
        let metadata_count = limit("metadata entries", r.u64("the metadata count")?, MAX_METADATA)?;
        let mut metadata = BTreeMap::new();
        for _ in 0..metadata_count {
            let key = r.string("a metadata key")?;
            let kind = r.u32("a metadata type")?;
            metadata.insert(key, r.value(kind, 0)?);
        }
        let mut tensors = Vec::with_capacity(tensor_count as usize);
        for _ in 0..tensor_count {
            tensors.push(r.tensor_info()?);
        }
        let alignment = metadata.get("general.alignment").and_then(Value::as_u64).unwrap_or(DEFAULT_ALIGNMENT);
        if alignment == 0 || !alignment.is_power_of_two() {
            return Err(GgufError::Alignment(alignment));
        }
        let start = (r.at as u64).div_ceil(alignment) * alignment;
        let data = bytes.get(start as usize..).ok_or(GgufError::Truncated("the tensor data"))?;
        for t in &tensors {
            let end =
                t.offset.checked_add(t.size).ok_or_else(|| GgufError::Tensor(t.name.clone(), "overflows".into()))?;
            if end > data.len() as u64 {
                return Err(GgufError::Tensor(
                    t.name.clone(),
                    format!("ends at {end}, past the data's {}", data.len()),
                ));
            }
            if t.offset % alignment != 0 {
                return Err(GgufError::Tensor(t.name.clone(), format!("offset {} is not aligned", t.offset)));
            }
        }
        Ok(Gguf { version, metadata, tensors, data })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    /// `general.architecture` (`llama`, `bert`, …).
    pub fn architecture(&self) -> Option<&str> {
        self.get("general.architecture").and_then(Value::as_str)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// A tensor's bytes (checked inside the file at parse time).
    pub fn tensor_bytes(&self, t: &TensorInfo) -> &'a [u8] {
        let (start, end) = (t.offset as usize, (t.offset + t.size) as usize);
        self.data.get(start..end).unwrap_or_default()
    }
}

fn limit(what: &'static str, value: u64, limit: u64) -> Result<u64, GgufError> {
    if value > limit { Err(GgufError::TooMany { what, value, limit }) } else { Ok(value) }
}

/// A cursor over the file's bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], GgufError> {
        let end = self.at.checked_add(N).ok_or(GgufError::Truncated(what))?;
        let bytes: [u8; N] =
            self.bytes.get(self.at..end).and_then(|b| b.try_into().ok()).ok_or(GgufError::Truncated(what))?;
        self.at = end;
        Ok(bytes)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, GgufError> {
        self.take::<4>(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, GgufError> {
        self.take::<8>(what).map(u64::from_le_bytes)
    }

    fn string(&mut self, what: &'static str) -> Result<String, GgufError> {
        let len = self.u64(what)?;
        let end = (self.at as u64).checked_add(len).filter(|&e| e <= self.bytes.len() as u64);
        let end = end.ok_or(GgufError::Truncated(what))? as usize;
        let s = std::str::from_utf8(&self.bytes[self.at..end]).map_err(|_| GgufError::Utf8)?.to_string();
        self.at = end;
        Ok(s)
    }

    /// A value of type `kind`; arrays nest at most once more (GGUF arrays hold scalars or strings, and a writer
    /// that nests deeper is refused rather than recursed into).
    fn value(&mut self, kind: u32, depth: u32) -> Result<Value, GgufError> {
        Ok(match kind {
            0 => Value::U8(self.take::<1>("a u8")?[0]),
            1 => Value::I8(self.take::<1>("an i8")?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.take("a u16")?)),
            3 => Value::I16(i16::from_le_bytes(self.take("an i16")?)),
            4 => Value::U32(self.u32("a u32")?),
            5 => Value::I32(i32::from_le_bytes(self.take("an i32")?)),
            6 => Value::F32(f32::from_le_bytes(self.take("an f32")?)),
            7 => Value::Bool(self.take::<1>("a bool")?[0] != 0),
            8 => Value::String(self.string("a string")?),
            9 if depth < 1 => {
                let inner = self.u32("an array's type")?;
                let len = limit("array elements", self.u64("an array's length")?, MAX_ARRAY_LEN)?;
                // Each element takes at least one byte: a length past the rest of the file is a lie.
                if len > (self.bytes.len() - self.at) as u64 {
                    return Err(GgufError::Truncated("an array"));
                }
                let mut items = Vec::with_capacity(len as usize);
                for _ in 0..len {
                    items.push(self.value(inner, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64("a u64")?),
            11 => Value::I64(i64::from_le_bytes(self.take("an i64")?)),
            12 => Value::F64(f64::from_le_bytes(self.take("an f64")?)),
            other => return Err(GgufError::ValueType(other)),
        })
    }

    fn tensor_info(&mut self) -> Result<TensorInfo, GgufError> {
        let name = self.string("a tensor name")?;
        let n_dims = self.u32("a tensor's dimension count")?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(GgufError::Tensor(name, format!("{n_dims} dimensions")));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(self.u64("a tensor dimension")?);
        }
        let kind = TensorType::from_code(self.u32("a tensor type")?)?;
        let offset = self.u64("a tensor offset")?;
        let elements = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
        let (block, block_bytes) = kind.block();
        let size = match elements {
            Some(e) if e % block == 0 => (e / block).checked_mul(block_bytes),
            _ => None,
        };
        let size =
            size.ok_or_else(|| GgufError::Tensor(name.clone(), format!("shape {dims:?} does not fit {kind:?}")))?;
        Ok(TensorInfo { name, dims, kind, offset, size })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // A panic is the failure report.

    use super::*;

    /// A tiny GGUF written by hand: one string, one u32, one array of strings, one f32 tensor of 2×3.
    fn tiny() -> Vec<u8> {
        let mut b = Vec::new();
        let string = |b: &mut Vec<u8>, s: &str| {
            b.extend((s.len() as u64).to_le_bytes());
            b.extend(s.as_bytes());
        };
        b.extend(MAGIC.to_le_bytes());
        b.extend(3u32.to_le_bytes());
        b.extend(1u64.to_le_bytes()); // tensors
        b.extend(3u64.to_le_bytes()); // metadata
        string(&mut b, "general.architecture");
        b.extend(8u32.to_le_bytes());
        string(&mut b, "llama");
        string(&mut b, "llama.block_count");
        b.extend(4u32.to_le_bytes());
        b.extend(30u32.to_le_bytes());
        string(&mut b, "tokenizer.ggml.tokens");
        b.extend(9u32.to_le_bytes());
        b.extend(8u32.to_le_bytes());
        b.extend(2u64.to_le_bytes());
        string(&mut b, "<s>");
        string(&mut b, "hé");
        string(&mut b, "w");
        b.extend(2u32.to_le_bytes());
        b.extend(3u64.to_le_bytes());
        b.extend(2u64.to_le_bytes());
        b.extend(0u32.to_le_bytes()); // f32
        b.extend(0u64.to_le_bytes());
        while b.len() % 32 != 0 {
            b.push(0);
        }
        for v in [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0] {
            b.extend(v.to_le_bytes());
        }
        b
    }

    #[test]
    fn a_written_file_reads_back() {
        let bytes = tiny();
        let g = Gguf::parse(&bytes).unwrap();
        assert_eq!((g.version, g.architecture()), (3, Some("llama")));
        assert_eq!(g.get("llama.block_count").and_then(Value::as_u64), Some(30));
        let tokens: Vec<&str> =
            g.get("tokenizer.ggml.tokens").unwrap().as_array().unwrap().iter().filter_map(Value::as_str).collect();
        assert_eq!(tokens, ["<s>", "hé"]);
        let t = g.tensor("w").unwrap();
        assert_eq!((t.dims.clone(), t.kind, t.size, t.elements()), (vec![3, 2], TensorType::F32, 24, 6));
        let values: Vec<f32> =
            g.tensor_bytes(t).chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(values, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    }

    /// Every cut of the file, and every lie about a count, is a typed error.
    #[test]
    fn truncated_and_lying_files_are_refused() {
        let bytes = tiny();
        for cut in 0..bytes.len() - 1 {
            assert!(Gguf::parse(&bytes[..cut]).is_err(), "cut at {cut} parsed");
        }
        let mut wrong = bytes.clone();
        wrong[0] ^= 1;
        assert!(matches!(Gguf::parse(&wrong), Err(GgufError::Magic(_))));
        let mut huge = bytes.clone();
        huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(Gguf::parse(&huge), Err(GgufError::TooMany { .. })));
        let mut version = bytes;
        version[4] = 9;
        assert_eq!(Gguf::parse(&version).unwrap_err(), GgufError::Version(9));
    }
}
