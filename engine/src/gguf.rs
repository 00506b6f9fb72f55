//! GGUF, llama.cpp's single-file container: a header of typed key-value metadata and
//! tensor descriptions, then the tensors' data, each at an aligned offset.
//!
//! spiral reads the tensors it can multiply as they are: F32, F16, BF16 and the block
//! formats whose layouts [`Quant`] shares with ggml (Q8_0, Q4_0, Q4_K, Q5_K, Q6_K). Any other type is an
//! error naming the tensor and the type. Dimensions are stored innermost first (`ne[0]` is
//! a row's length); [`Tensor::shape`] gives them outermost first, as safetensors does.
//!
//! ```
//! let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/gguf/layouts.gguf"))?;
//! let file = spiral_engine::gguf::parse(&bytes).map_err(std::io::Error::other)?;
//! let q4k = file.tensors.iter().find(|t| t.name == "q4_k").unwrap();
//! assert_eq!(q4k.shape, [3, 512]);
//! # Ok::<(), std::io::Error>(())
//! ```

use std::ops::Range;

use crate::kernels::quant::Quant;

/// What a tensor holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    F32,
    F16,
    Bf16,
    Quant(Quant),
}

/// One tensor of a GGUF file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tensor {
    pub name: String,
    pub kind: Kind,
    /// Outermost dimension first; the last is a row's length.
    pub shape: Vec<usize>,
    /// Where its data lies in the file.
    pub bytes: Range<usize>,
}

/// A parsed GGUF header.
#[derive(Clone, Debug)]
pub struct File {
    pub version: u32,
    /// `general.architecture`, if the file names one.
    pub architecture: Option<String>,
    pub tensors: Vec<Tensor>,
}

/// ggml's type ids and names, for the types spiral reads and for naming the others.
const TYPES: [(u32, &str); 32] = [
    (0, "F32"),
    (1, "F16"),
    (2, "Q4_0"),
    (3, "Q4_1"),
    (6, "Q5_0"),
    (7, "Q5_1"),
    (8, "Q8_0"),
    (9, "Q8_1"),
    (10, "Q2_K"),
    (11, "Q3_K"),
    (12, "Q4_K"),
    (13, "Q5_K"),
    (14, "Q6_K"),
    (15, "Q8_K"),
    (16, "IQ2_XXS"),
    (17, "IQ2_XS"),
    (18, "IQ3_XXS"),
    (19, "IQ1_S"),
    (20, "IQ4_NL"),
    (21, "IQ3_S"),
    (22, "IQ2_S"),
    (23, "IQ4_XS"),
    (24, "I8"),
    (25, "I16"),
    (26, "I32"),
    (27, "I64"),
    (28, "F64"),
    (29, "IQ1_M"),
    (30, "BF16"),
    (34, "TQ1_0"),
    (35, "TQ2_0"),
    (39, "MXFP4"),
];

fn kind(id: u32) -> Option<Kind> {
    Some(match id {
        0 => Kind::F32,
        1 => Kind::F16,
        30 => Kind::Bf16,
        2 => Kind::Quant(Quant::Q4_0),
        8 => Kind::Quant(Quant::Q8_0),
        12 => Kind::Quant(Quant::Q4K),
        13 => Kind::Quant(Quant::Q5K),
        14 => Kind::Quant(Quant::Q6K),
        _ => return None,
    })
}

/// A little-endian reader over the header that reports where it ran out.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or_else(|| format!("the header ends early (at byte {}); the file is truncated", self.at))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    /// A count or size, which must fit what is left of the file to be believed.
    fn count(&mut self, each: usize) -> Result<usize, String> {
        let n = self.u64()?;
        let left = (self.bytes.len() - self.at) as u64;
        if n.saturating_mul(each.max(1) as u64) > left {
            return Err(format!("a count of {n} at byte {} exceeds the file; it is truncated or damaged", self.at - 8));
        }
        Ok(n as usize)
    }

    fn string(&mut self) -> Result<String, String> {
        let n = self.count(1)?;
        let at = self.at;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| format!("the string at byte {at} is not UTF-8"))
    }

    /// Skips (or, for a string, returns) one metadata value of type `ty`.
    fn value(&mut self, ty: u32) -> Result<Option<String>, String> {
        let width = match ty {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            10..=12 => 8,
            8 => return self.string().map(Some),
            9 => {
                let inner = self.u32()?;
                let n = self.count(1)?;
                for _ in 0..n {
                    self.value(inner)?;
                }
                return Ok(None);
            }
            _ => return Err(format!("metadata value type {ty} at byte {} is not GGUF's", self.at - 4)),
        };
        self.take(width)?;
        Ok(None)
    }
}

