//! Which characters espeak-ng treats as clause punctuation, and the clause type each one yields.
//!
//! espeak-ng decides where a clause ends (and so which punctuation piper keeps as a phoneme)
//! from espeak-specific Unicode properties in its bundled `ucd-tools`. The Debian library
//! hides those symbols, so the table below was read out of the espeak-ng 1.52 build that
//! piper-tts bundles (`ucd_properties` for every code point; `scripts/fixtures/vits_phonemes.py`
//! writes the same table into `tests/fixtures/vits/phonemes.json` and a test compares them).

// Property bits, as espeak-ng's ESPEAKNG_PROPERTY_* shifted right by 52.
const INV: u16 = 0x001; // inverted terminal punctuation (¡ ¿)
const IN_WORD: u16 = 0x002; // punctuation that may sit inside a word (Armenian)
const OPT_SPACE: u16 = 0x004; // ends a clause even without a following space
const DASH: u16 = 0x008; // extended dash (– —)
const PARA: u16 = 0x010; // paragraph separator
const ELLIPSIS: u16 = 0x020;
const SEMI: u16 = 0x040;
const COLON: u16 = 0x080;
const COMMA: u16 = 0x100;
const EXCL: u16 = 0x200;
const QUEST: u16 = 0x400;
const STOP: u16 = 0x800;

/// `(code point, property bits)` sorted by code point.
const PROPERTIES: &[(u32, u16)] = &[
    (0x0021, EXCL),
    (0x002C, COMMA),
    (0x002E, STOP),
    (0x003A, COLON),
    (0x003B, SEMI),
    (0x003F, QUEST),
    (0x00A1, EXCL | OPT_SPACE | INV),
    (0x00BF, QUEST | OPT_SPACE | INV),
    (0x037E, QUEST),
    (0x0387, SEMI),
    (0x055B, EXCL | IN_WORD),
    (0x055C, EXCL | IN_WORD),
    (0x055D, COMMA),
    (0x055E, QUEST | IN_WORD),
    (0x0589, STOP | OPT_SPACE),
    (0x060C, COMMA),
    (0x061B, SEMI),
    (0x061F, QUEST),
    (0x06D4, STOP),
    (0x0700, PARA),
    (0x0701, STOP),
    (0x0702, COMMA),
    (0x0703, EXCL),
    (0x0704, STOP),
    (0x0706, COLON),
    (0x0707, COLON),
    (0x0708, SEMI),
    (0x0709, QUEST),
    (0x07F8, COMMA),
    (0x07F9, EXCL),
    (0x0964, STOP | OPT_SPACE),
    (0x0965, PARA),
    (0x0DF4, STOP | OPT_SPACE),
    (0x0EAF, ELLIPSIS),
    (0x0F0D, STOP | OPT_SPACE),
    (0x0F0E, PARA),
    (0x0F14, COMMA),
    (0x10FB, PARA),
    (0x1362, STOP),
    (0x1363, COMMA),
    (0x1364, SEMI),
    (0x1365, COLON),
    (0x1366, COLON),
    (0x1367, QUEST),
    (0x1368, PARA),
    (0x166E, STOP),
    (0x1801, ELLIPSIS),
    (0x1802, COMMA),
    (0x1803, STOP),
    (0x1804, COLON),
    (0x1808, COMMA),
    (0x1809, STOP),
    (0x1944, EXCL),
    (0x1945, QUEST),
    (0x2013, DASH),
    (0x2014, DASH),
    (0x2026, ELLIPSIS),
    (0x2029, PARA),
    (0x203C, EXCL),
    (0x2047, QUEST),
    (0x2048, QUEST | EXCL),
    (0x2049, QUEST | EXCL),
    (0x204F, SEMI),
    (0x22EE, ELLIPSIS),
    (0x22EF, ELLIPSIS),
    (0x22F0, ELLIPSIS),
    (0x22F1, ELLIPSIS),
    (0x2488, STOP),
    (0x2489, STOP),
    (0x248A, STOP),
    (0x248B, STOP),
    (0x248C, STOP),
    (0x248D, STOP),
    (0x248E, STOP),
    (0x248F, STOP),
    (0x2490, STOP),
    (0x2491, STOP),
    (0x2492, STOP),
    (0x2493, STOP),
    (0x2494, STOP),
    (0x2495, STOP),
    (0x2496, STOP),
    (0x2497, STOP),
    (0x2498, STOP),
    (0x2499, STOP),
    (0x249A, STOP),
    (0x249B, STOP),
    (0x2753, QUEST),
    (0x2754, QUEST),
    (0x2755, EXCL),
    (0x2757, EXCL),
    (0x2762, EXCL),
    (0x2763, EXCL),
    (0x2982, COLON),
    (0x2CF9, STOP),
    (0x2CFA, QUEST),
    (0x2CFB, QUEST),
    (0x2CFE, STOP),
    (0x2E32, COMMA),
    (0x2E33, STOP),
    (0x2E34, COMMA),
    (0x2E35, SEMI),
    (0x2E3A, DASH),
    (0x2E3B, DASH),
    (0x2E3C, STOP),
    (0x2E41, COMMA),
    (0x3001, COMMA | OPT_SPACE),
    (0x3002, STOP | OPT_SPACE),
    (0xA4FE, COMMA),
    (0xA4FF, STOP),
    (0xA60D, COMMA),
    (0xA60E, STOP),
    (0xA60F, QUEST),
    (0xA6F3, STOP),
    (0xA6F4, COLON),
    (0xA6F5, COMMA),
    (0xA6F6, SEMI),
    (0xA6F7, QUEST),
    (0xFE10, COMMA),
    (0xFE11, COMMA),
    (0xFE12, STOP),
    (0xFE13, COLON),
    (0xFE14, SEMI),
    (0xFE15, EXCL),
    (0xFE16, QUEST),
    (0xFE19, ELLIPSIS),
    (0xFE31, DASH),
    (0xFE32, DASH),
    (0xFE50, COMMA),
    (0xFE51, COMMA),
    (0xFE52, STOP),
    (0xFE54, SEMI),
    (0xFE55, COLON),
    (0xFE56, QUEST),
    (0xFE57, EXCL),
    (0xFF01, EXCL | OPT_SPACE),
    (0xFF0C, COMMA | OPT_SPACE),
    (0xFF0E, STOP | OPT_SPACE),
    (0xFF1A, COLON | OPT_SPACE),
    (0xFF1B, SEMI | OPT_SPACE),
    (0xFF1F, QUEST | OPT_SPACE),
    (0xFF61, STOP),
    (0xFF64, COMMA),
    (0x11143, QUEST),
    (0x1144D, COMMA),
    (0x12471, COLON),
    (0x12472, COLON),
    (0x16AF5, STOP),
    (0x1BC9F, STOP),
    (0x1DA87, COMMA),
    (0x1DA88, STOP),
    (0x1DA89, SEMI),
    (0x1DA8A, COLON),
    (0x1E95E, EXCL),
    (0x1E95F, QUEST),
    (0x1F100, STOP),
    (0x1F101, COMMA),
    (0x1F102, COMMA),
    (0x1F103, COMMA),
    (0x1F104, COMMA),
    (0x1F105, COMMA),
    (0x1F106, COMMA),
    (0x1F107, COMMA),
    (0x1F108, COMMA),
    (0x1F109, COMMA),
    (0x1F10A, COMMA),
    (0xE0021, EXCL),
    (0xE002C, COMMA),
    (0xE002E, STOP),
    (0xE003A, COLON),
    (0xE003B, SEMI),
    (0xE003F, QUEST),
];

