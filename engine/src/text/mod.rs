//! Text to phonemes to phoneme ids, exactly as piper-tts does it for espeak voices.
//!
//! ```no_run
//! use std::collections::HashMap;
//! use spiral_engine::text::{PhonemeIdMap, Phonemizer};
//!
//! # fn main() -> Result<(), spiral_engine::text::TextError> {
//! let phonemizer = Phonemizer::new("en-us")?;
//! let sentences = phonemizer.phonemize("Hello, world! How are you?")?;
//! assert_eq!(sentences.len(), 2);
//! # let map: HashMap<String, Vec<i64>> = HashMap::new(); // the voice's phoneme_id_map
//! let ids = PhonemeIdMap::new(map)?;
//! for sentence in &sentences {
//!     let (ids, dropped) = ids.ids(sentence);
//!     if !dropped.is_empty() {
//!         eprintln!("warning: the voice has no id for {dropped:?}");
//!     }
//!     # let _ = ids;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! [`Phonemizer`] drives the system's libespeak-ng (see `docs/PHONEMES.md` for how its output
//! compares with the espeak-ng build piper-tts bundles); [`PhonemeIdMap`] maps the result.

mod clause;
mod espeak;
mod phoneme_ids;
mod punctuation;
mod sentence;

use std::ops::ControlFlow;

pub use clause::{ClauseEnd, Terminator};
pub use phoneme_ids::{PhonemeIdMap, BOS, EOS, PAD, PAUSES};
pub use sentence::MAX_SENTENCE;

use sentence::{raw_block_phonemes, split_raw_blocks, ClauseGrouper, Piece, SentenceSink};

/// Why text could not be turned into phonemes or ids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    /// libespeak-ng could not be loaded.
    #[error(
        "could not load the espeak-ng library (tried {tried}): {reason}. Install espeak-ng \
         (Debian/Ubuntu: `apt-get install espeak-ng`, or run scripts/setup.sh), or set \
         SPIRAL_ESPEAK_LIB to the path of libespeak-ng"
    )]
    EspeakLibrary {
        /// The library names or symbol that were tried.
        tried: String,
        /// What the loader said.
        reason: String,
    },
    /// libespeak-ng loaded but its data files did not.
    #[error(
        "espeak-ng could not load its data from {data_path}: {reason}. Install espeak-ng-data \
         (`apt-get install espeak-ng`), or set ESPEAK_DATA_PATH to the directory that contains \
         espeak-ng-data"
    )]
    EspeakData {
        /// The data directory espeak-ng looked in.
        data_path: String,
        /// espeak-ng's message.
        reason: String,
    },
    /// The espeak voice named by the voice config does not exist.
    #[error(
        "espeak-ng has no voice named {voice:?}: {reason}. Check `espeak.voice` in the voice's \
         .onnx.json; `espeak-ng --voices` lists the installed ones"
    )]
    UnknownVoice {
        /// The voice name asked for.
        voice: String,
        /// espeak-ng's message.
        reason: String,
    },
    /// The library misbehaved while phonemizing.
    #[error("espeak-ng failed while phonemizing: {reason}")]
    EspeakFailed {
        /// What went wrong.
        reason: String,
    },
    /// The voice's phoneme_id_map lacks one of `^ $ _`.
    #[error(
        "the voice's phoneme_id_map has no entry for {symbol:?}, which every sentence needs \
         (BOS '^', EOS '$', pad '_'); the .onnx.json is not a piper voice config or is damaged"
    )]
    MissingSpecialSymbol {
        /// The missing symbol.
        symbol: char,
    },
}

/// Turns text into sentences of phonemes through espeak-ng, the way piper-tts does.
///
/// espeak-ng is process-wide: all phonemizers share one library instance behind a lock, and
/// each call selects its own voice.
#[derive(Debug, Clone)]
pub struct Phonemizer {
    voice: String,
}

impl Phonemizer {
    /// A phonemizer for an espeak voice name such as `en-us` (a piper voice config's
    /// `espeak.voice`). Loads and initialises espeak-ng on first use; a missing library, missing
    /// data or an unknown voice is an error that says what to install or fix.
    pub fn new(espeak_voice: &str) -> Result<Self, TextError> {
        espeak::lock()?.select_voice(espeak_voice)?;
        Ok(Phonemizer { voice: espeak_voice.to_string() })
    }