/// Parses the header of the GGUF file `bytes` (version 2 or 3, little-endian).
pub fn parse(bytes: &[u8]) -> Result<File, String> {
    let mut c = Cursor { bytes, at: 0 };
    if c.take(4).ok() != Some(b"GGUF".as_slice()) {
        return Err("not a GGUF file (no GGUF magic)".into());
    }
    let version = c.u32()?;
    if !(2..=3).contains(&version) {
        return Err(format!("GGUF version {version}; spiral reads versions 2 and 3"));
    }
    let tensor_count = c.count(1)?;
    let kv_count = c.count(1)?;
    let mut alignment = 32usize;
    let mut architecture = None;
    for _ in 0..kv_count {
        let key = c.string()?;
        let ty = c.u32()?;
        let value_at = c.at;
        let text = c.value(ty)?;
        match key.as_str() {
            "general.alignment" if ty == 4 => {
                alignment = u32::from_le_bytes(bytes[value_at..value_at + 4].try_into().expect("4 bytes")) as usize;
                if alignment == 0 || !alignment.is_power_of_two() {
                    return Err(format!("general.alignment {alignment} is not a power of two"));
                }
            }
            "general.architecture" => architecture = text,
            _ => {}
        }
    }
    let mut infos = Vec::with_capacity(tensor_count);
    for _ in 0..tensor_count {
        let name = c.string()?;
        let dims = c.u32()? as usize;
        if dims == 0 || dims > 4 {
            return Err(format!("tensor {name:?} has {dims} dimensions; GGUF tensors have 1 to 4"));
        }
        let mut ne = Vec::with_capacity(dims);
        for _ in 0..dims {
            ne.push(c.u64()?);
        }
        let id = c.u32()?;
        let offset = c.u64()?;
        let kind = kind(id).ok_or_else(|| {
            let name_of = TYPES.iter().find(|t| t.0 == id).map_or("an unknown type", |t| t.1);
            format!(
                "tensor {name:?} is of ggml type {id} ({name_of}); spiral reads F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K and Q6_K"
            )
        })?;
        infos.push((name, kind, ne, offset));
    }
    let data = c.at.next_multiple_of(alignment);
    let mut tensors = Vec::with_capacity(infos.len());
    for (name, kind, ne, offset) in infos {
        let shape: Vec<usize> = ne.iter().rev().map(|&d| d as usize).collect();
        let values = ne.iter().try_fold(1usize, |n, &d| n.checked_mul(usize::try_from(d).ok()?));
        let row = shape[shape.len() - 1];
        let size = match (kind, values) {
            (_, None) => None,
            (Kind::F32, Some(n)) => n.checked_mul(4),
            (Kind::F16 | Kind::Bf16, Some(n)) => n.checked_mul(2),
            (Kind::Quant(q), Some(n)) if row.is_multiple_of(q.block()) => Some(n / q.block() * q.block_bytes()),
            (Kind::Quant(q), _) => {
                return Err(format!(
                    "tensor {name:?}: rows of {row} are not whole {} blocks of {}",
                    q.name(),
                    q.block()
                ))
            }
        };
        let start = usize::try_from(offset).ok().and_then(|o| o.checked_add(data));
        let range = match (start, size) {
            (Some(start), Some(size)) if start.checked_add(size).is_some_and(|end| end <= bytes.len()) => {
                start..start + size
            }
            _ => return Err(format!("tensor {name:?} lies beyond the end of the file; it is truncated")),
        };
        tensors.push(Tensor { name, kind, shape, bytes: range });
    }
    Ok(File { version, architecture, tensors })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GGUF file of tensors described as (name, ne, type id) with zeroed data.
    fn file(tensors: &[(&str, &[u64], u32)]) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend((tensors.len() as u64).to_le_bytes());
        out.extend(1u64.to_le_bytes());
        let string = |out: &mut Vec<u8>, s: &str| {
            out.extend((s.len() as u64).to_le_bytes());
            out.extend(s.as_bytes());
        };
        string(&mut out, "general.architecture");
        out.extend(8u32.to_le_bytes());
        string(&mut out, "test");
        let mut offset = 0u64;
        for (name, ne, ty) in tensors {
            string(&mut out, name);
            out.extend((ne.len() as u32).to_le_bytes());
            ne.iter().for_each(|d| out.extend(d.to_le_bytes()));
            out.extend(ty.to_le_bytes());
            out.extend(offset.to_le_bytes());
            offset += 4096;
        }
        out.resize(out.len().next_multiple_of(32) + offset as usize, 0);
        out
    }

    #[test]
    fn headers_parse_and_bad_ones_are_errors_that_say_why() {
        let ok = file(&[("w", &[256, 2], 12), ("b", &[8], 0)]);
        let f = parse(&ok).unwrap();
        assert_eq!((f.version, f.architecture.as_deref()), (3, Some("test")));
        assert_eq!(f.tensors[0].shape, [2, 256]);
        assert_eq!((f.tensors[0].kind, f.tensors[0].bytes.len()), (Kind::Quant(Quant::Q4K), 288));
        assert_eq!(f.tensors[1].bytes.len(), 32);

        let e = parse(&file(&[("w.weight", &[256, 2], 11)])).unwrap_err();
        assert!(e.contains("\"w.weight\"") && e.contains("type 11 (Q3_K)"), "{e}");
        let e = parse(&file(&[("odd", &[100, 2], 8)])).unwrap_err();
        assert!(e.contains("not whole q8_0 blocks"), "{e}");
        for cut in [3, 10, 30, 60, f.tensors[1].bytes.end - 1] {
            let e = parse(&ok[..cut]).unwrap_err();
            assert!(e.contains("truncated") || e.contains("magic"), "cut {cut}: {e}");
        }
        let mut v9 = ok.clone();
        v9[4] = 9;
        assert!(parse(&v9).unwrap_err().contains("version 9"));
    }
}