// Clause word layout, from espeak-ng's readclause.h: pause in 10 ms units in the low bits,
// intonation in bits 12-14, clause type in bits 16-19, flags above.
pub(crate) const INTONATION_FULL_STOP: u32 = 0x0000_0000;
pub(crate) const INTONATION_COMMA: u32 = 0x0000_1000;
pub(crate) const INTONATION_QUESTION: u32 = 0x0000_2000;
pub(crate) const INTONATION_EXCLAMATION: u32 = 0x0000_3000;
pub(crate) const INTONATION_NONE: u32 = 0x0000_4000;
pub(crate) const OPTIONAL_SPACE_AFTER: u32 = 0x0000_8000;
pub(crate) const TYPE_EOF: u32 = 0x0001_0000;
pub(crate) const TYPE_CLAUSE: u32 = 0x0004_0000;
pub(crate) const TYPE_SENTENCE: u32 = 0x0008_0000;
pub(crate) const PUNCTUATION_IN_WORD: u32 = 0x0010_0000;
pub(crate) const SPEAK_PUNCTUATION_NAME: u32 = 0x0020_0000;
pub(crate) const DOT_AFTER_LAST_WORD: u32 = 0x0040_0000;

pub(crate) const CLAUSE_NONE: u32 = INTONATION_NONE;
pub(crate) const CLAUSE_PARAGRAPH: u32 = 70 | INTONATION_FULL_STOP | TYPE_SENTENCE;
pub(crate) const CLAUSE_EOF: u32 = 40 | INTONATION_FULL_STOP | TYPE_SENTENCE | TYPE_EOF;
pub(crate) const CLAUSE_PERIOD: u32 = 40 | INTONATION_FULL_STOP | TYPE_SENTENCE;
pub(crate) const CLAUSE_COMMA: u32 = 20 | INTONATION_COMMA | TYPE_CLAUSE;
pub(crate) const CLAUSE_QUESTION: u32 = 40 | INTONATION_QUESTION | TYPE_SENTENCE;
pub(crate) const CLAUSE_EXCLAMATION: u32 = 45 | INTONATION_EXCLAMATION | TYPE_SENTENCE;
pub(crate) const CLAUSE_COLON: u32 = 30 | INTONATION_FULL_STOP | TYPE_CLAUSE;
pub(crate) const CLAUSE_SEMICOLON: u32 = 30 | INTONATION_COMMA | TYPE_CLAUSE;

