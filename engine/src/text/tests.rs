//! Tests against the real libespeak-ng and piper-tts's recorded output
//! (`tests/fixtures/vits/phonemes.json`, written by `scripts/fixtures/vits_phonemes.py`).
//! They need espeak-ng installed (scripts/setup.sh does it) and fail with its install hint if not.

use std::collections::HashMap;
use std::ops::ControlFlow;

use super::espeak;
use super::punctuation;
use super::*;

fn fixture() -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/vits/phonemes.json");
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn id_map(fixture: &serde_json::Value) -> PhonemeIdMap {
    let map: HashMap<String, Vec<i64>> = serde_json::from_value(fixture["phoneme_id_map"].clone()).unwrap();
    PhonemeIdMap::new(map).unwrap()
}

fn phonemizer() -> Phonemizer {
    Phonemizer::new("en-us").unwrap_or_else(|e| panic!("{e}"))
}

/// Every clause of `text` as the library and the replay saw it.
fn clauses(text: &str) -> Vec<espeak::Clause> {
    let mut espeak = espeak::lock().unwrap_or_else(|e| panic!("{e}"));
    espeak.select_voice("en-us").unwrap();
    let mut out = Vec::new();
    espeak
        .clauses(text, |clause| {
            out.push(clause);
            true
        })
        .unwrap();
    out
}

