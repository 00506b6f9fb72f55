//! espeak-ng's clause reader, replayed in Rust to learn how each clause ended.
//!
//! piper keeps the punctuation that ends a clause (`, . ? ! : ;`) as a phoneme and starts a
//! new sentence after `. ? !`. It learns both from `espeak_TextToPhonemesWithTerminator`, which
//! Debian's libespeak-ng 1.51 does not have: its `espeak_TextToPhonemes` says only how far into
//! the text each clause reached. [`ClauseReader`] walks the text exactly as espeak-ng's
//! `ReadClause` does (default options: no SSML, no spoken punctuation), one character of
//! look-ahead included, and returns the clause word espeak would have reported. The caller
//! checks that it stopped where the library stopped, so a disagreement is seen, never guessed.

use super::punctuation::{
    clause_type, CLAUSE_COLON, CLAUSE_COMMA, CLAUSE_EOF, CLAUSE_EXCLAMATION, CLAUSE_NONE, CLAUSE_PARAGRAPH,
    CLAUSE_PERIOD, CLAUSE_QUESTION, CLAUSE_SEMICOLON, DOT_AFTER_LAST_WORD, OPTIONAL_SPACE_AFTER, PUNCTUATION_IN_WORD,
    TYPE_SENTENCE,
};

/// espeak-ng's clause buffer (`N_TR_SOURCE`): a clause longer than this is cut.
const CLAUSE_BUFFER: usize = 800;

/// The punctuation that ended a clause, as piper keeps it in the phoneme string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Terminator {
    /// `.`
    Period,
    /// `?`
    Question,
    /// `!`
    Exclamation,
    /// `,`
    Comma,
    /// `:`
    Colon,
    /// `;` (also an em/en dash between spaces)
    Semicolon,
    /// Nothing is kept: end of text, a paragraph break, an ellipsis, or a cut long clause.
    None,
}

impl Terminator {
    /// The phoneme piper appends for this terminator, if any.
    pub fn symbol(self) -> Option<char> {
        match self {
            Terminator::Period => Some('.'),
            Terminator::Question => Some('?'),
            Terminator::Exclamation => Some('!'),
            Terminator::Comma => Some(','),
            Terminator::Colon => Some(':'),
            Terminator::Semicolon => Some(';'),
            Terminator::None => None,
        }
    }

    /// Whether piper follows the symbol with a space because the sentence goes on.
    pub fn continues_sentence(self) -> bool {
        matches!(self, Terminator::Comma | Terminator::Colon | Terminator::Semicolon)
    }
}

/// How one clause ended: what piper keeps, and whether a new sentence starts after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClauseEnd {
    /// The punctuation kept as a phoneme.
    pub terminator: Terminator,
    /// True after `. ? !`, a paragraph break and the end of the text.
    pub end_of_sentence: bool,
}

impl ClauseEnd {
    /// Decodes espeak's clause word the way piper's `espeakbridge` does: the low 20 bits must
    /// equal one of six exact clause words, so pause variants (paragraphs, `?` before a blank
    /// line) and the end of the text keep no symbol.
    pub(crate) fn from_clause_word(word: u32) -> ClauseEnd {
        let word = word & 0x000F_FFFF;
        let terminator = match word {
            CLAUSE_PERIOD => Terminator::Period,
            CLAUSE_QUESTION => Terminator::Question,
            CLAUSE_EXCLAMATION => Terminator::Exclamation,
            CLAUSE_COMMA => Terminator::Comma,
            CLAUSE_COLON => Terminator::Colon,
            CLAUSE_SEMICOLON => Terminator::Semicolon,
            _ => Terminator::None,
        };
        ClauseEnd { terminator, end_of_sentence: word & TYPE_SENTENCE == TYPE_SENTENCE }
    }
}

/// Where a clause ended in the text (as the library's text pointer reports it) and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReadClause {
    /// Byte offset the text pointer stops at, `None` once the whole text was read.
    pub end: Option<usize>,
    /// How the clause ended.
    pub ended: ClauseEnd,
}

