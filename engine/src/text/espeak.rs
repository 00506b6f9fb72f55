//! The system's libespeak-ng, loaded at run time and used by one thread at a time.
//!
//! espeak-ng keeps its state in globals (the selected voice, the clause reader's look-ahead),
//! so the library is initialised once per process and every call goes through one mutex.
//! It is opened with `dlopen` rather than linked: spiral builds and runs its other sources on a
//! machine without espeak-ng, and a missing library becomes an error that says what to install.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::{Mutex, MutexGuard, OnceLock};

use libloading::Library;

use super::clause::{ClauseEnd, ClauseReader};
use super::TextError;

/// `espeak_ng_OUTPUT_MODE::ENOUTPUT_MODE_SYNCHRONOUS`: no audio device is opened.
const OUTPUT_SYNCHRONOUS: c_int = 0x0001;
/// `espeakCHARS_AUTO`: UTF-8 (our text is always valid UTF-8).
const CHARS_AUTO: c_int = 0;
/// `espeakPHONEMES_IPA`: phonemes as IPA characters, as piper asks for them.
const PHONEMES_IPA: c_int = 0x02;
/// `ENS_OK`.
const STATUS_OK: u32 = 0;

/// Library file names tried in order; `SPIRAL_ESPEAK_LIB` names one explicitly.
const LIBRARY_NAMES: &[&str] = &[
    "libespeak-ng.so.1",
    "libespeak-ng.so",
    "libespeak-ng.1.dylib",
    "libespeak-ng.dylib",
    "libespeak-ng.dll",
    "espeak-ng.dll",
];

type InitializePathFn = unsafe extern "C" fn(path: *const c_char);
type InitializeFn = unsafe extern "C" fn(context: *mut *mut c_void) -> u32;
type InitializeOutputFn = unsafe extern "C" fn(mode: c_int, buffer_length: c_int, device: *const c_char) -> u32;
type SetVoiceByNameFn = unsafe extern "C" fn(name: *const c_char) -> u32;
type StatusMessageFn = unsafe extern "C" fn(status: u32, buffer: *mut c_char, length: usize);
type ClearErrorContextFn = unsafe extern "C" fn(context: *mut *mut c_void);
type TextToPhonemesFn =
    unsafe extern "C" fn(text: *mut *const c_void, text_mode: c_int, phoneme_mode: c_int) -> *const c_char;
type InfoFn = unsafe extern "C" fn(data_path: *mut *const c_char) -> *const c_char;

/// The entry points spiral uses, resolved once.
struct Api {
    set_voice_by_name: SetVoiceByNameFn,
    status_message: StatusMessageFn,
    text_to_phonemes: TextToPhonemesFn,
}

/// One clause as the library produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Clause {
    /// IPA phonemes, words separated by spaces, language-switch flags still in.
    pub phonemes: String,
    /// How the clause ended (replayed by [`ClauseReader`]).
    pub ended: ClauseEnd,
    /// Byte offset where the library's text pointer stopped (`None`: end of text).
    pub end: Option<usize>,
    /// Where the replay stopped; differs from `end` only if the replay disagrees with the library.
    pub replayed_end: Option<usize>,
    /// Where the next clause's characters begin, its look-ahead included (see
    /// [`ClauseReader::next_clause_start`]): a stop here and a fresh reading from this offset
    /// go on as this reading would. `None` at the end, or where the replay disagreed.
    pub next: Option<usize>,
}

/// The process-wide espeak-ng instance.
pub(crate) struct Espeak {
    api: Api,
    /// Keeps the shared object mapped for as long as the function pointers live.
    _library: Library,
    /// Library version and data directory, for error messages and docs.
    version: String,
    data_path: String,
    /// The voice currently selected in the library.
    voice: Option<CString>,
    /// The look-ahead character espeak's clause reader carries into the next text.
    carried: char,
}

static ESPEAK: OnceLock<Result<Mutex<Espeak>, TextError>> = OnceLock::new();

/// The initialised library, locked for the caller; the first call loads and initialises it.
pub(crate) fn lock() -> Result<MutexGuard<'static, Espeak>, TextError> {
    let espeak = ESPEAK.get_or_init(|| Espeak::load().map(Mutex::new));
    match espeak {
        // A panic while holding the lock leaves espeak itself consistent: each call is whole.
        Ok(mutex) => Ok(mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())),
        Err(error) => Err(error.clone()),
    }
}