#[test]
fn fixture_sentences_give_pipers_exact_phonemes_and_ids() {
    let fixture = fixture();
    let ids = id_map(&fixture);
    let phonemizer = Phonemizer::new(fixture["voice"].as_str().unwrap()).unwrap_or_else(|e| panic!("{e}"));
    let mut failures = Vec::new();
    let cases = fixture["sentences"].as_array().unwrap();
    assert!(cases.len() >= 25, "the fixture should cover at least 25 texts");
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want_phonemes: Vec<String> = serde_json::from_value(case["phonemes"].clone()).unwrap();
        let want_ids: Vec<Vec<i64>> = serde_json::from_value(case["ids"].clone()).unwrap();
        let sentences = phonemizer.phonemize(text).unwrap();
        let got_phonemes: Vec<String> = sentences.iter().map(|s| s.iter().collect()).collect();
        let got_ids: Vec<Vec<i64>> = sentences
            .iter()
            .map(|s| {
                let (ids, dropped) = ids.ids(s);
                assert!(dropped.is_empty(), "{text:?}: no id for {dropped:?}");
                ids
            })
            .collect();
        if got_phonemes != want_phonemes || got_ids != want_ids {
            failures.push(format!("{text:?}\n  piper: {want_phonemes:?}\n  ours:  {got_phonemes:?}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} differ:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn clause_terminators_match_pipers_espeak() {
    let fixture = fixture();
    let mut failures = Vec::new();
    let cases = fixture["clauses"].as_array().unwrap();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<(String, bool)> = serde_json::from_value(case["ends"].clone()).unwrap();
        let got: Vec<(String, bool)> = clauses(text)
            .iter()
            .map(|c| {
                let symbol = c.ended.terminator.symbol().map(String::from).unwrap_or_default();
                (symbol, c.ended.end_of_sentence)
            })
            .collect();
        if got != want {
            failures.push(format!("{text:?}\n  piper: {want:?}\n  ours:  {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} differ:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

/// Texts mixing words, punctuation, brackets, spaces and line breaks, from a fixed seed.
fn mixed_texts(count: usize) -> Vec<String> {
    const TOKENS: &[&str] = &[
        "word", "Word", "dr", "x", "U.S.", "it's", "3.5", "naïve", " ", " ", "  ", "\t", "\n", "\n\n", "\r\n", ".",
        ".", ",", "?", "!", ";", ":", "..", "...", "…", " — ", "–", "-", "\"", "'", "(", ")", "[", "«", "“", "?!",
        "。", "，", "¿", "¡", "\u{a0}", "\u{2029}", "\u{ad}", "\u{85}",
    ];
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move |bound: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % bound as u64) as usize
    };
    (0..count).map(|_| (0..1 + next(16)).map(|_| TOKENS[next(TOKENS.len())]).collect()).collect()
}

#[test]
fn the_clause_replay_stops_where_the_library_stops() {
    let fixture = fixture();
    let mut texts: Vec<String> = fixture["clauses"]
        .as_array()
        .unwrap()
        .iter()
        .chain(fixture["sentences"].as_array().unwrap())
        .map(|case| case["text"].as_str().unwrap().to_string())
        .collect();
    texts.extend(mixed_texts(3000));
    // Long clauses are cut where espeak's 800-byte buffer fills.
    texts.push("word ".repeat(400));
    texts.push(format!("{}, {}", "abcdefghij".repeat(90), "x ".repeat(300)));
    let mut failures = Vec::new();
    for text in &texts {
        let seen = clauses(text);
        if seen.iter().any(|c| c.end != c.replayed_end) {
            let ends: Vec<_> = seen.iter().map(|c| (c.end, c.replayed_end)).collect();
            failures.push(format!("{text:?}: (library, replay) = {ends:?}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} differ:\n{}", failures.len(), texts.len(), failures.join("\n"));
}

#[test]
fn the_punctuation_table_is_the_one_in_pipers_espeak() {
    let fixture = fixture();
    let want: Vec<(u32, u16)> = serde_json::from_value(fixture["clause_properties"].clone()).unwrap();
    assert_eq!(punctuation::table(), want.as_slice());
}

#[test]
fn empty_and_blank_text_give_no_sentences() {
    let phonemizer = phonemizer();
    assert_eq!(phonemizer.phonemize("").unwrap(), Vec::<Vec<char>>::new());
    assert_eq!(phonemizer.phonemize(" \n\t ").unwrap(), Vec::<Vec<char>>::new());
    assert_eq!(phonemizer.phonemize("...").unwrap(), Vec::<Vec<char>>::new());
}

#[test]
fn an_unknown_voice_is_an_error_that_names_it() {
    let error = Phonemizer::new("xx-no-such-voice").unwrap_err();
    assert!(matches!(error, TextError::UnknownVoice { .. }), "{error}");
    assert!(error.to_string().contains("xx-no-such-voice"), "{error}");
    // The library stays usable with a good voice afterwards.
    assert!(!phonemizer().phonemize("Hello.").unwrap().is_empty());
}

#[test]
fn control_characters_do_not_leak_into_later_texts() {
    let phonemizer = phonemizer();
    let before = phonemizer.phonemize("Hello there.").unwrap();
    // U+0001 followed by 'B' would switch espeak to speaking punctuation names for good.
    for odd in ["a\u{1}B1 b.", "nul\0inside.", "\u{1}V"] {
        phonemizer.phonemize(odd).unwrap();
    }
    assert_eq!(phonemizer.phonemize("Hello there.").unwrap(), before);
    assert_eq!(phonemizer.phonemize("nul\0inside").unwrap(), phonemizer.phonemize("nul inside").unwrap());
}

#[test]
fn stopping_early_leaves_the_next_text_unchanged() {
    let phonemizer = phonemizer();
    let whole = phonemizer.phonemize("One two. Three four. Five.").unwrap();
    let mut first = Vec::new();
    phonemizer
        .for_each_sentence("Alpha. Beta. Gamma.", |s| {
            first.push(s);
            ControlFlow::Break(())
        })
        .unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(phonemizer.phonemize("One two. Three four. Five.").unwrap(), whole);
}

/// `text` read by [`Phonemizer::next_sentences`] until it says all was read, and how many
/// readings that took.
fn a_sentence_at_a_time(phonemizer: &Phonemizer, text: &str) -> (Vec<Vec<char>>, usize) {
    let (mut sentences, mut at, mut reads) = (Vec::new(), 0, 1);
    while let Some(rest) = phonemizer.next_sentences(&text[at..], |s| sentences.push(s)).unwrap() {
        assert!(rest > 0 && at + rest < text.len(), "no progress at {at} in {text:?}");
        at += rest;
        reads += 1;
    }
    (sentences, reads)
}

/// Read a sentence at a time, every fixture text (abbreviations, numbers, quotes, ellipses,
/// line breaks, raw blocks) and all of them as one text give what one reading gives.
#[test]
fn reading_a_sentence_at_a_time_gives_the_whole_reading() {
    let phonemizer = phonemizer();
    let fixture = fixture();
    let texts: Vec<&str> =
        fixture["sentences"].as_array().unwrap().iter().map(|s| s["text"].as_str().unwrap()).collect();
    // All of them as one text, and again without the raw block (which makes a text be read
    // whole) after a paragraph break.
    let plain = texts.iter().filter(|t| !t.contains("[[")).copied().collect::<Vec<_>>().join(" ");
    let all = format!("{}\n\n{plain}", texts.join(" "));
    let mut in_parts = 0;
    for text in texts.iter().copied().chain([all.as_str(), &plain]) {
        let whole = phonemizer.phonemize(text).unwrap();
        let (parts, reads) = a_sentence_at_a_time(&phonemizer, text);
        assert_eq!(parts, whole, "{text:?}");
        in_parts += usize::from(reads > 1);
    }
    // The texts of several sentences were read in pieces, not whole.
    let (_, reads) = a_sentence_at_a_time(&phonemizer, &plain);
    assert!(reads > 30 && in_parts > 10, "{reads} readings, {in_parts} texts read in parts");
}

#[test]
fn enormous_text_streams_sentence_by_sentence() {
    let phonemizer = phonemizer();
    let sentence = "The quick brown fox jumps over the lazy dog, again and again. ";
    let one = phonemizer.phonemize(sentence).unwrap();
    assert_eq!(one.len(), 1);
    let text = sentence.repeat(5000); // about 310 KB
    let mut count = 0;
    phonemizer
        .for_each_sentence(&text, |s| {
            assert_eq!(s, one[0]);
            count += 1;
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(count, 5000);
}

/// A text that never ends a sentence comes out in parts the encoder can take, with every
/// word kept.
#[test]
fn a_sentence_without_end_is_handed_on_in_bounded_parts() {
    let phonemizer = phonemizer();
    let words = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog"];
    let text: Vec<&str> = (0..3000).map(|i| words[i % words.len()]).collect();
    let sentences = phonemizer.phonemize(&text.join(" ")).unwrap();
    assert!(sentences.len() > 10, "{} parts", sentences.len());
    assert!(sentences.iter().all(|s| !s.is_empty() && s.len() <= super::MAX_SENTENCE));
    let phonemes_of = |s: &[char]| s.iter().filter(|c| !c.is_whitespace()).count();
    let whole: usize = sentences.iter().map(|s| phonemes_of(s)).sum();
    let one_round = phonemizer.phonemize(&words.join(" ")).unwrap();
    // 3000 words are 333⅓ rounds of nine: the parts hold all their phonemes, give or take
    // the sentence-final intonation espeak puts on a text's last word.
    let round = phonemes_of(&one_round[0]) as f64;
    assert!((whole as f64 / round - 3000.0 / 9.0).abs() < 0.5, "{whole} phonemes for {round} a round");
}

#[test]
fn phonemizers_on_many_threads_agree_with_one_thread() {
    let texts = ["Hello, world!", "How are you? Fine.", "Numbers: 1, 2, 3.", "Café au lait."];
    let phonemizer = phonemizer();
    let serial: Vec<_> = texts.iter().map(|t| phonemizer.phonemize(t).unwrap()).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    let phonemizer = Phonemizer::new("en-us").unwrap();
                    for _ in 0..25 {
                        for (text, want) in texts.iter().zip(&serial) {
                            assert_eq!(&phonemizer.phonemize(text).unwrap(), want);
                        }
                    }
                })
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
    });
}

#[test]
fn missing_symbols_are_reported_not_fatal() {
    let fixture = fixture();
    let ids = id_map(&fixture);
    let sentences = phonemizer().phonemize("Hello [[ ☃ ]] there.").unwrap();
    let (got, dropped) = ids.ids(&sentences[0]);
    assert_eq!(dropped, vec!['☃']);
    assert_eq!(got.first(), Some(&1));
    assert_eq!(got.last(), Some(&2));
}

/// Runs one ignored test of this binary in a child process with `env` set, so that it gets its
/// own (failing) espeak-ng initialisation, and returns the child's output.
fn run_child(test: &str, env: &[(&str, &std::ffi::OsStr)]) -> String {
    let exe = std::env::current_exe().unwrap();
    let output = std::process::Command::new(exe)
        .args([test, "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "child {test} failed:\n{text}");
    text
}

#[test]
#[ignore = "helper: run by missing_espeak_pieces_are_clear_errors in a child process"]
fn child_prints_the_phonemizer_error() {
    let error = Phonemizer::new("en-us").unwrap_err();
    println!("CHILD-ERROR: {error}");
}

#[test]
fn missing_espeak_pieces_are_clear_errors() {
    let missing_lib = run_child(
        "text::tests::child_prints_the_phonemizer_error",
        &[("SPIRAL_ESPEAK_LIB", "/nonexistent/libespeak-ng.so.1".as_ref())],
    );
    assert!(missing_lib.contains("CHILD-ERROR: could not load the espeak-ng library"), "{missing_lib}");
    assert!(missing_lib.contains("apt-get install espeak-ng"), "{missing_lib}");

    // An espeak-ng-data directory without data files: espeak finds it and fails to load it.
    let empty = std::env::temp_dir().join(format!("spiral-empty-espeak-{}", std::process::id()));
    std::fs::create_dir_all(empty.join("espeak-ng-data")).unwrap();
    let missing_data =
        run_child("text::tests::child_prints_the_phonemizer_error", &[("ESPEAK_DATA_PATH", empty.as_os_str())]);
    std::fs::remove_dir_all(&empty).ok();
    assert!(missing_data.contains("CHILD-ERROR: espeak-ng could not load its data"), "{missing_data}");
    assert!(missing_data.contains("ESPEAK_DATA_PATH"), "{missing_data}");
}