/// espeak-ng's property bits for `c` (0 for ordinary characters).
fn properties(c: char) -> u16 {
    PROPERTIES.binary_search_by_key(&(c as u32), |&(cp, _)| cp).map_or(0, |i| PROPERTIES[i].1)
}

/// The clause word espeak-ng's `clause_type_from_codepoint` gives `c`: [`CLAUSE_NONE`] for a
/// character that cannot end a clause. Property combinations espeak does not list (such as
/// `⁈`, both question and exclamation) end nothing, exactly as there.
pub(crate) fn clause_type(c: char) -> u32 {
    let p = properties(c);
    if p == STOP {
        CLAUSE_PERIOD
    } else if p == STOP | OPT_SPACE {
        CLAUSE_PERIOD | OPTIONAL_SPACE_AFTER
    } else if p == QUEST {
        CLAUSE_QUESTION
    } else if p == QUEST | OPT_SPACE {
        CLAUSE_QUESTION | OPTIONAL_SPACE_AFTER
    } else if p == QUEST | IN_WORD {
        CLAUSE_QUESTION | PUNCTUATION_IN_WORD
    } else if p == EXCL {
        CLAUSE_EXCLAMATION
    } else if p == EXCL | OPT_SPACE {
        CLAUSE_EXCLAMATION | OPTIONAL_SPACE_AFTER
    } else if p == EXCL | IN_WORD {
        CLAUSE_EXCLAMATION | PUNCTUATION_IN_WORD
    } else if p == COMMA {
        CLAUSE_COMMA
    } else if p == COMMA | OPT_SPACE {
        CLAUSE_COMMA | OPTIONAL_SPACE_AFTER
    } else if p == COLON {
        CLAUSE_COLON
    } else if p == COLON | OPT_SPACE {
        CLAUSE_COLON | OPTIONAL_SPACE_AFTER
    } else if p == SEMI || p == DASH {
        CLAUSE_SEMICOLON
    } else if p == SEMI | OPT_SPACE || p == QUEST | OPT_SPACE | INV || p == EXCL | OPT_SPACE | INV {
        CLAUSE_SEMICOLON | OPTIONAL_SPACE_AFTER
    } else if p == ELLIPSIS {
        CLAUSE_SEMICOLON | SPEAK_PUNCTUATION_NAME | OPTIONAL_SPACE_AFTER
    } else if p == PARA {
        CLAUSE_PARAGRAPH
    } else {
        CLAUSE_NONE
    }
}

/// Every code point with espeak-specific properties, for the fixture comparison test.
#[cfg(test)]
pub(crate) fn table() -> &'static [(u32, u16)] {
    PROPERTIES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_punctuation_maps_to_its_clause() {
        assert_eq!(clause_type('.'), CLAUSE_PERIOD);
        assert_eq!(clause_type('?'), CLAUSE_QUESTION);
        assert_eq!(clause_type('!'), CLAUSE_EXCLAMATION);
        assert_eq!(clause_type(','), CLAUSE_COMMA);
        assert_eq!(clause_type(':'), CLAUSE_COLON);
        assert_eq!(clause_type(';'), CLAUSE_SEMICOLON);
        assert_eq!(clause_type('—'), CLAUSE_SEMICOLON);
        assert_eq!(clause_type('a'), CLAUSE_NONE);
        assert_eq!(clause_type('-'), CLAUSE_NONE);
    }

    #[test]
    fn table_is_sorted_for_binary_search() {
        assert!(PROPERTIES.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn combinations_espeak_does_not_list_end_nothing() {
        assert_eq!(clause_type('⁈'), CLAUSE_NONE);
        assert_eq!(clause_type('。'), CLAUSE_PERIOD | OPTIONAL_SPACE_AFTER);
        assert_eq!(clause_type('¿'), CLAUSE_SEMICOLON | OPTIONAL_SPACE_AFTER);
        assert_eq!(clause_type('…'), CLAUSE_SEMICOLON | SPEAK_PUNCTUATION_NAME | OPTIONAL_SPACE_AFTER);
    }
}