impl Espeak {
    fn load() -> Result<Espeak, TextError> {
        let explicit = std::env::var("SPIRAL_ESPEAK_LIB").ok();
        let names: Vec<&str> = match &explicit {
            Some(name) => vec![name.as_str()],
            None => LIBRARY_NAMES.to_vec(),
        };
        let mut reasons = Vec::new();
        let mut library = None;
        for name in &names {
            // SAFETY: loading libespeak-ng runs no initialisers with preconditions of ours.
            match unsafe { Library::new(name) } {
                Ok(lib) => {
                    library = Some(lib);
                    break;
                }
                Err(error) => reasons.push(format!("{name}: {error}")),
            }
        }
        let library =
            library.ok_or_else(|| TextError::EspeakLibrary { tried: names.join(", "), reason: reasons.join("; ") })?;

        // SAFETY: the signatures match espeak-ng's speak_lib.h / espeak_ng.h (1.49 and later);
        // the pointers are only used while `library` is alive (it is stored beside them).
        let (api, version, data_path) = unsafe {
            let initialize_path: InitializePathFn = symbol(&library, b"espeak_ng_InitializePath\0")?;
            let initialize: InitializeFn = symbol(&library, b"espeak_ng_Initialize\0")?;
            let initialize_output: InitializeOutputFn = symbol(&library, b"espeak_ng_InitializeOutput\0")?;
            let clear_context: ClearErrorContextFn = symbol(&library, b"espeak_ng_ClearErrorContext\0")?;
            let info: InfoFn = symbol(&library, b"espeak_Info\0")?;
            let api = Api {
                set_voice_by_name: symbol(&library, b"espeak_ng_SetVoiceByName\0")?,
                status_message: symbol(&library, b"espeak_ng_GetStatusCodeMessage\0")?,
                text_to_phonemes: symbol(&library, b"espeak_TextToPhonemes\0")?,
            };

            // NULL: espeak looks at ESPEAK_DATA_PATH, then its compiled-in directory.
            initialize_path(std::ptr::null());
            let mut data_path: *const c_char = std::ptr::null();
            let version = cstr_lossy(info(&mut data_path));
            let data_path = cstr_lossy(data_path);
            let mut context: *mut c_void = std::ptr::null_mut();
            let status = initialize(&mut context);
            clear_context(&mut context);
            if status != STATUS_OK {
                return Err(TextError::EspeakData { data_path, reason: status_text(api.status_message, status) });
            }
            let status = initialize_output(OUTPUT_SYNCHRONOUS, 0, std::ptr::null());
            if status != STATUS_OK {
                return Err(TextError::EspeakData { data_path, reason: status_text(api.status_message, status) });
            }
            (api, version, data_path)
        };
        Ok(Espeak { api, _library: library, version, data_path, voice: None, carried: '\0' })
    }

    /// The library's version string, e.g. `1.51`.
    pub(crate) fn version(&self) -> &str {
        &self.version
    }

    /// Selects `voice` unless it already is; an unknown name is an error naming it.
    pub(crate) fn select_voice(&mut self, voice: &str) -> Result<(), TextError> {
        if self.voice.as_deref().and_then(|v| v.to_str().ok()) == Some(voice) {
            return Ok(());
        }
        let name = CString::new(voice).map_err(|_| TextError::UnknownVoice {
            voice: voice.escape_debug().to_string(),
            reason: "the name contains a NUL character".into(),
        })?;
        // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
        let status = unsafe { (self.api.set_voice_by_name)(name.as_ptr()) };
        if status != STATUS_OK {
            self.voice = None;
            return Err(TextError::UnknownVoice {
                voice: voice.to_string(),
                reason: format!(
                    "{} (espeak-ng {} with data at {})",
                    status_text(self.api.status_message, status),
                    self.version,
                    self.data_path
                ),
            });
        }
        self.voice = Some(name);
        Ok(())
    }