/// A replay of espeak-ng's text decoder and `ReadClause` over one text.
///
/// The decoder yields the text's characters, then the terminating NUL, then reports end of
/// input; espeak keeps one character of look-ahead (`ungot_char`) in a static that survives
/// from one call to the next, and from one text to the next, so the reader carries it too.
pub(crate) struct ClauseReader<'t> {
    text: &'t str,
    /// Byte offset of the next character the decoder hands out; `text.len()` is the NUL and
    /// `text.len() + 1` means end of input.
    pos: usize,
    /// espeak's pushed-back character; `'\0'` means none.
    ungot: char,
}

impl<'t> ClauseReader<'t> {
    /// A reader over `text` whose look-ahead holds `carried` (the character a previous text
    /// left in espeak's static, `'\0'` for none).
    pub(crate) fn new(text: &'t str, carried: char) -> Self {
        ClauseReader { text, pos: 0, ungot: carried }
    }

    /// The character espeak's static look-ahead holds now (`'\0'` for none).
    pub(crate) fn carried(&self) -> char {
        self.ungot
    }

    /// Where the next clause's characters begin in the text, look-ahead included: a reading
    /// started there with nothing carried sees the same characters as this one going on.
    /// `None` at the end of the input, or while the look-ahead is not the text's character
    /// before the position (carried in from a previous text).
    pub(crate) fn next_clause_start(&self) -> Option<usize> {
        let pos = self.pointer()?;
        if self.ungot == '\0' {
            return Some(pos);
        }
        let before = self.text[..pos].chars().next_back()?;
        (before == self.ungot).then(|| pos - before.len_utf8())
    }

    /// Puts the reader where the library's text pointer is, after a disagreement: every clause
    /// espeak cuts short pushes back the last character it read, so that is the look-ahead.
    pub(crate) fn resync(&mut self, end: Option<usize>) {
        match end {
            None => {
                self.pos = self.text.len() + 1;
                self.ungot = '\0';
            }
            Some(offset) => {
                let mut pos = offset.min(self.text.len());
                while !self.text.is_char_boundary(pos) {
                    pos -= 1;
                }
                self.pos = pos;
                self.ungot = self.text[..pos].chars().next_back().unwrap_or('\0');
            }
        }
    }

    fn getc(&mut self) -> char {
        if self.ungot != '\0' {
            return std::mem::replace(&mut self.ungot, '\0');
        }
        match self.text.get(self.pos..).and_then(|rest| rest.chars().next()) {
            Some(c) => {
                self.pos += c.len_utf8();
                c
            }
            None => {
                // The NUL terminator is a character too; reading past it yields NUL again.
                self.pos = (self.pos + 1).min(self.text.len() + 1);
                '\0'
            }
        }
    }

    fn unget(&mut self, c: char) {
        self.ungot = c;
    }

    /// The decoder's next character without consuming it (the look-ahead is not consulted).
    fn peek(&self) -> char {
        self.text.get(self.pos..).and_then(|rest| rest.chars().next()).unwrap_or('\0')
    }

    fn eof(&self) -> bool {
        self.ungot == '\0' && self.pos > self.text.len()
    }

    /// The text pointer espeak hands back: `None` at end of input.
    fn pointer(&self) -> Option<usize> {
        (self.pos <= self.text.len()).then_some(self.pos)
    }

    /// Reads one clause the way espeak-ng does and reports where it stopped and how it ended.
    pub(crate) fn read_clause(&mut self) -> ReadClause {
        let word = self.clause_word();
        ReadClause { end: self.pointer(), ended: ClauseEnd::from_clause_word(word) }
    }

