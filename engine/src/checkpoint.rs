//! A Hugging Face safetensors checkpoint, memory-mapped: one `model.safetensors` or the
//! shards its `model.safetensors.index.json` lists.
//!
//! Weight matrices stay in the file's own format (f32 or bf16) and, when the file aligns
//! them, in the mapping itself, so opening a 1 GB checkpoint reads nothing until a product
//! touches it and a vocabulary-sized embedding only ever reads the rows it gathers. Small
//! tensors (norms, biases) are widened to owned f32 vectors.
//!
//! Every lookup checks the name, the shape and the dtype and says which file and tensor
//! disagree, so a checkpoint for another configuration fails at load time.
//!
//! ```no_run
//! use spiral_engine::checkpoint::Checkpoint;
//!
//! let ckpt = Checkpoint::open("Qwen3-TTS-12Hz-0.6B-CustomVoice".as_ref())?;
//! let head = ckpt.matrix("talker.codec_head.weight", 3072, 1024)?;
//! assert_eq!(head.rows(), 3072);
//! # Ok::<(), spiral_engine::checkpoint::CheckpointError>(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::marker::PhantomData;
use std::ops::{Deref, Range};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};
use thiserror::Error;

use crate::codec::{self, Codec};
use crate::kernels::gemv::{Matrix, ShapeError, Weights};
use crate::kernels::{bf16, q8};

/// What can go wrong opening a checkpoint or taking a tensor from it.
#[derive(Debug, Error)]
pub enum CheckpointError {
    #[error("{}: {source}", file.display())]
    Io { file: PathBuf, source: std::io::Error },
    #[error("{}: not a valid safetensors file ({detail}); it may be truncated, download it again", file.display())]
    Format { file: PathBuf, detail: String },
    #[error("{}: no model.safetensors or model.safetensors.index.json; is this a model directory?", dir.display())]
    NoWeights { dir: PathBuf },
    #[error("{}: tensor {name:?} is missing; the checkpoint is for a different model", dir.display())]
    Missing { name: String, dir: PathBuf },
    #[error("{}: tensor {name:?} has shape {got:?} where the config says {want:?}; config.json and the weights disagree", file.display())]
    Shape { name: String, want: Vec<usize>, got: Vec<usize>, file: PathBuf },
    #[error("{}: tensor {name:?} is {dtype}; spiral reads f32, bf16 and f16 weights", file.display())]
    Dtype { name: String, dtype: String, file: PathBuf },
}

/// Where one tensor lives.
#[derive(Debug)]
struct Entry {
    shard: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Range<usize>,
}

#[derive(Debug)]
struct Shard {
    path: PathBuf,
    map: Arc<Mmap>,
}

/// The tensors of a checkpoint, by name, over memory-mapped files.
#[derive(Debug)]
pub struct Checkpoint {
    dir: PathBuf,
    shards: Vec<Shard>,
    entries: HashMap<String, Entry>,
    codec: Option<Codec>,
}

impl Checkpoint {
    /// Opens `path`: a directory (its `model.safetensors`, or the shards its
    /// `model.safetensors.index.json` names) or one `.safetensors` file.
    pub fn open(path: &Path) -> Result<Checkpoint, CheckpointError> {
        let files = if path.is_dir() {
            let index = path.join("model.safetensors.index.json");
            let single = path.join("model.safetensors");
            if index.is_file() {
                shard_files(&index)?
            } else if single.is_file() {
                vec![single]
            } else {
                return Err(CheckpointError::NoWeights { dir: path.to_path_buf() });
            }
        } else {
            vec![path.to_path_buf()]
        };
        let mut ckpt = Checkpoint { dir: path.to_path_buf(), shards: Vec::new(), entries: HashMap::new(), codec: None };
        for file in files {
            ckpt.add_shard(file)?;
        }
        Ok(ckpt)
    }

