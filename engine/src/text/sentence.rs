//! Clauses into sentences of phonemes, as piper's `phonemize_espeak.py` and `voice.py` do it.
//!
//! Per clause: drop espeak's language-switch flags such as `(fr)`, append the kept punctuation
//! (and a space after `, : ;`), decompose to NFD so accents become their own phonemes, and close
//! the sentence after `. ? !`. Raw `[[ phonemes ]]` blocks in the text are copied in as they are
//! and glue the text around them into the same sentence. Sentences are handed on as soon as a
//! later one begins, so long texts stream; empty ones are skipped, as piper's synthesis does.
//! A sentence longer than [`MAX_SENTENCE`] is handed on in parts (piper would take it whole).

use std::ops::ControlFlow;

use unicode_normalization::UnicodeNormalization;

use super::clause::ClauseEnd;

/// The most phonemes handed on as one sentence; a longer one, such as a text that never ends
/// a sentence, is cut into parts (see `parts`). The text encoder's attention grows with the
/// square of a sentence's length: 3,000 words without a full stop took 11 GB and had not
/// spoken after five minutes. 400 is about 70 words, longer than ordinary sentences (the
/// longest of the parity fixtures has 145).
pub const MAX_SENTENCE: usize = 400;

/// `sentence` in parts of at most `max` phonemes: each cut after the last clause mark
/// (`,` `;` `:` and the space after it) in the second half of the allowed length, else at
/// the last word break, else (one word longer than that) at `max`. The spaces at a cut are
/// dropped.
pub(crate) fn parts(sentence: &[char], max: usize) -> Vec<&[char]> {
    let max = max.max(1);
    let mut parts = Vec::new();
    let mut rest = sentence;
    while rest.len() > max {
        let head = &rest[..max];
        let after_mark =
            ((max / 2).max(1)..max).rev().find(|&i| head[i] == ' ' && matches!(head[i - 1], ',' | ';' | ':'));
        let at_space = || head.iter().rposition(|&c| c == ' ').filter(|&i| i > 0);
        let cut = after_mark.or_else(at_space).unwrap_or(max);
        parts.push(trim(&rest[..cut]));
        rest = trim(&rest[cut..]);
    }
    parts.push(rest);
    parts.retain(|p| !p.is_empty());
    parts
}

fn trim(phonemes: &[char]) -> &[char] {
    let start = phonemes.iter().position(|&c| c != ' ').unwrap_or(phonemes.len());
    let end = phonemes.iter().rposition(|&c| c != ' ').map_or(start, |e| e + 1);
    &phonemes[start..end]
}

/// Collects sentences and hands each one on once it is known to be complete.
pub(crate) struct SentenceSink<F: FnMut(Vec<char>) -> ControlFlow<()>> {
    /// The last sentence, which a raw block or its text may still extend.
    last: Option<Vec<char>>,
    emit: F,
    stopped: bool,
}

impl<F: FnMut(Vec<char>) -> ControlFlow<()>> SentenceSink<F> {
    pub(crate) fn new(emit: F) -> Self {
        SentenceSink { last: None, emit, stopped: false }
    }

    /// Whether the receiver asked to stop.
    pub(crate) fn stopped(&self) -> bool {
        self.stopped
    }

    /// Starts a new sentence, completing the previous one.
    pub(crate) fn push(&mut self, sentence: Vec<char>) {
        if let Some(done) = self.last.replace(sentence) {
            self.hand_on(done);
        }
    }

    /// Appends to the last sentence (starting one if there is none).
    pub(crate) fn extend_last(&mut self, phonemes: impl IntoIterator<Item = char>) {
        self.last.get_or_insert_with(Vec::new).extend(phonemes);
    }

    /// Completes the last sentence.
    pub(crate) fn finish(&mut self) {
        if let Some(done) = self.last.take() {
            self.hand_on(done);
        }
    }

    fn hand_on(&mut self, sentence: Vec<char>) {
        if sentence.len() <= MAX_SENTENCE {
            self.emit_one(sentence);
            return;
        }
        for part in parts(&sentence, MAX_SENTENCE) {
            self.emit_one(part.to_vec());
        }
    }

    fn emit_one(&mut self, sentence: Vec<char>) {
        if !self.stopped && !sentence.is_empty() && (self.emit)(sentence).is_break() {
            self.stopped = true;
        }
    }
}

/// Builds the sentences of one stretch of text between raw blocks, clause by clause.
pub(crate) struct ClauseGrouper {
    current: Vec<char>,
    /// True until the stretch's first sentence is placed: after a raw block it joins the
    /// raw block's sentence instead of starting one.
    first: bool,
    joins_previous: bool,
}

impl ClauseGrouper {
    /// A grouper for a stretch of text; `after_raw_block` when a raw block came just before.
    pub(crate) fn new(after_raw_block: bool) -> Self {
        ClauseGrouper { current: Vec::new(), first: true, joins_previous: after_raw_block }
    }

