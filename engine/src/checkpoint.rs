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
use crate::gguf;
use crate::kernels::gemv::{Matrix, ShapeError, Weights};
use crate::kernels::quant::Quant;
use crate::kernels::{bf16, palette};

/// What can go wrong opening a checkpoint or taking a tensor from it.
#[derive(Debug, Error)]
pub enum CheckpointError {
    #[error("{}: {source}", file.display())]
    Io { file: PathBuf, source: std::io::Error },
    #[error("{}: not a valid weights file ({detail}); it may be truncated, download it again", file.display())]
    Format { file: PathBuf, detail: String },
    #[error("{}: no model.safetensors, model.safetensors.index.json or model.gguf; is this a model directory?", dir.display())]
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
    /// The tensor's shape; for an encoded tensor the matrix it encodes, not its bytes.
    shape: Vec<usize>,
    bytes: Range<usize>,
    /// How `spiral compress` encoded the tensor ([`Stored::Quant`] or [`Stored::Palette`]).
    encoding: Option<Stored>,
}

/// The safetensors metadata key under which `spiral compress` lists its encoded tensors: a
/// JSON object from tensor name to block format name (docs/FORMATS.md).
pub const ENCODINGS_KEY: &str = "spiral.encodings";

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
    /// The safetensors header metadata of every shard.
    metadata: HashMap<String, String>,
    codec: Option<Codec>,
}

impl Checkpoint {
    /// Opens `path`: a directory (its `model.safetensors`, the shards its
    /// `model.safetensors.index.json` names, or its `model.gguf`), one `.safetensors` file
    /// or one `.gguf` file ([`crate::gguf`]: tensors under the names the file gives
    /// them).
    pub fn open(path: &Path) -> Result<Checkpoint, CheckpointError> {
        let files = if path.is_dir() {
            let index = path.join("model.safetensors.index.json");
            let single = path.join("model.safetensors");
            let gguf = path.join("model.gguf");
            if index.is_file() {
                shard_files(&index)?
            } else if single.is_file() {
                vec![single]
            } else if gguf.is_file() {
                vec![gguf]
            } else {
                return Err(CheckpointError::NoWeights { dir: path.to_path_buf() });
            }
        } else {
            vec![path.to_path_buf()]
        };
        let mut ckpt = Checkpoint {
            dir: path.to_path_buf(),
            shards: Vec::new(),
            entries: HashMap::new(),
            metadata: HashMap::new(),
            codec: None,
        };
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
        if map.starts_with(b"GGUF") {
            return self.add_gguf(path, map);
        }
        let format = |detail: String| CheckpointError::Format { file: path.clone(), detail };
        let st = SafeTensors::deserialize(&map).map_err(|e| format(e.to_string()))?;
        let (_, meta) = SafeTensors::read_metadata(&map).map_err(|e| format(e.to_string()))?;
        if let Some(m) = meta.metadata() {
            self.metadata.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        let mut encodings: HashMap<String, String> = match meta.metadata().as_ref().and_then(|m| m.get(ENCODINGS_KEY)) {
            Some(json) => serde_json::from_str(json).map_err(|e| format(format!("{ENCODINGS_KEY}: {e}")))?,
            None => HashMap::new(),
        };
        let base = map.as_ptr() as usize;
        let shard = self.shards.len();
        for (name, view) in st.iter() {
            let start = view.data().as_ptr() as usize - base;
            let mut entry = Entry {
                shard,
                dtype: view.dtype(),
                shape: view.shape().to_vec(),
                bytes: start..start + view.data().len(),
                encoding: None,
            };
            if let Some(listed) = encodings.remove(name) {
                let unknown = || format!("tensor {name:?} is in an unknown format {listed:?}; a newer spiral wrote it");
                let how = if listed == "palette" {
                    Stored::Palette { stages: 0 } // the codebooks' shape says how many, below
                } else {
                    Stored::Quant(Quant::parse(&listed).ok_or_else(|| format(unknown()))?)
                };
                match (how, entry.dtype, entry.shape.as_slice()) {
                    (Stored::Quant(q), Dtype::U8, &[rows, bytes]) if bytes.is_multiple_of(q.block_bytes()) => {
                        entry.shape = vec![rows, bytes / q.block_bytes() * q.block()];
                    }
                    (Stored::Palette { .. }, Dtype::U8, &[_, _]) => {}
                    _ => return Err(format(format!("tensor {name:?} is not {listed} rows"))),
                }
                entry.encoding = Some(how);
            }
            if self.entries.insert(name.to_string(), entry).is_some() {
                return Err(format(format!("tensor {name:?} appears in two shards")));
            }
        }
        if let Some(name) = encodings.keys().next() {
            return Err(format(format!("{ENCODINGS_KEY} names {name:?}, which the file does not hold")));
        }
        self.resolve_palettes(shard).map_err(format)?;
        self.shards.push(Shard { path, map: Arc::new(map) });
        Ok(())
    }

    /// A palette's stages and columns from its codebooks `{name}.codebooks` (`[stages,
    /// DIM, CENTROIDS]` f32) and its indices `[rows, stages · cols / DIM]`; its row scales
    /// `{name}.scales` must be `[rows]` f32.
    fn resolve_palettes(&mut self, shard: usize) -> Result<(), String> {
        let names: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| e.shard == shard && matches!(e.encoding, Some(Stored::Palette { .. })))
            .map(|(n, _)| n.clone())
            .collect();
        for name in names {
            let side = |part: &str| self.entries.get(&format!("{name}.{part}")).filter(|e| e.dtype == Dtype::F32);
            let missing = || format!("palette {name:?} lacks its f32 {name}.codebooks or {name}.scales");
            let (books, scales) = (side("codebooks").ok_or_else(missing)?, side("scales").ok_or_else(missing)?);
            let e = &self.entries[&name];
            let (rows, bytes) = (e.shape[0], e.shape[1]);
            let stages = match books.shape[..] {
                [stages, palette::DIM, palette::CENTROIDS] if stages > 0 => stages,
                _ => {
                    return Err(format!(
                        "{name}.codebooks is {:?}, not [stages, {}, {}]",
                        books.shape,
                        palette::DIM,
                        palette::CENTROIDS
                    ))
                }
            };
            if scales.shape != [rows] || !bytes.is_multiple_of(stages) {
                return Err(format!(
                    "palette {name:?}: {:?} indices do not match its {stages} stages and {:?} scales",
                    e.shape, scales.shape
                ));
            }
            let e = self.entries.get_mut(&name).expect("listed above");
            e.shape = vec![rows, bytes / stages * palette::DIM];
            e.encoding = Some(Stored::Palette { stages });
        }
        Ok(())
    }

