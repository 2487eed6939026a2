//! OpenCLIP's tokenizer (OpenAI CLIP's byte-level BPE, `open_clip.tokenizer.SimpleTokenizer`)
//! rebuilt on `tokenizers` from the merges file every OpenCLIP install has
//! (`bpe_simple_vocab_16e6.txt.gz`), so that a model imported from OpenCLIP sees the token ids it
//! was trained on.
//!
//! What `SimpleTokenizer` does, and the `tokenizers` part that does it here:
//! - vocabulary: the 256 byte characters of `bytes_to_unicode`, the same with `</w>`, one token
//!   per merge (the first 48,894 lines after the header), then `<start_of_text>` and
//!   `<end_of_text>`: 49,408 ids; [`VOCAB_SIZE`];
//! - cleaning (`clean='lower'`): NFC (what `ftfy.fix_text` does to text that is not mojibake),
//!   runs of whitespace to one space, lower case: the normalizer;
//! - words: `'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+`, then UTF-8 bytes as
//!   characters: a `Split` pre-tokenizer and a `ByteLevel` one without its own regex;
//! - BPE with `</w>` on each word's last symbol, merges by rank: the BPE model;
//! - `<start_of_text> … <end_of_text>`, cut to the context with the end token kept, padded with
//!   id 0: the template, [`crate::text::TextTokenizer`]'s truncation and padding.
//!
//! Not reproduced: `ftfy`'s repair of mojibake (text that is already broken) and the double
//! `html.unescape` (`&amp;` is one token there, three here). Token ids are checked against
//! `open_clip`'s own on committed strings (`tests/fixtures/openclip-tiny/tokens.json`).

use crate::{DataError, Result};
use std::io::Read;
use std::path::Path;

/// Ids in OpenCLIP's vocabulary.
pub const VOCAB_SIZE: usize = 49_408;
pub const START: &str = "<start_of_text>";
pub const END: &str = "<end_of_text>";
const MERGES: usize = VOCAB_SIZE - 2 * 256 - 2;
const WORDS: &str = r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// The merges file's text: gzip-compressed (as OpenCLIP ships it) or plain.
pub fn read_merges(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let text = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = String::new();
        flate2::read::GzDecoder::new(bytes.as_slice())
            .read_to_string(&mut out)
            .map_err(|e| DataError::input(path.display(), format!("not a readable gzip file of UTF-8 text: {e}")))?;
        out
    } else {
        String::from_utf8(bytes).map_err(|e| DataError::input(path.display(), format!("not UTF-8 text: {e}")))?
    };
    Ok(text)
}

/// GPT-2's reversible map from bytes to printable characters, in `bytes_to_unicode`'s order
/// (the printable bytes first, then the rest shifted past 255).
fn byte_chars() -> Vec<char> {
    let printable = |b: u32| (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
    let mut order: Vec<u32> = (0..256).filter(|&b| printable(b)).collect();
    let mut chars: Vec<char> = order.iter().map(|&b| char::from_u32(b).expect("a byte")).collect();
    let mut n = 0;
    for b in 0..256 {
        if !printable(b) {
            order.push(b);
            chars.push(char::from_u32(256 + n).expect("below 512"));
            n += 1;
        }
    }
    chars
}

/// OpenCLIP's tokenizer from the merges file's text; `source` names it in errors.
pub fn tokenizer(merges_text: &str, source: &str) -> Result<tokenizers::Tokenizer> {
    let bad = |message: String| DataError::input(source, message);
    let merges: Vec<&str> = merges_text.split('\n').skip(1).take(MERGES).collect();
    if merges.len() < MERGES {
        return Err(bad(format!("{} merges, OpenCLIP's vocabulary needs {MERGES}: not bpe_simple_vocab_16e6.txt", merges.len())));
    }
    let mut vocab: Vec<String> = byte_chars().into_iter().map(String::from).collect();
    vocab.extend(vocab.clone().into_iter().map(|c| c + "</w>"));
    for (i, m) in merges.iter().enumerate() {
        let Some((a, b)) = m.split_once(' ') else {
            return Err(bad(format!("line {}: `{m}` is not a merge (two symbols and a space)", i + 2)));
        };
        vocab.push(format!("{a}{b}"));
    }
    vocab.push(START.into());
    vocab.push(END.into());
    let ids: serde_json::Map<String, serde_json::Value> = vocab.iter().enumerate().map(|(i, t)| (t.clone(), i.into())).collect();
    if ids.len() != VOCAB_SIZE {
        return Err(bad(format!("the merges give {} distinct tokens, not {VOCAB_SIZE}", ids.len())));
    }
    let special = |id: usize, content: &str| {
        serde_json::json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
            "normalized": false, "special": true})
    };
    let (start, end) = (VOCAB_SIZE - 2, VOCAB_SIZE - 1);
    let piece = |id: &str| serde_json::json!({"SpecialToken": {"id": id, "type_id": 0}});
    let json = serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": {"strategy": "BatchLongest", "direction": "Right", "pad_to_multiple_of": null, "pad_id": 0,
            "pad_type_id": 0, "pad_token": vocab[0]},
        "added_tokens": [special(start, START), special(end, END)],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFC"},
            {"type": "Replace", "pattern": {"Regex": r"\s+"}, "content": " "},
            {"type": "Lowercase"}]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": WORDS}, "behavior": "Removed", "invert": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]},
        "post_processor": {"type": "TemplateProcessing",
            "single": [piece(START), {"Sequence": {"id": "A", "type_id": 0}}, piece(END)],
            "pair": [piece(START), {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 0}}, piece(END)],
            "special_tokens": {
                START: {"id": START, "ids": [start], "tokens": [START]},
                END: {"id": END, "ids": [end], "tokens": [END]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
            {"type": "Replace", "pattern": {"String": "</w>"}, "content": " "},
            {"type": "Strip", "content": " ", "start": 0, "stop": 1}]},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": "</w>", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": ids, "merges": merges},
    });
    json.to_string().parse().map_err(|e| bad(format!("building the tokenizer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_characters_are_gpt2s() {
        let c = byte_chars();
        assert_eq!(c.len(), 256);
        assert_eq!(c[0], '!');
        // the first byte that is not printable, 0x00, becomes U+0100; the space becomes U+0120
        assert_eq!(c[188], '\u{100}');
        let space = c.iter().position(|&x| x == '\u{120}').unwrap();
        assert_eq!(space, 188 + 32);
    }

    #[test]
    fn a_short_merges_file_is_refused_by_name() {
        let err = tokenizer("#version: 0.2\ni n\n", "vocab.txt").unwrap_err().to_string();
        assert!(err.contains("vocab.txt") && err.contains("merges"), "{err}");
    }
}
