//! Phonemes to the integer ids a Piper/VITS voice was trained on.
//!
//! piper's `phonemes_to_ids`: BOS `^`, then every phoneme's ids each followed by the pad `_`,
//! then EOS `$`. A phoneme missing from the map is dropped (piper logs a warning); here it is
//! returned to the caller, who decides how to report it.

use std::collections::HashMap;

use super::TextError;

/// Beginning of sentence.
pub const BOS: char = '^';
/// End of sentence.
pub const EOS: char = '$';
/// Padding placed after every phoneme.
pub const PAD: char = '_';

/// Symbols after which speech pauses: the sentence boundaries and punctuation.
pub const PAUSES: [char; 9] = [BOS, EOS, '.', ',', ';', ':', '!', '?', '\u{2026}'];

/// A voice's `phoneme_id_map`: each phoneme symbol to the ids it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhonemeIdMap {
    ids: HashMap<char, Vec<i64>>,
    bos: Vec<i64>,
    eos: Vec<i64>,
    pad: Vec<i64>,
}

impl PhonemeIdMap {
    /// Builds the map from a voice config's `phoneme_id_map`.
    ///
    /// The map must name `^`, `$` and `_`. Keys longer than one character (piper's merged vowel
    /// clusters, which espeak voices such as en_US-joe-medium do not use) are not looked up,
    /// because [`crate::text::Phonemizer`] yields single characters.
    pub fn new(map: HashMap<String, Vec<i64>>) -> Result<Self, TextError> {
        let mut ids = HashMap::with_capacity(map.len());
        for (symbol, symbol_ids) in map {
            let mut chars = symbol.chars();
            if let (Some(c), None) = (chars.next(), chars.next()) {
                ids.insert(c, symbol_ids);
            }
        }
        let special = |symbol: char| ids.get(&symbol).cloned().ok_or(TextError::MissingSpecialSymbol { symbol });
        let (bos, eos, pad) = (special(BOS)?, special(EOS)?, special(PAD)?);
        Ok(PhonemeIdMap { ids, bos, eos, pad })
    }

    /// The ids of one symbol, if the map has it.
    pub fn get(&self, symbol: char) -> Option<&[i64]> {
        self.ids.get(&symbol).map(Vec::as_slice)
    }

    /// Whether `id` stands for a pause ([`PAUSES`]); the pad after a symbol is a pause when
    /// the symbol is, so a caller walking a sentence passes what the previous symbol was.
    pub fn is_pause(&self, id: i64, after_pause: bool) -> bool {
        if self.pad.contains(&id) {
            return after_pause;
        }
        PAUSES.iter().any(|&p| self.ids.get(&p).is_some_and(|ids| ids.contains(&id)))
    }

    /// The ids of one sentence's phonemes, framed as piper frames them, and the phonemes that
    /// were dropped because the map lacks them (in order, repeats kept).
    pub fn ids(&self, phonemes: &[char]) -> (Vec<i64>, Vec<char>) {
        let mut out = Vec::with_capacity(phonemes.len() * 2 + self.bos.len() + self.pad.len() + self.eos.len());
        let mut dropped = Vec::new();
        out.extend_from_slice(&self.bos);
        out.extend_from_slice(&self.pad);
        for &phoneme in phonemes {
            match self.ids.get(&phoneme) {
                Some(ids) => {
                    out.extend_from_slice(ids);
                    out.extend_from_slice(&self.pad);
                }
                None => dropped.push(phoneme),
            }
        }
        out.extend_from_slice(&self.eos);
        (out, dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[(&str, &[i64])]) -> HashMap<String, Vec<i64>> {
        entries.iter().map(|(k, v)| (k.to_string(), v.to_vec())).collect()
    }

    #[test]
    fn ids_are_framed_and_padded_like_piper() {
        let ids =
            PhonemeIdMap::new(map(&[("_", &[0]), ("^", &[1]), ("$", &[2]), ("a", &[14]), ("b", &[15, 16])])).unwrap();
        assert_eq!(ids.ids(&['a', 'b']), (vec![1, 0, 14, 0, 15, 16, 0, 2], vec![]));
        assert_eq!(ids.ids(&[]), (vec![1, 0, 2], vec![]));
    }

    #[test]
    fn pauses_are_punctuation_and_boundaries_and_the_pads_after_them() {
        let ids = PhonemeIdMap::new(map(&[("_", &[0]), ("^", &[1]), ("$", &[2]), (",", &[8]), ("a", &[14])])).unwrap();
        assert!(ids.is_pause(1, false) && ids.is_pause(8, false) && ids.is_pause(2, false));
        assert!(!ids.is_pause(14, true));
        assert!(ids.is_pause(0, true) && !ids.is_pause(0, false));
    }

    #[test]
    fn unknown_phonemes_are_dropped_and_reported() {
        let ids = PhonemeIdMap::new(map(&[("_", &[0]), ("^", &[1]), ("$", &[2]), ("a", &[14])])).unwrap();
        assert_eq!(ids.ids(&['a', 'x', 'a', 'x']), (vec![1, 0, 14, 0, 14, 0, 2], vec!['x', 'x']));
    }

    #[test]
    fn a_map_without_the_special_symbols_is_a_clear_error() {
        let error = PhonemeIdMap::new(map(&[("_", &[0]), ("^", &[1])])).unwrap_err();
        assert!(error.to_string().contains("'$'"), "{error}");
    }
}
