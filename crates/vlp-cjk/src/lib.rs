//! Which characters belong to the scripts written without spaces between words: CJK ideographs,
//! kana, hangul, and CJK and full-width punctuation.
//!
//! Two crates need the same answer and nothing else from each other: `vlp-data`'s tokenizer
//! (every CJK character its own token, spaces between CJK characters dropped) and `vlp-index`'s
//! caption analyser (CJK runs indexed as characters and bigrams). Kept apart so the index does
//! not depend on the data crate, its image decoders and its tokenizer.

/// True for CJK ideographs (and extensions), kana, hangul syllables, CJK symbols and
/// punctuation, and full-width forms.
pub fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x3000..=0x303F | 0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xAC00..=0xD7AF
        | 0xF900..=0xFAFF | 0xFF00..=0xFFEF | 0x20000..=0x2FA1F)
}

#[cfg(test)]
mod tests {
    use super::is_cjk;

    #[test]
    fn scripts_without_spaces_and_their_punctuation() {
        for c in ['中', '蓝', 'ひ', 'カ', '한', '。', '，', '！', '𠀀'] {
            assert!(is_cjk(c), "{c}");
        }
        for c in ['a', 'é', ' ', '1', '.', 'Ω', '😀'] {
            assert!(!is_cjk(c), "{c}");
        }
    }
}