    fn add_shard(&mut self, path: PathBuf) -> Result<(), CheckpointError> {
        let io = |source| CheckpointError::Io { file: path.clone(), source };
        let file = File::open(&path).map_err(io)?;
        // SAFETY: the mapping is read-only; a checkpoint rewritten while spiral runs is
        // outside what any loader can defend against (safetensors' own loaders map too).
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        let format = |detail: String| CheckpointError::Format { file: path.clone(), detail };
        let st = SafeTensors::deserialize(&map).map_err(|e| format(e.to_string()))?;
        let base = map.as_ptr() as usize;
        let shard = self.shards.len();
        for (name, view) in st.iter() {
            let start = view.data().as_ptr() as usize - base;
            let entry = Entry {
                shard,
                dtype: view.dtype(),
                shape: view.shape().to_vec(),
                bytes: start..start + view.data().len(),
            };
            if self.entries.insert(name.to_string(), entry).is_some() {
                return Err(format(format!("tensor {name:?} appears in two shards")));
            }
        }
        self.shards.push(Shard { path, map: Arc::new(map) });
        Ok(())
    }

    /// Encodes the weights of `codec`'s regime as [`resident_matrix`](Self::resident_matrix)
    /// loads them (see [`codec::apply`]).
    pub fn with_codec(mut self, codec: Codec) -> Checkpoint {
        self.codec = Some(codec);
        self
    }

    /// The directory or file this checkpoint was opened from.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.entries.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// The shape of `name` as stored.
    pub fn shape(&self, name: &str) -> Result<&[usize], CheckpointError> {
        Ok(&self.entry(name)?.shape)
    }

    fn entry(&self, name: &str) -> Result<&Entry, CheckpointError> {
        self.entries.get(name).ok_or_else(|| CheckpointError::Missing { name: name.into(), dir: self.dir.clone() })
    }

    /// The entry for `name`, if its shape is `want`.
    fn checked(&self, name: &str, want: &[usize]) -> Result<&Entry, CheckpointError> {
        let e = self.entry(name)?;
        if e.shape != want {
            return Err(CheckpointError::Shape {
                name: name.into(),
                want: want.to_vec(),
                got: e.shape.clone(),
                file: self.shards[e.shard].path.clone(),
            });
        }
        Ok(e)
    }