    /// The espeak voice name.
    pub fn voice(&self) -> &str {
        &self.voice
    }

    /// The loaded libespeak-ng's version string.
    pub fn espeak_version(&self) -> Result<String, TextError> {
        Ok(espeak::lock()?.version().to_string())
    }

    /// Every sentence of `text` as phoneme symbols (one `char` each, NFD-decomposed, with the
    /// clause punctuation and word spaces piper keeps). Empty text gives no sentences.
    pub fn phonemize(&self, text: &str) -> Result<Vec<Vec<char>>, TextError> {
        let mut sentences = Vec::new();
        self.for_each_sentence(text, |sentence| {
            sentences.push(sentence);
            ControlFlow::Continue(())
        })?;
        Ok(sentences)
    }

    /// Hands each sentence of `text` to `each` as soon as it is complete, so the first one of a
    /// long text can be synthesized while the rest is still being read; `each` returns
    /// `ControlFlow::Break` to stop early. espeak-ng stays locked until this returns.
    pub fn for_each_sentence(
        &self,
        text: &str,
        each: impl FnMut(Vec<char>) -> ControlFlow<()>,
    ) -> Result<(), TextError> {
        self.read(text, each, false).map(|_| ())
    }

    /// Reads `text` only up to its first sentence end that more text follows, hands on the
    /// sentences read, and returns where the rest begins: calling it again on that rest
    /// gives what one reading of the whole text would, so a text of any length is read a
    /// sentence at a time (espeak-ng takes about 3 ms a kilobyte). `None`: all was read.
    /// A text with raw `[[ phoneme ]]` blocks is read whole, since a block may join the
    /// sentence before it.
    pub fn next_sentences(&self, text: &str, mut each: impl FnMut(Vec<char>)) -> Result<Option<usize>, TextError> {
        self.read(
            text,
            |s| {
                each(s);
                ControlFlow::Continue(())
            },
            true,
        )
    }

    /// The reading behind both: with `one_sentence`, it stops after the first clause that
    /// ends a sentence with more text after it, and returns where the next clause begins.
    fn read(
        &self,
        text: &str,
        each: impl FnMut(Vec<char>) -> ControlFlow<()>,
        one_sentence: bool,
    ) -> Result<Option<usize>, TextError> {
        let mut espeak = espeak::lock()?;
        espeak.select_voice(&self.voice)?;
        let mut sink = SentenceSink::new(each);
        let pieces = split_raw_blocks(text);
        let one_sentence = one_sentence && pieces.len() == 1;
        let mut after_raw_block = false;
        let mut rest = None;
        for (i, piece) in pieces.iter().enumerate() {
            match *piece {
                Piece::Raw(block) => {
                    // Raw phonemes go in as written, with the spaces that border them in the text.
                    if i > 0 && piece_text(pieces[i - 1]).ends_with(' ') {
                        sink.extend_last([' ']);
                    }
                    sink.extend_last(raw_block_phonemes(block));
                    if pieces.get(i + 1).is_some_and(|next| piece_text(*next).starts_with(' ')) {
                        sink.extend_last([' ']);
                    }
                    after_raw_block = true;
                }
                Piece::Text(part) => {
                    let mut grouper = ClauseGrouper::new(after_raw_block);
                    espeak.clauses(part, |clause| {
                        grouper.clause(&clause.phonemes, clause.ended, &mut sink);
                        // With one piece, `part` is `text`.
                        let next = clause.next.filter(|&n| n > 0 && !part[n..].trim().is_empty());
                        if one_sentence && clause.ended.end_of_sentence && next.is_some() {
                            rest = next;
                            return false;
                        }
                        !sink.stopped()
                    })?;
                    grouper.finish(&mut sink);
                    after_raw_block = false;
                }
            }
            if sink.stopped() {
                return Ok(None);
            }
        }
        sink.finish();
        Ok(rest)
    }
}

fn piece_text(piece: Piece<'_>) -> &str {
    match piece {
        Piece::Text(text) | Piece::Raw(text) => text,
    }
}

#[cfg(test)]
mod tests;