    /// Phonemizes `text` clause by clause with the selected voice, handing each clause to
    /// `each`; `each` returns `false` to stop early. NULs and espeak's embedded-command
    /// character (U+0001) are read as spaces: the C string would end at a NUL, and U+0001
    /// followed by a letter would change espeak's global settings for every later text.
    pub(crate) fn clauses(&mut self, text: &str, mut each: impl FnMut(Clause) -> bool) -> Result<(), TextError> {
        let cleaned: String = text.chars().map(|c| if c == '\0' || c == '\u{1}' { ' ' } else { c }).collect();
        let c_text = CString::new(cleaned.as_str())
            .map_err(|_| TextError::EspeakFailed { reason: "a NUL survived cleaning".into() })?;
        let base = c_text.as_ptr() as usize;
        let mut reader = ClauseReader::new(&cleaned, self.carried);
        let mut pointer: *const c_void = c_text.as_ptr().cast();
        let mut stalled = false;
        while !pointer.is_null() {
            let before = pointer;
            // SAFETY: `pointer` points into `c_text` (NUL-terminated, alive for the loop); espeak
            // advances it within the string or sets it to NULL, and returns a string it owns.
            let phonemes = unsafe {
                let out = (self.api.text_to_phonemes)(&mut pointer, CHARS_AUTO, PHONEMES_IPA);
                cstr_lossy(out)
            };
            let end = (!pointer.is_null()).then(|| (pointer as usize).wrapping_sub(base));
            if end.is_some_and(|offset| offset > cleaned.len()) {
                // Never expected: a pointer outside the text means the library misbehaves.
                self.carried = '\0';
                return Err(TextError::EspeakFailed {
                    reason: "espeak_TextToPhonemes moved the text pointer outside the text".into(),
                });
            }
            // A clause may start from the carried look-ahead alone and not advance; two in a
            // row would loop forever.
            if pointer == before {
                if stalled {
                    self.carried = '\0';
                    return Err(TextError::EspeakFailed {
                        reason: "espeak_TextToPhonemes stopped advancing through the text".into(),
                    });
                }
                stalled = true;
            } else {
                stalled = false;
            }
            let replay = reader.read_clause();
            let next = if replay.end == end { reader.next_clause_start() } else { None };
            if replay.end != end {
                reader.resync(end);
            }
            let clause = Clause { phonemes, ended: replay.ended, end, replayed_end: replay.end, next };
            if !each(clause) && !pointer.is_null() {
                self.flush();
                return Ok(());
            }
        }
        self.carried = reader.carried();
        Ok(())
    }

    /// Empties espeak's look-ahead after stopping mid-text, so the next text starts clean: a
    /// one-space text makes the reader consume the pending character and end at end of input.
    fn flush(&mut self) {
        let mut pointer: *const c_void = c" ".as_ptr().cast();
        while !pointer.is_null() {
            // SAFETY: as in `clauses`; the literal is NUL-terminated and static.
            unsafe { (self.api.text_to_phonemes)(&mut pointer, CHARS_AUTO, PHONEMES_IPA) };
        }
        self.carried = '\0';
    }
}

/// Resolves one function from the library.
///
/// # Safety
/// `T` must be the function's true signature.
unsafe fn symbol<T: Copy>(library: &Library, name: &[u8]) -> Result<T, TextError> {
    // SAFETY: forwarded to the caller.
    unsafe { library.get::<T>(name) }.map(|s| *s).map_err(|error| TextError::EspeakLibrary {
        tried: String::from_utf8_lossy(&name[..name.len() - 1]).into_owned(),
        reason: format!("the loaded espeak-ng lacks this function ({error}); it is too old"),
    })
}

/// An owned copy of a C string; NULL reads as empty.
///
/// # Safety
/// `ptr` is NULL or a valid NUL-terminated string.
unsafe fn cstr_lossy(ptr: *const c_char) -> String {
    if ptr.is_null() {
        return String::new();
    }
    // SAFETY: forwarded to the caller.
    unsafe { CStr::from_ptr(ptr) }.to_string_lossy().into_owned()
}

/// espeak-ng's own description of a status code.
fn status_text(message: StatusMessageFn, status: u32) -> String {
    let mut buffer = [0 as c_char; 512];
    // SAFETY: espeak writes at most `len` bytes including the NUL.
    unsafe {
        message(status, buffer.as_mut_ptr(), buffer.len());
        cstr_lossy(buffer.as_ptr())
    }
}