    /// `name`, of shape `shape`, widened to an owned f32 vector.
    pub fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, CheckpointError> {
        let e = self.checked(name, shape)?;
        let bytes = &self.shards[e.shard].map[e.bytes.clone()];
        let le = |n: usize| bytes.chunks_exact(n);
        Ok(match e.dtype {
            Dtype::F32 => le(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::BF16 => le(2).map(|b| bf16::scalar::widen(u16::from_le_bytes([b[0], b[1]]))).collect(),
            Dtype::F16 => le(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            _ => return Err(self.dtype_error(name, e)),
        })
    }

    /// `name` as a `rows` × `cols` row-major weight matrix in its stored format: f32 and
    /// bf16 stay in the mapping (copied only if the file misaligns them), f16 becomes f32.
    pub fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Weight, CheckpointError> {
        let e = self.checked(name, &[rows, cols])?;
        let map = &self.shards[e.shard].map;
        let data = match e.dtype {
            Dtype::F32 => Data::F32(Storage::new(map, e.bytes.clone())),
            Dtype::BF16 => Data::Bf16(Storage::new(map, e.bytes.clone())),
            Dtype::F16 => Data::F32(Storage::Owned(self.f32(name, &[rows, cols])?)),
            _ => return Err(self.dtype_error(name, e)),
        };
        Ok(Weight { rows, cols, data })
    }

    /// [`matrix`](Self::matrix), copied out of the file mapping into memory that stays
    /// resident (on huge pages where the OS allows): for weights every step streams. With
    /// a codec set ([`with_codec`](Self::with_codec)) the weights of its regime are
    /// encoded on the way.
    pub fn resident_matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Weight, CheckpointError> {
        let stored = self.matrix(name, rows, cols)?;
        let weight = match self.codec {
            Some(codec) => codec::apply(codec, name, &stored),
            None => stored.clone(),
        };
        let file = || self.shards[self.entry(name).map_or(0, |e| e.shard)].path.clone();
        let resident = weight.resident().map_err(|source| CheckpointError::Io { file: file(), source })?;
        stored.release();
        Ok(resident)
    }

    fn dtype_error(&self, name: &str, e: &Entry) -> CheckpointError {
        CheckpointError::Dtype {
            name: name.into(),
            dtype: format!("{:?}", e.dtype),
            file: self.shards[e.shard].path.clone(),
        }
    }
}

/// The files a shard index names, in a stable order.
fn shard_files(index: &Path) -> Result<Vec<PathBuf>, CheckpointError> {
    let text = std::fs::read_to_string(index).map_err(|source| CheckpointError::Io { file: index.into(), source })?;
    let format = |detail: String| CheckpointError::Format { file: index.into(), detail };
    #[derive(serde::Deserialize)]
    struct Index {
        weight_map: BTreeMap<String, String>,
    }
    let parsed: Index = serde_json::from_str(&text).map_err(|e| format(e.to_string()))?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut files: Vec<&String> = parsed.weight_map.values().collect();
    files.sort_unstable();
    files.dedup();
    if files.is_empty() {
        return Err(format("its weight_map is empty".into()));
    }
    Ok(files.into_iter().map(|f| dir.join(f)).collect())
}

/// Element types a mapping can be viewed as: plain little-endian numbers.
pub trait Plain: Copy + sealed::Sealed {}
impl Plain for f32 {}
impl Plain for u16 {}
impl Plain for i8 {}

mod sealed {
    pub trait Sealed {
        fn from_le(bytes: &[u8]) -> Self;
    }
    impl Sealed for f32 {
        fn from_le(b: &[u8]) -> f32 {
            f32::from_le_bytes([b[0], b[1], b[2], b[3]])
        }
    }
    impl Sealed for u16 {
        fn from_le(b: &[u8]) -> u16 {
            u16::from_le_bytes([b[0], b[1]])
        }
    }
    impl Sealed for i8 {
        fn from_le(b: &[u8]) -> i8 {
            i8::from_le_bytes([b[0]])
        }
    }
}

/// A run of `T` inside a shared mapping, or an owned copy where the mapping could not be
/// viewed as `T` (misaligned data or a big-endian host).
#[derive(Clone, Debug)]
pub enum Storage<T> {
    Mapped { map: Arc<Mmap>, start: usize, len: usize, _t: PhantomData<T> },
    Owned(Vec<T>),
}

impl<T: Plain> Storage<T> {
    fn new(map: &Arc<Mmap>, bytes: Range<usize>) -> Storage<T> {
        let size = size_of::<T>();
        let raw = &map[bytes.clone()];
        if cfg!(target_endian = "little") && (raw.as_ptr() as usize).is_multiple_of(align_of::<T>()) {
            Storage::Mapped { map: map.clone(), start: bytes.start, len: raw.len() / size, _t: PhantomData }
        } else {
            Storage::Owned(raw.chunks_exact(size).map(T::from_le).collect())
        }
    }
}

impl<T: Plain> Storage<T> {
    /// The values copied into private anonymous memory that the kernel may back with
    /// transparent huge pages: a product streaming weights through 4 KiB file pages spends
    /// about a quarter of its bandwidth on page walks (measured in docs/QWEN3.md). Where
    /// the OS declines huge pages the copy still works on ordinary pages.
    fn resident(&self) -> std::io::Result<Storage<T>> {
        let values: &[T] = self;
        let bytes = std::mem::size_of_val(values);
        let mut map = memmap2::MmapOptions::new().len(bytes.max(1)).map_anon()?;
        // Best effort: a kernel without transparent huge pages refuses the advice.
        let _ = map.advise(memmap2::Advice::HugePage);
        // SAFETY: `T` is a plain number type (f32 or u16) with no padding, so its values
        // are `bytes` initialized bytes.
        let raw = unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), bytes) };
        map[..bytes].copy_from_slice(raw);
        let copy =
            Storage::Mapped { map: Arc::new(map.make_read_only()?), start: 0, len: values.len(), _t: PhantomData };
        self.release();
        Ok(copy)
    }

    /// Drops this run's pages from the process (whole pages inside it only), so that a
    /// checkpoint copied resident (or encoded) is not also counted in memory twice. The file's pages
    /// stay in the page cache, and a later read would fault them back in.
    fn release(&self) {
        const PAGE: usize = 4096;
        if let Storage::Mapped { map, start, len, .. } = self {
            let (from, to) = (start.next_multiple_of(PAGE), (start + len * size_of::<T>()) / PAGE * PAGE);
            if to > from {
                // SAFETY: a private read-only file mapping: dropping its pages loses nothing
                // (they are re-read from the file on access), and the range lies inside it.
                // Best effort, as an advice is.
                let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, from, to - from) };
            }
        }
    }
}