    /// Adds one clause from espeak.
    pub(crate) fn clause<F>(&mut self, phonemes: &str, ended: ClauseEnd, sink: &mut SentenceSink<F>)
    where
        F: FnMut(Vec<char>) -> ControlFlow<()>,
    {
        let mut text = strip_language_flags(phonemes);
        if let Some(symbol) = ended.terminator.symbol() {
            text.push(symbol);
            if ended.terminator.continues_sentence() {
                text.push(' ');
            }
        }
        self.current.extend(text.nfd());
        if ended.end_of_sentence {
            let sentence = std::mem::take(&mut self.current);
            self.place(sentence, sink);
        }
    }

    /// Ends the stretch: a last clause without a sentence end still makes a sentence.
    pub(crate) fn finish<F>(mut self, sink: &mut SentenceSink<F>)
    where
        F: FnMut(Vec<char>) -> ControlFlow<()>,
    {
        if !self.current.is_empty() {
            let sentence = std::mem::take(&mut self.current);
            self.place(sentence, sink);
        }
    }

    fn place<F>(&mut self, sentence: Vec<char>, sink: &mut SentenceSink<F>)
    where
        F: FnMut(Vec<char>) -> ControlFlow<()>,
    {
        if self.first && self.joins_previous {
            sink.extend_last(sentence);
        } else {
            sink.push(sentence);
        }
        self.first = false;
    }
}