    /// The side tensor `{name}.{part}` of a palette, as f32 storage.
    fn palette_part(&self, name: &str, part: &str) -> Result<Storage<f32>, CheckpointError> {
        let e = self.entry(&format!("{name}.{part}"))?;
        Ok(Storage::new(&self.shards[e.shard].map, e.bytes.clone()))
    }

    /// The data of encoded entry `e` (tensor `name`).
    fn encoded(&self, name: &str, e: &Entry, how: Stored) -> Result<Data, CheckpointError> {
        let bytes = Storage::new(&self.shards[e.shard].map, e.bytes.clone());
        Ok(match how {
            Stored::Palette { .. } => Data::Palette {
                codebooks: self.palette_part(name, "codebooks")?,
                scales: self.palette_part(name, "scales")?,
                indices: bytes,
            },
            Stored::Quant(q) => Data::Quant(q, bytes),
            _ => unreachable!("only block and palette tensors are listed as encoded"),
        })
    }

    fn add_gguf(&mut self, path: PathBuf, map: Mmap) -> Result<(), CheckpointError> {
        let format = |detail: String| CheckpointError::Format { file: path.clone(), detail };
        let file = gguf::parse(&map).map_err(format)?;
        let shard = self.shards.len();
        for t in file.tensors {
            let (dtype, encoding) = match t.kind {
                gguf::Kind::F32 => (Dtype::F32, None),
                gguf::Kind::F16 => (Dtype::F16, None),
                gguf::Kind::Bf16 => (Dtype::BF16, None),
                gguf::Kind::Quant(q) => (Dtype::U8, Some(Stored::Quant(q))),
            };
            let entry = Entry { shard, dtype, shape: t.shape, bytes: t.bytes, encoding };
            if self.entries.insert(t.name.clone(), entry).is_some() {
                return Err(format(format!("tensor {:?} appears twice", t.name)));
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

    /// The value under `key` in a safetensors header's metadata.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }

    /// The directory or file this checkpoint was opened from.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    /// All tensor names, sorted; a palette's codebooks and scales are part of it, not
    /// tensors of their own.
    pub fn names(&self) -> Vec<&str> {
        let part = |name: &str| {
            [".codebooks", ".scales"].iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .and_then(|p| self.entries.get(p))
                    .is_some_and(|e| matches!(e.encoding, Some(Stored::Palette { .. })))
            })
        };
        let mut names: Vec<&str> = self.entries.keys().map(String::as_str).filter(|n| !part(n)).collect();
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

    /// How `name` is encoded ([`Stored::Quant`] or [`Stored::Palette`]), if it is.
    pub fn encoding(&self, name: &str) -> Result<Option<Stored>, CheckpointError> {
        Ok(self.entry(name)?.encoding)
    }

    /// `name`'s bytes as the file holds them, and how they are stored.
    pub fn stored(&self, name: &str) -> Result<(Stored, &[u8]), CheckpointError> {
        let e = self.entry(name)?;
        let stored = match (e.encoding, e.dtype) {
            (Some(how), _) => how,
            (None, Dtype::F32) => Stored::F32,
            (None, Dtype::BF16) => Stored::Bf16,
            (None, Dtype::F16) => Stored::F16,
            _ => return Err(self.dtype_error(name, e)),
        };
        Ok((stored, &self.shards[e.shard].map[e.bytes.clone()]))
    }

    /// `name`, of shape `shape`, widened (or decoded) to an owned f32 vector.
    pub fn f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, CheckpointError> {
        let e = self.checked(name, shape)?;
        if let Some(how) = e.encoding {
            let cols = shape.last().copied().unwrap_or(1);
            let rows = shape.iter().product::<usize>() / cols.max(1);
            let w = Weight { rows, cols, data: self.encoded(name, e, how)? };
            let mut out = vec![0.0; rows * cols];
            out.chunks_exact_mut(cols.max(1)).enumerate().for_each(|(r, row)| w.row(r, row));
            return Ok(out);
        }
        let bytes = &self.shards[e.shard].map[e.bytes.clone()];
        let le = |n: usize| bytes.chunks_exact(n);
        Ok(match e.dtype {
            Dtype::F32 => le(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::BF16 => le(2).map(|b| bf16::scalar::widen(u16::from_le_bytes([b[0], b[1]]))).collect(),
            Dtype::F16 => le(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            _ => return Err(self.dtype_error(name, e)),
        })
    }

    /// `name` as a `rows` × `cols` row-major weight matrix in its stored format: f32, bf16
    /// and block formats stay in the mapping (copied only if the file misaligns them), f16
    /// becomes f32.
    pub fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<Weight, CheckpointError> {
        let e = self.checked(name, &[rows, cols])?;
        let map = &self.shards[e.shard].map;
        let data = match (e.encoding, e.dtype) {
            (Some(how), _) => self.encoded(name, e, how)?,
            (None, Dtype::F32) => Data::F32(Storage::new(map, e.bytes.clone())),
            (None, Dtype::BF16) => Data::Bf16(Storage::new(map, e.bytes.clone())),
            (None, Dtype::F16) => Data::F32(Storage::Owned(self.f32(name, &[rows, cols])?)),
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
impl Plain for u8 {}

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
    impl Sealed for u8 {
        fn from_le(b: &[u8]) -> u8 {
            b[0]
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
    /// Rows of blocks in a [`Quant`] format.
    Quant(Quant, Storage<u8>),
    /// [`palette`] rows (see [`Weights::Palette`]).
    Palette {
        codebooks: Storage<f32>,
        scales: Storage<f32>,
        indices: Storage<u8>,
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
            Data::Quant(q, s) => q.decode_row(&s[r * q.row_bytes(self.cols)..][..q.row_bytes(self.cols)], out),
            Data::Palette { codebooks, scales, indices } => {
                let groups = self.cols / palette::DIM;
                let stages = codebooks.len() / (palette::DIM * palette::CENTROIDS);
                out.fill(0.0);
                let books = codebooks.chunks_exact(palette::DIM * palette::CENTROIDS);
                for (book, idx) in books.zip(indices[r * stages * groups..].chunks_exact(groups)) {
                    for (o, &c) in out.chunks_exact_mut(palette::DIM).zip(idx) {
                        o.iter_mut().enumerate().for_each(|(j, o)| *o += book[j * palette::CENTROIDS + c as usize]);
                    }
                }
                out.iter_mut().for_each(|o| *o *= scales[r]);
            }
        }
    }

    /// The same weight in memory that stays resident (see [`Checkpoint::resident_matrix`]).
    pub fn resident(&self) -> std::io::Result<Weight> {
        let data = match &self.data {
            Data::F32(s) => Data::F32(s.resident()?),
            Data::Bf16(s) => Data::Bf16(s.resident()?),
            Data::Quant(q, s) => Data::Quant(*q, s.resident()?),
            Data::Palette { codebooks, scales, indices } => Data::Palette {
                codebooks: codebooks.resident()?,
                scales: scales.resident()?,
                indices: indices.resident()?,
            },
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
            Data::Quant(_, s) => s.release(),
            Data::Palette { codebooks, scales, indices } => {
                codebooks.release();
                scales.release();
                indices.release();
            }
        }
    }
}

/// The kernels' view of a weight's storage.
fn weights(data: &Data) -> Weights<'_> {
    match data {
        Data::F32(s) => Weights::F32(s),
        Data::Bf16(s) => Weights::Bf16(s),
        Data::Quant(q, s) => Weights::Quant(*q, s),
        Data::Palette { codebooks, scales, indices } => Weights::Palette { codebooks, scales, indices },
    }
}

/// How a tensor is stored in a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    F32,
    Bf16,
    F16,
    /// Rows of blocks: a `[rows, row bytes]` u8 tensor, listed under [`ENCODINGS_KEY`].
    Quant(Quant),
    /// Palette indices: a `[rows, stages · cols / DIM]` u8 tensor listed as `palette`,
    /// beside f32 `{name}.codebooks` and `{name}.scales` (written as their own tensors).
    Palette {
        stages: usize,
    },
}

impl Stored {
    /// The name in tables and messages.
    pub fn name(self) -> &'static str {
        match self {
            Stored::F32 => "f32",
            Stored::Bf16 => "bf16",
            Stored::F16 => "f16",
            Stored::Quant(q) => q.name(),
            Stored::Palette { .. } => "palette",
        }
    }

    /// Bytes of a tensor of `shape` stored this way.
    pub fn bytes(self, shape: &[usize]) -> usize {
        let n = shape.iter().product::<usize>();
        match self {
            Stored::F32 => 4 * n,
            Stored::Bf16 | Stored::F16 => 2 * n,
            Stored::Quant(q) => n / q.block() * q.block_bytes(),
            Stored::Palette { stages } => n / palette::DIM * stages,
        }
    }
}

/// One tensor for [`write()`]: name, shape (of the values, also for an encoded tensor) and
/// storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    pub name: String,
    pub shape: Vec<usize>,
    pub stored: Stored,
}

/// Writes a safetensors file one tensor at a time, so a checkpoint larger than memory can
/// be made: `fill(i, chunk)` writes the next values of tensor `i` (in order, at most 1 Mi
/// values per call, whole rows for a block format; bf16, f16 and block tensors are encoded
/// from them) and `progress(i)` runs after tensor `i` is written. Creates the directory.
pub fn write(
    path: &Path,
    tensors: &[Spec],
    mut fill: impl FnMut(usize, &mut [f32]),
    progress: impl FnMut(usize),
) -> std::io::Result<()> {
    let mut chunk = vec![0f32; 1 << 20];
    let mut bytes = Vec::with_capacity(chunk.len() * 4);
    write_bytes(
        path,
        tensors,
        &BTreeMap::new(),
        |i, out| {
            let t = &tensors[i];
            let row = t.shape.last().copied().unwrap_or(1).max(1);
            let step = match t.stored {
                Stored::Quant(_) => (chunk.len() / row).max(1) * row,
                _ => chunk.len(),
            };
            if chunk.len() < step {
                chunk.resize(step, 0.0);
            }
            let mut left = t.shape.iter().product::<usize>();
            while left > 0 {
                let n = left.min(step);
                fill(i, &mut chunk[..n]);
                bytes.clear();
                match t.stored {
                    Stored::F32 => bytes.extend(chunk[..n].iter().flat_map(|v| v.to_le_bytes())),
                    Stored::Bf16 => {
                        bytes.extend(chunk[..n].iter().flat_map(|&v| bf16::scalar::narrow(v).to_le_bytes()))
                    }
                    Stored::F16 => bytes.extend(chunk[..n].iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes())),
                    Stored::Palette { .. } => {
                        return Err(std::io::Error::other(format!(
                            "{}: palettes are written by spiral compress",
                            t.name
                        )))
                    }
                    Stored::Quant(q) => {
                        bytes.resize(n / row * q.row_bytes(row), 0);
                        for (values, out) in chunk[..n].chunks_exact(row).zip(bytes.chunks_exact_mut(q.row_bytes(row)))
                        {
                            q.encode_row(values, out);
                        }
                    }
                }
                out.write_all(&bytes)?;
                left -= n;
            }
            Ok(())
        },
        progress,
    )
}

/// Writes a safetensors file whose tensors' bytes `body(i, out)` writes in order (exactly
/// [`Stored::bytes`] each, as the header says); block-format tensors are listed in the
/// header's metadata beside `metadata`. Creates the directory.
pub fn write_bytes(
    path: &Path,
    tensors: &[Spec],
    metadata: &BTreeMap<String, String>,
    mut body: impl FnMut(usize, &mut dyn std::io::Write) -> std::io::Result<()>,
    mut progress: impl FnMut(usize),
) -> std::io::Result<()> {
    use std::io::Write;
    let mut header = serde_json::Map::new();
    let mut encodings = BTreeMap::new();
    let mut offset = 0usize;
    for t in tensors {
        let bytes = t.stored.bytes(&t.shape);
        let (dtype, shape) = match t.stored {
            Stored::F32 => ("F32", t.shape.clone()),
            Stored::Bf16 => ("BF16", t.shape.clone()),
            Stored::F16 => ("F16", t.shape.clone()),
            Stored::Quant(q) => {
                let (rows, cols) = match t.shape[..] {
                    [rows, cols] if cols.is_multiple_of(q.block()) => (rows, cols),
                    _ => return Err(std::io::Error::other(format!("{}: {:?} is not rows of {q:?}", t.name, t.shape))),
                };
                encodings.insert(t.name.clone(), q.name());
                ("U8", vec![rows, q.row_bytes(cols)])
            }
            Stored::Palette { stages } => {
                let (rows, cols) = match t.shape[..] {
                    [rows, cols] if cols.is_multiple_of(palette::DIM) => (rows, cols),
                    _ => return Err(std::io::Error::other(format!("{}: {:?} is not palette rows", t.name, t.shape))),
                };
                encodings.insert(t.name.clone(), "palette");
                ("U8", vec![rows, stages * cols / palette::DIM])
            }
        };
        header.insert(
            t.name.clone(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut meta = metadata.clone();
    if !encodings.is_empty() {
        meta.insert(ENCODINGS_KEY.into(), serde_json::to_string(&encodings).map_err(std::io::Error::other)?);
    }
    if !meta.is_empty() {
        header.insert("__metadata__".into(), serde_json::json!(meta));
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
    for (i, t) in tensors.iter().enumerate() {
        let mut counted = Counted { inner: &mut out, bytes: 0 };
        body(i, &mut counted)?;
        let want = t.stored.bytes(&t.shape);
        if counted.bytes != want {
            return Err(std::io::Error::other(format!("{}: wrote {} bytes for {want}", t.name, counted.bytes)));
        }
        progress(i);
    }
    out.flush()
}

/// A writer that counts what passes through it.
struct Counted<'a, W> {
    inner: &'a mut W,
    bytes: usize,
}

impl<W: std::io::Write> std::io::Write for Counted<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `tensors` to `path` filled, in order, with random values (seeded), and returns
/// the values.
#[cfg(test)]
pub(crate) fn write_random(path: &Path, tensors: &[Spec], seed: u64) -> Vec<f32> {
    let total = tensors.iter().map(|t| t.shape.iter().product::<usize>()).sum();
    let values = crate::kernels::testing::random(total, seed);
    let mut at = 0;
    write(
        path,
        tensors,
        |_, chunk| {
            chunk.copy_from_slice(&values[at..at + chunk.len()]);
            at += chunk.len();
        },
        |_| {},
    )
    .unwrap();
    values
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

    #[test]
    fn block_tensors_round_trip_mapped_and_bad_listings_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("model.safetensors");
        let spec = |name: &str, shape: Vec<usize>, stored| Spec { name: name.into(), shape, stored };
        let tensors = [
            spec("q4", vec![3, 512], Stored::Quant(Quant::Q4K)),
            spec("q8", vec![2, 64], Stored::Quant(Quant::Q8_0)),
            spec("h", vec![4], Stored::F16),
        ];
        let values = write_random(&file, &tensors, 9);
        let ckpt = Checkpoint::open(&file).unwrap();
        assert_eq!(ckpt.shape("q4").unwrap(), [3, 512]);
        assert_eq!(ckpt.encoding("q8").unwrap(), Some(Stored::Quant(Quant::Q8_0)));
        for (name, q, rows, cols, from) in [("q4", Quant::Q4K, 3, 512, 0), ("q8", Quant::Q8_0, 2, 64, 1536)] {
            let w = ckpt.matrix(name, rows, cols).unwrap();
            assert!(matches!(w.data(), Data::Quant(got, Storage::Mapped { .. }) if *got == q));
            let (stored, bytes) = ckpt.stored(name).unwrap();
            assert_eq!((stored, bytes.len()), (Stored::Quant(q), rows * q.row_bytes(cols)));
            let (mut want, mut encoded) = (vec![0.0; cols], vec![0u8; q.row_bytes(cols)]);
            let decoded = ckpt.f32(name, &[rows, cols]).unwrap();
            for r in 0..rows {
                q.encode_row(&values[from + r * cols..][..cols], &mut encoded);
                q.decode_row(&encoded, &mut want);
                assert_eq!(&decoded[r * cols..][..cols], &want[..], "{name} row {r}");
            }
        }
        assert_eq!(
            ckpt.f32("h", &[4]).unwrap(),
            values[1664..].iter().map(|&v| half::f16::from_f32(v).to_f32()).collect::<Vec<_>>()
        );

        // A listing that names a missing tensor, an unknown format, or a tensor of the wrong
        // shape is an error naming it.
        let listed = |json: &str| {
            let views = vec![("w".to_string(), TensorView::new(Dtype::U8, vec![2, 34], &[0u8; 68]).unwrap())];
            let meta = std::collections::HashMap::from([(ENCODINGS_KEY.to_string(), json.to_string())]);
            safetensors::serialize_to_file(views, Some(meta), &file).unwrap();
            Checkpoint::open(&file).map(|c| c.shape("w").unwrap().to_vec()).map_err(|e| e.to_string())
        };
        assert_eq!(listed(r#"{"w": "q8_0"}"#).unwrap(), [2, 32]);
        assert!(listed(r#"{"w": "q3_x"}"#).unwrap_err().contains("unknown format \"q3_x\""));
        assert!(listed(r#"{"w": "q4_k"}"#).unwrap_err().contains("not q4_k rows"));
        assert!(listed(r#"{"v": "q8_0"}"#).unwrap_err().contains("\"v\", which the file does not hold"));
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