impl<T: Plain> Deref for Storage<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match self {
            // SAFETY: `new` checked that the run lies in the mapping (a safetensors view of
            // it), is aligned for `T` and that `T` is a plain number in host byte order; the
            // Arc keeps the mapping alive as long as the slice.
            Storage::Mapped { map, start, len, .. } => unsafe {
                std::slice::from_raw_parts(map.as_ptr().add(*start).cast::<T>(), *len)
            },
            Storage::Owned(v) => v,
        }
    }
}

/// A weight's values in their stored format.
#[derive(Clone, Debug)]
pub enum Data {
    F32(Storage<f32>),
    /// bf16 bit patterns.
    Bf16(Storage<u16>),
    /// [`q8`] blocks: an i8 per value, an f32 scale per 32 values of a row.
    Q8 {
        quants: Storage<i8>,
        scales: Storage<f32>,
    },
}

/// A row-major weight matrix from a checkpoint.
#[derive(Clone, Debug)]
pub struct Weight {
    rows: usize,
    cols: usize,
    data: Data,
}

impl Weight {
    /// An owned f32 matrix (for weights made rather than loaded).
    pub fn from_f32(rows: usize, cols: usize, values: Vec<f32>) -> Weight {
        assert_eq!(values.len(), rows * cols, "a {rows}x{cols} weight needs {} values", rows * cols);
        Weight { rows, cols, data: Data::F32(Storage::Owned(values)) }
    }

    /// `data` as a `rows` × `cols` matrix, if its storage holds that shape.
    pub fn new(rows: usize, cols: usize, data: Data) -> Result<Weight, ShapeError> {
        Matrix::new(rows, cols, weights(&data))?;
        Ok(Weight { rows, cols, data })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn data(&self) -> &Data {
        &self.data
    }

    /// The matrix for the GEMV kernels.
    pub fn matrix(&self) -> Matrix<'_> {
        Matrix::new(self.rows, self.cols, weights(&self.data)).expect("a weight holds rows × cols values")
    }

    /// Row `r` widened to f32 into `out` (an embedding lookup). Panics if `r` is out of range.
    pub fn row(&self, r: usize, out: &mut [f32]) {
        assert!(r < self.rows, "row {r} of a {}-row weight", self.rows);
        let span = r * self.cols..(r + 1) * self.cols;
        match &self.data {
            Data::F32(s) => out.copy_from_slice(&s[span]),
            Data::Bf16(s) => bf16::to_f32(&s[span], out),
            Data::Q8 { quants, scales } => {
                let scales = &scales[r * self.cols / q8::BLOCK..][..self.cols / q8::BLOCK];
                for ((o, q), s) in out.chunks_mut(q8::BLOCK).zip(quants[span].chunks(q8::BLOCK)).zip(scales) {
                    o.iter_mut().zip(q).for_each(|(o, &q)| *o = f32::from(q) * s);
                }
            }
        }
    }

    /// The same weight in memory that stays resident (see [`Checkpoint::resident_matrix`]).
    pub fn resident(&self) -> std::io::Result<Weight> {
        let data = match &self.data {
            Data::F32(s) => Data::F32(s.resident()?),
            Data::Bf16(s) => Data::Bf16(s.resident()?),
            Data::Q8 { quants, scales } => Data::Q8 { quants: quants.resident()?, scales: scales.resident()? },
        };
        Ok(Weight { rows: self.rows, cols: self.cols, data })
    }
}