/// Removes espeak's language-switch flags, `(` + one or more non-`)` characters + `)`, as
/// piper's `re.sub(r"\([^)]+\)", "", ...)` does.
pub(crate) fn strip_language_flags(phonemes: &str) -> String {
    let mut out = String::with_capacity(phonemes.len());
    let mut rest = phonemes;
    while let Some(open) = rest.find('(') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find(')') {
            Some(close) if close > 0 => rest = &after[close + 1..],
            _ => {
                out.push('(');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// One piece of input text: plain text for espeak, or a raw `[[ ... ]]` phoneme block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Piece<'a> {
    Text(&'a str),
    Raw(&'a str),
}

/// Splits text the way piper's `re.split(r"(\[\[.*?\]\])", text)` does: blocks do not span
/// lines, the shortest block wins, and the text pieces around them are kept (even empty ones).
/// Like piper, any text piece that itself starts with `[[` is also read as a raw block.
pub(crate) fn split_raw_blocks(text: &str) -> Vec<Piece<'_>> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut search = 0;
    while let Some(found) = text[search..].find("[[") {
        let open = search + found;
        let inner = &text[open + 2..];
        let line_end = inner.find('\n').unwrap_or(inner.len());
        match inner[..line_end].find("]]") {
            Some(close) => {
                let end = open + 2 + close + 2;
                pieces.push(text_piece(&text[start..open]));
                pieces.push(Piece::Raw(&text[open..end]));
                start = end;
                search = end;
            }
            None => search = open + 1,
        }
    }
    pieces.push(text_piece(&text[start..]));
    pieces
}

fn text_piece(text: &str) -> Piece<'_> {
    if text.starts_with("[[") {
        Piece::Raw(text)
    } else {
        Piece::Text(text)
    }
}

/// The phonemes inside a raw block: piper takes `block[2:-2].strip()`, character by character.
pub(crate) fn raw_block_phonemes(block: &str) -> Vec<char> {
    let chars: Vec<char> = block.chars().collect();
    let inner = if chars.len() >= 4 { &chars[2..chars.len() - 2] } else { &[][..] };
    let is_py_space = |c: &char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(c);
    let start = inner.iter().position(|c| !is_py_space(c)).unwrap_or(inner.len());
    let end = inner.iter().rposition(|c| !is_py_space(c)).map_or(start, |i| i + 1);
    inner[start..end].to_vec()
}

#[cfg(test)]
mod tests {
    use super::super::clause::Terminator;
    use super::*;

    fn end(terminator: Terminator, end_of_sentence: bool) -> ClauseEnd {
        ClauseEnd { terminator, end_of_sentence }
    }

    type Emit<'a> = Box<dyn FnMut(Vec<char>) -> ControlFlow<()> + 'a>;

    fn chars(s: &str) -> Vec<char> {
        s.chars().collect()
    }

    fn strings(parts: Vec<&[char]>) -> Vec<String> {
        parts.into_iter().map(|p| p.iter().collect()).collect()
    }

    #[test]
    fn a_long_sentence_is_cut_after_a_clause_mark_else_at_a_word_break() {
        // Within 12: a comma in the second half wins over the later word break.
        assert_eq!(strings(parts(&chars("aaa bb, cc dd ee"), 12)), ["aaa bb,", "cc dd ee"]);
        // A comma in the first half is too early: the last word break instead.
        assert_eq!(strings(parts(&chars("a, bbb ccc dd eee"), 12)), ["a, bbb ccc", "dd eee"]);
        // One word longer than the bound is cut inside; short sentences pass whole.
        assert_eq!(strings(parts(&chars("abcdefghij"), 4)), ["abcd", "efgh", "ij"]);
        assert_eq!(strings(parts(&chars("short one"), 12)), ["short one"]);
        assert_eq!(strings(parts(&chars(" a b"), 1)), ["a", "b"]);
        // Every part within the bound, nothing but the spaces at the cuts lost.
        let long: String = (0..500).map(|i| format!("w{i}{} ", if i % 37 == 0 { "," } else { "" })).collect();
        let long_chars = chars(long.trim_end());
        let cut = parts(&long_chars, 100);
        assert!(cut.iter().all(|p| !p.is_empty() && p.len() <= 100));
        let joined: Vec<String> = cut.iter().map(|p| p.iter().collect()).collect();
        assert_eq!(joined.join(" "), long.trim_end());
    }

    /// Runs `f` on a sink and returns the sentences it handed on, as strings.
    fn collect(f: impl FnOnce(&mut SentenceSink<Emit<'_>>)) -> Vec<String> {
        let mut out = Vec::new();
        {
            let emit: Emit<'_> = Box::new(|s: Vec<char>| {
                out.push(s.into_iter().collect::<String>());
                ControlFlow::Continue(())
            });
            let mut sink = SentenceSink::new(emit);
            f(&mut sink);
            sink.finish();
        }
        out
    }

    #[test]
    fn language_flags_are_removed_like_pipers_regex() {
        assert_eq!(strip_language_flags("(en)hɛloʊ(fr)"), "hɛloʊ");
        assert_eq!(strip_language_flags("a()b"), "a()b");
        assert_eq!(strip_language_flags("a(b(c)d"), "ad");
        assert_eq!(strip_language_flags("a(bc"), "a(bc");
    }

    #[test]
    fn clauses_keep_punctuation_and_group_into_sentences() {
        let out = collect(|sink| {
            let mut g = ClauseGrouper::new(false);
            g.clause("həlˈoʊ", end(Terminator::Comma, false), sink);
            g.clause("wˈɜːld", end(Terminator::Exclamation, true), sink);
            g.clause("haʊ", end(Terminator::None, true), sink);
            g.finish(sink);
        });
        assert_eq!(out, vec!["həlˈoʊ, wˈɜːld!", "haʊ"]);
    }

    #[test]
    fn phonemes_are_decomposed_so_accents_are_their_own_symbols() {
        let out = collect(|sink| {
            let mut g = ClauseGrouper::new(false);
            g.clause("ç", end(Terminator::None, true), sink);
            g.finish(sink);
        });
        assert_eq!(out, vec!["c\u{327}"]);
    }

    #[test]
    fn raw_blocks_join_the_sentence_around_them() {
        // "Hi [[ b ]] there." -> one sentence, as piper builds it.
        let out = collect(|sink| {
            let mut g = ClauseGrouper::new(false);
            g.clause("haɪ", end(Terminator::None, true), sink);
            g.finish(sink);
            sink.extend_last([' ']);
            sink.extend_last(raw_block_phonemes("[[ b ]]"));
            sink.extend_last([' ']);
            let mut g = ClauseGrouper::new(true);
            g.clause("ðɛɹ", end(Terminator::Period, true), sink);
            g.clause("nˈɛkst", end(Terminator::None, true), sink);
            g.finish(sink);
        });
        assert_eq!(out, vec!["haɪ b ðɛɹ.", "nˈɛkst"]);
    }

    #[test]
    fn empty_sentences_are_not_handed_on_and_a_stop_is_honoured() {
        let mut seen = Vec::new();
        let mut sink = SentenceSink::new(|s: Vec<char>| {
            seen.push(s.len());
            ControlFlow::Break(())
        });
        sink.push(vec![]);
        sink.push(vec!['a']);
        sink.push(vec!['b']);
        sink.finish();
        assert!(sink.stopped());
        assert_eq!(seen, vec![1]);
    }

    #[test]
    fn raw_blocks_split_like_pipers_regex() {
        use Piece::*;
        assert_eq!(split_raw_blocks("a [[x]] b"), vec![Text("a "), Raw("[[x]]"), Text(" b")]);
        assert_eq!(split_raw_blocks("[[x]][[y]]"), vec![Text(""), Raw("[[x]]"), Text(""), Raw("[[y]]"), Text("")]);
        // No closing brackets on the same line: not a block, but piper still reads a leading "[[" raw.
        assert_eq!(split_raw_blocks("a [[x\n]] b"), vec![Text("a [[x\n]] b")]);
        assert_eq!(split_raw_blocks("[[x"), vec![Raw("[[x")]);
        assert_eq!(raw_block_phonemes("[[ hə ]]"), vec!['h', 'ə']);
        assert_eq!(raw_block_phonemes("[[x"), vec![] as Vec<char>);
    }
}