    /// `ReadClause` from espeak-ng's readclause.c, reduced to what decides the clause end.
    fn clause_word(&mut self) -> u32 {
        let mut c1;
        let mut any_alnum = false;
        let mut buffered = 0usize;
        let mut c2 = self.getc();
        while !self.eof() {
            c1 = c2;
            c2 = self.getc();
            if self.eof() {
                c2 = ' ';
            }
            // espeak's default `chars_ignore`: soft hyphen and zero-width (non-)joiners.
            if matches!(c1, '\u{ad}' | '\u{200c}' | '\u{200d}') {
                continue;
            }
            if is_alnum(c1) {
                any_alnum = true;
            } else if c1 == '\u{f0b}' {
                c1 = ' ';
            }
            if c1 == '\n' {
                let mut blank_lines = 0u32;
                while !self.eof() && is_space(c2) {
                    if c2 == '\n' {
                        blank_lines += 1;
                    }
                    c2 = self.getc();
                }
                if blank_lines > 0 {
                    self.unget(c2);
                    return CLAUSE_PARAGRAPH - 30 + 30 * blank_lines.min(3);
                }
            }

            let mut is_end_clause = false;
            if c1 == '.' && c2 == '.' {
                let mut next = c2;
                while !self.eof() {
                    next = self.getc();
                    if next != '.' {
                        break;
                    }
                    c1 = '…';
                    c2 = ' ';
                }
                if c1 == '…' {
                    c2 = next;
                } else {
                    self.unget(next);
                }
            }
            let mut punct = clause_type(c1);
            if punct != CLAUSE_NONE {
                // espeak masks with the whole clause words here, so any sentence-type mark
                // swallows the punctuation right after it ("?!", "!?", ".?").
                if punct & (CLAUSE_QUESTION | CLAUSE_EXCLAMATION) != 0 {
                    while !self.eof() && clause_type(c2) & (CLAUSE_QUESTION | CLAUSE_EXCLAMATION) != 0 {
                        c2 = self.getc();
                    }
                }
                if punct & PUNCTUATION_IN_WORD != 0 {
                    continue;
                }
                if is_space(c2) || punct & OPTIONAL_SPACE_AFTER != 0 || is_bracket(c2) || c2 == '?' || self.eof() {
                    is_end_clause = true;
                }
            }
            if is_end_clause {
                let mut newlines = 0;
                let mut next = c2;
                if is_space(next) {
                    while !self.eof() && is_space(next) {
                        if next == '\n' {
                            newlines += 1;
                        }
                        next = self.getc();
                    }
                }
                if c1 == '.' && newlines < 2 {
                    punct |= DOT_AFTER_LAST_WORD;
                }
                if newlines == 0 {
                    if c1 == '.' && next == '\'' && self.peek() == 's' {
                        // "U.S.A.'s": an apostrophe-s after the dot keeps the clause going.
                        is_end_clause = false;
                    }
                    if c1 == '.' {
                        if next.is_lowercase() {
                            // A lower-case word after the dot: an abbreviation, not a stop.
                            is_end_clause = false;
                        }
                        if !any_alnum {
                            c1 = ' ';
                            is_end_clause = false;
                        }
                    } else if !any_alnum {
                        is_end_clause = false;
                    }
                }
                if is_end_clause {
                    self.unget(next);
                    if newlines > 1 {
                        let plain = punct & !DOT_AFTER_LAST_WORD;
                        if plain == CLAUSE_QUESTION || plain == CLAUSE_EXCLAMATION {
                            return punct + 35;
                        }
                        return CLAUSE_PARAGRAPH;
                    }
                    return punct;
                } else if !self.eof() && is_space(c2) {
                    self.unget(next);
                }
            }

            buffered += c1.len_utf8();
            let near_full = buffered > CLAUSE_BUFFER - 75 && !c1.is_alphabetic() && !c1.is_ascii_digit();
            if near_full || buffered >= CLAUSE_BUFFER - 4 {
                self.unget(c2);
                return CLAUSE_NONE;
            }
        }
        CLAUSE_EOF
    }
}

/// espeak-ng's `iswspace` (ucd-tools' `ucd_isspace`, as measured on Debian's 1.51 and piper's
/// 1.52): separators and the White_Space controls, U+0085 included, no-break spaces excluded.
fn is_space(c: char) -> bool {
    matches!(
        c,
        '\t' | '\n' | '\u{b}' | '\u{c}' | '\r' | ' ' | '\u{85}' | '\u{1680}' | '\u{2000}'
            ..='\u{2006}' | '\u{2008}'..='\u{200a}' | '\u{2028}' | '\u{2029}' | '\u{205f}' | '\u{3000}'
    )
}

/// espeak-ng's `IsBracket`: brackets and quotes after punctuation still end the clause.
fn is_bracket(c: char) -> bool {
    matches!(
        c,
        '"' | '\'' | '(' | ')' | '<' | '>' | '[' | ']' | '`' | '{' | '}' | '«' | '»' | '\u{2015}'
            ..='\u{201f}' | '\u{300a}' | '\u{300b}' | '\u{e03c}'
    )
}