impl Weight {
    /// Drops the pages of a mapped weight from the process once a copy replaces it.
    fn release(&self) {
        match &self.data {
            Data::F32(s) => s.release(),
            Data::Bf16(s) => s.release(),
            Data::Q8 { quants, scales } => {
                quants.release();
                scales.release();
            }
        }
    }
}

/// The kernels' view of a weight's storage.
fn weights(data: &Data) -> Weights<'_> {
    match data {
        Data::F32(s) => Weights::F32(s),
        Data::Bf16(s) => Weights::Bf16(s),
        Data::Q8 { quants, scales } => Weights::Q8 { quants, scales },
    }
}

/// How a written tensor is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    F32,
    Bf16,
}

/// One tensor for [`write()`]: name, shape and storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    pub name: String,
    pub shape: Vec<usize>,
    pub stored: Stored,
}

/// Writes a safetensors file one tensor at a time, so a checkpoint larger than memory can
/// be made: `fill(i, chunk)` writes the next values of tensor `i` (in order, at most 1 Mi
/// values per call; bf16 tensors are rounded from them) and `progress(i)` runs after
/// tensor `i` is written. Creates the directory.
pub fn write(
    path: &Path,
    tensors: &[Spec],
    mut fill: impl FnMut(usize, &mut [f32]),
    mut progress: impl FnMut(usize),
) -> std::io::Result<()> {
    use std::io::Write;
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    let width = |s: Stored| if s == Stored::F32 { 4 } else { 2 };
    for t in tensors {
        let bytes = t.shape.iter().product::<usize>() * width(t.stored);
        let dtype = if t.stored == Stored::F32 { "F32" } else { "BF16" };
        header.insert(
            t.name.clone(),
            serde_json::json!({"dtype": dtype, "shape": t.shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut text = serde_json::to_string(&header).map_err(std::io::Error::other)?;
    // safetensors pads the header to 8 bytes so that every tensor is aligned.
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut out = std::io::BufWriter::with_capacity(1 << 22, File::create(path)?);
    out.write_all(&(text.len() as u64).to_le_bytes())?;
    out.write_all(text.as_bytes())?;
    let mut chunk = vec![0f32; 1 << 20];
    let mut bytes = Vec::with_capacity(chunk.len() * 4);
    for (i, t) in tensors.iter().enumerate() {
        let mut left = t.shape.iter().product::<usize>();
        while left > 0 {
            let n = left.min(chunk.len());
            fill(i, &mut chunk[..n]);
            bytes.clear();
            match t.stored {
                Stored::F32 => bytes.extend(chunk[..n].iter().flat_map(|v| v.to_le_bytes())),
                Stored::Bf16 => bytes.extend(chunk[..n].iter().flat_map(|&v| bf16::scalar::narrow(v).to_le_bytes())),
            }
            out.write_all(&bytes)?;
            left -= n;
        }
        progress(i);
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::TensorView;

    #[test]
    fn written_files_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sub/model.safetensors");
        let spec = |name: &str, shape: Vec<usize>, stored| Spec { name: name.into(), shape, stored };
        let tensors = [spec("w", vec![3, 2], Stored::Bf16), spec("b", vec![3], Stored::F32)];
        let mut next = 0.0f32;
        let mut done = Vec::new();
        super::write(
            &file,
            &tensors,
            |_, chunk| {
                for v in chunk {
                    next += 1.5;
                    *v = next;
                }
            },
            |i| done.push(i),
        )
        .unwrap();
        assert_eq!(done, [0, 1]);
        let ckpt = Checkpoint::open(&file).unwrap();
        assert!(matches!(ckpt.matrix("w", 3, 2).unwrap().data(), Data::Bf16(_)));
        assert_eq!(ckpt.f32("w", &[3, 2]).unwrap(), [1.5, 3., 4.5, 6., 7.5, 9.]);
        assert_eq!(ckpt.f32("b", &[3]).unwrap(), [10.5, 12., 13.5]);
    }

    fn write(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
        let views: Vec<(String, TensorView)> =
            tensors.iter().map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
        safetensors::serialize_to_file(views, None, path).unwrap();
    }

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn reads_f32_bf16_and_f16_and_keeps_matrices_mapped() {
        let dir = tempfile::tempdir().unwrap();
        let bf: Vec<u8> =
            [1.0f32, -2.0, 0.5, 3.0].iter().flat_map(|&x| bf16::scalar::narrow(x).to_le_bytes()).collect();
        let hf: Vec<u8> = [0.25f32, 4.0].iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect();
        write(
            &dir.path().join("model.safetensors"),
            &[
                ("a", Dtype::F32, vec![2, 3], f32_bytes(&[1., 2., 3., 4., 5., 6.])),
                ("b", Dtype::BF16, vec![2, 2], bf),
                ("c", Dtype::F16, vec![2], hf),
                ("d", Dtype::I64, vec![1], vec![0; 8]),
            ],
        );
        let ckpt = Checkpoint::open(dir.path()).unwrap();
        assert_eq!(ckpt.names(), ["a", "b", "c", "d"]);
        assert_eq!(ckpt.f32("c", &[2]).unwrap(), [0.25, 4.0]);
        let a = ckpt.matrix("a", 2, 3).unwrap();
        assert!(matches!(a.data(), Data::F32(Storage::Mapped { .. })));
        let mut row = [0.0; 3];
        a.row(1, &mut row);
        assert_eq!(row, [4., 5., 6.]);
        let b = ckpt.matrix("b", 2, 2).unwrap();
        assert!(matches!(b.data(), Data::Bf16(Storage::Mapped { .. })));
        let resident = ckpt.resident_matrix("b", 2, 2).unwrap();
        match (b.data(), resident.data()) {
            (Data::Bf16(m), Data::Bf16(r)) => assert_eq!(&m[..], &r[..]),
            _ => panic!("the resident copy keeps the format"),
        }
        let mut y = [0.0; 2];
        crate::kernels::gemv::gemv(crate::kernels::Cpu::best(), &b.matrix(), &[1.0, 1.0], &mut y);
        assert_eq!(y, [-1.0, 3.5]);

        let e = ckpt.matrix("a", 3, 2).unwrap_err().to_string();
        assert!(e.contains("model.safetensors") && e.contains("\"a\"") && e.contains("[3, 2]"), "{e}");
        let e = ckpt.f32("d", &[1]).unwrap_err().to_string();
        assert!(e.contains("I64"), "{e}");
        let e = ckpt.f32("zz", &[1]).unwrap_err().to_string();
        assert!(e.contains("\"zz\" is missing"), "{e}");
    }

    #[test]
    fn shards_are_read_through_their_index() {
        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join("part-1.safetensors"), &[("x", Dtype::F32, vec![1], f32_bytes(&[7.0]))]);
        write(&dir.path().join("part-2.safetensors"), &[("y", Dtype::F32, vec![1], f32_bytes(&[8.0]))]);
        std::fs::write(
            dir.path().join("model.safetensors.index.json"),
            r#"{"metadata": {}, "weight_map": {"x": "part-1.safetensors", "y": "part-2.safetensors"}}"#,
        )
        .unwrap();
        let ckpt = Checkpoint::open(dir.path()).unwrap();
        assert_eq!((ckpt.f32("x", &[1]).unwrap()[0], ckpt.f32("y", &[1]).unwrap()[0]), (7.0, 8.0));
    }

    #[test]
    fn truncated_and_missing_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let e = Checkpoint::open(dir.path()).unwrap_err().to_string();
        assert!(e.contains("no model.safetensors"), "{e}");
        let file = dir.path().join("model.safetensors");
        write(&file, &[("a", Dtype::F32, vec![64], f32_bytes(&[1.0; 64]))]);
        let bytes = std::fs::read(&file).unwrap();
        for cut in [0, 4, 8, 20, bytes.len() - 1] {
            std::fs::write(&file, &bytes[..cut]).unwrap();
            let e = Checkpoint::open(dir.path()).unwrap_err().to_string();
            assert!(e.contains("model.safetensors") && e.contains("truncated"), "cut {cut}: {e}");
        }
    }
}