fn is_alnum(c: char) -> bool {
    c.is_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Clause ends and terminators of a whole text, starting with an empty look-ahead.
    fn read_all(text: &str) -> Vec<(Option<usize>, Option<char>, bool)> {
        let mut reader = ClauseReader::new(text, '\0');
        let mut out = Vec::new();
        loop {
            let clause = reader.read_clause();
            out.push((clause.end, clause.ended.terminator.symbol(), clause.ended.end_of_sentence));
            if clause.end.is_none() {
                return out;
            }
        }
    }

    #[test]
    fn punctuation_followed_by_space_ends_a_clause_and_keeps_one_character_of_look_ahead() {
        // The pointer stops after the first letter of the next clause, as the library's does.
        assert_eq!(
            read_all("Hello, world! How are you?"),
            vec![(Some(8), Some(','), false), (Some(15), Some('!'), true), (None, Some('?'), true)]
        );
    }

    #[test]
    fn text_without_final_punctuation_ends_a_sentence_without_a_symbol() {
        assert_eq!(read_all("Hello world"), vec![(None, None, true)]);
        assert_eq!(read_all(""), vec![(None, None, true)]);
    }

    #[test]
    fn abbreviations_ellipses_and_dashes_follow_espeak() {
        // A lower-case word after the dot is not a sentence end.
        assert_eq!(read_all("Dr. smith is here."), vec![(None, Some('.'), true)]);
        // Three dots are an ellipsis: a clause break that keeps nothing and continues the sentence.
        assert_eq!(read_all("Wait... what?!"), vec![(Some(9), None, false), (None, Some('?'), true)]);
        // An em dash between spaces is a semicolon; inside a word it is nothing.
        assert_eq!(read_all("a — b"), vec![(Some(7), Some(';'), false), (None, None, true)]);
        assert_eq!(read_all("x—y"), vec![(None, None, true)]);
    }

    #[test]
    fn a_blank_line_is_a_paragraph_that_keeps_no_symbol() {
        assert_eq!(read_all("One.\n\nTwo."), vec![(Some(7), None, true), (None, Some('.'), true)]);
        assert_eq!(read_all("One\n\nTwo"), vec![(Some(6), None, true), (None, None, true)]);
    }

    #[test]
    fn a_clause_too_long_for_espeaks_buffer_is_cut_without_a_symbol() {
        let text = "word ".repeat(300);
        let clauses = read_all(&text);
        assert!(clauses.len() > 1, "{clauses:?}");
        assert_eq!((clauses[0].1, clauses[0].2), (None, false));
    }

    #[test]
    fn the_next_clause_starts_at_the_look_ahead() {
        let mut reader = ClauseReader::new("Hi. There.", '\0');
        // The pointer stops past the `T` that showed the period ends the sentence; the `T`
        // is the look-ahead, so the next clause starts at it.
        assert_eq!(reader.read_clause().end, Some(5));
        assert_eq!((reader.carried(), reader.next_clause_start()), ('T', Some(4)));
        reader.read_clause();
        assert_eq!(reader.next_clause_start(), None);
        // A look-ahead carried in from another text is not in this one.
        assert_eq!(ClauseReader::new("abc", 'x').next_clause_start(), None);
    }

    #[test]
    fn resync_takes_the_last_read_character_as_look_ahead() {
        let mut reader = ClauseReader::new("Hi. There", '\0');
        reader.resync(Some(5));
        assert_eq!(reader.carried(), 'T');
        reader.resync(None);
        assert_eq!(reader.read_clause().end, None);
    }

    #[test]
    fn clause_words_decode_as_piper_decodes_them() {
        let end = ClauseEnd::from_clause_word(CLAUSE_PERIOD | DOT_AFTER_LAST_WORD);
        assert_eq!((end.terminator, end.end_of_sentence), (Terminator::Period, true));
        let end = ClauseEnd::from_clause_word(CLAUSE_EOF);
        assert_eq!((end.terminator, end.end_of_sentence), (Terminator::None, true));
        let end = ClauseEnd::from_clause_word(CLAUSE_NONE);
        assert_eq!((end.terminator, end.end_of_sentence), (Terminator::None, false));
    }
}
