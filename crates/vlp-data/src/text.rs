//! Text: train a WordPiece (BERT-Chinese style, every CJK character its own token) or byte-level
//! BPE (CLIP style) vocabulary with `tokenizers`, or load any `tokenizer.json`; encode to a fixed
//! context length with an attention mask.

use crate::{DataError, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::wordpiece::{WordPiece, WordPieceTrainerBuilder};
use tokenizers::models::TrainerWrapper;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::normalizers::{Lowercase, NormalizerWrapper, Sequence, NFC};
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::Model;
use tokenizers::{
    AddedToken, NormalizedString, Normalizer, OffsetReferential, OffsetType, PaddingParams, PaddingStrategy, PreTokenizedString,
    PreTokenizer, Tokenizer, TruncationParams,
};

/// Which vocabulary `vlp tokenizer train` learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VocabKind {
    /// BERT-style: lower-cased, punctuation split, every CJK character split (as BERT-Chinese).
    WordPiece,
    /// CLIP/GPT-2-style byte-level BPE: no unknown tokens, any script round-trips.
    Bpe,
}

const WORDPIECE_SPECIALS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
const BPE_SPECIALS: [&str; 3] = ["<pad>", "<|startoftext|>", "<|endoftext|>"];

/// A tokenizer bound to a context length: every encoding has exactly `context` ids.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    context: usize,
    pad_id: u32,
}

/// Token ids and attention mask for a batch: both `[batch, context]`, row-major.
///
/// `context` is the batch's own width: its longest encoding rounded up to a multiple of
/// [`EncodedBatch::COLUMN_STEP`], never more than the tokenizer's context length. Padding past the
/// longest text changes nothing a text tower computes (pads sit at the end and are masked or, in
/// a causal tower, never looked back at), yet costs as much as real tokens: captions of 10 tokens
/// in a 32-token context spent two thirds of the text tower on padding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EncodedBatch {
    pub ids: Vec<u32>,
    /// 1 for a real token, 0 for padding.
    pub mask: Vec<u32>,
    pub context: usize,
}

impl EncodedBatch {
    /// Widths are multiples of this, so a GPU backend meets few distinct shapes.
    pub const COLUMN_STEP: usize = 8;

    pub fn len(&self) -> usize {
        self.ids.len().checked_div(self.context).unwrap_or(0)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn tk_err(e: impl std::fmt::Display) -> DataError {
    DataError::Tokenizer(e.to_string())
}

/// BERT-Chinese's pipeline around a WordPiece model: clean text, a space around every CJK
/// character, no accent stripping (it would damage other scripts), lower case; `[CLS] $A [SEP]`.
fn bert_tokenizer(model: WordPiece, normalizer: BertNormalizer) -> Result<Tokenizer> {
    let mut tk = Tokenizer::new(model);
    tk.with_normalizer(Some(normalizer));
    tk.with_pre_tokenizer(Some(BertPreTokenizer));
    tk.with_decoder(Some(WordPieceDecoder::default()));
    let specials: Vec<AddedToken> = WORDPIECE_SPECIALS.iter().map(|s| AddedToken::from(*s, true)).collect();
    tk.add_special_tokens(&specials);
    if let (Some(cls), Some(sep)) = (tk.token_to_id("[CLS]"), tk.token_to_id("[SEP]")) {
        tk.with_post_processor(Some(template("[CLS]", cls, "[SEP]", sep)?));
    }
    Ok(tk)
}

fn bert_normalizer() -> BertNormalizer {
    BertNormalizer::new(true, true, Some(false), true)
}

/// The characters that occur after the first position of a word, once normalised and split
/// as BERT does, in code point order.
fn continuing_chars<'a>(texts: impl Iterator<Item = &'a str>) -> Result<std::collections::BTreeSet<char>> {
    let norm = bert_normalizer();
    let mut chars = std::collections::BTreeSet::new();
    for text in texts {
        let mut n = NormalizedString::from(text);
        norm.normalize(&mut n).map_err(tk_err)?;
        let mut words = PreTokenizedString::from(n);
        BertPreTokenizer.pre_tokenize(&mut words).map_err(tk_err)?;
        for (word, _, _) in words.get_splits(OffsetReferential::Original, OffsetType::Char) {
            chars.extend(word.chars().skip(1));
        }
    }
    Ok(chars)
}

/// The trained WordPiece vocabulary with ids that depend only on its tokens: the special tokens
/// first, then the rest in byte order. `tokenizers` numbers merged tokens of equal frequency in
/// hash-map order, so two trainings on the same captions gave different ids (and a seeded run
/// could not be repeated).
fn canonical_wordpiece(tk: &Tokenizer) -> Result<WordPiece> {
    let mut rest: Vec<String> = tk.get_vocab(false).into_keys().filter(|t| !WORDPIECE_SPECIALS.contains(&t.as_str())).collect();
    rest.sort();
    let vocab: serde_json::Map<String, serde_json::Value> =
        WORDPIECE_SPECIALS.iter().map(|s| s.to_string()).chain(rest).enumerate().map(|(i, t)| (t, i.into())).collect();
    // through serde, as the builder wants the crate's own hash map type
    let model = serde_json::json!({"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
        "max_input_chars_per_word": 100, "vocab": vocab});
    serde_json::from_str(&model.to_string()).map_err(tk_err)
}

impl TextTokenizer {
    /// Learns a vocabulary of at most `vocab_size` tokens from `texts`.
    pub fn train<I, S>(kind: VocabKind, vocab_size: usize, texts: I, context: usize) -> Result<Self>
    where
        I: Iterator<Item = S> + Send,
        S: AsRef<str> + Send,
    {
        let mut tk = match kind {
            VocabKind::WordPiece => {
                let texts: Vec<S> = texts.collect();
                // Every character that continues a word enters the vocabulary as `##c` up front:
                // `tokenizers` otherwise numbers them in hash-map order, which changes which of
                // two equally frequent pairs is merged, and with it the whole vocabulary.
                let mut specials: Vec<String> = WORDPIECE_SPECIALS.iter().map(|s| s.to_string()).collect();
                specials.extend(continuing_chars(texts.iter().map(|t| t.as_ref()))?.into_iter().map(|c| format!("##{c}")));
                let trainer = WordPieceTrainerBuilder::default()
                    .vocab_size(vocab_size.max(specials.len()))
                    .min_frequency(1)
                    .special_tokens(specials.into_iter().map(|s| AddedToken::from(s, true)).collect())
                    .show_progress(false)
                    .build();
                let mut trainer: TrainerWrapper = trainer.into();
                let mut tk = bert_tokenizer(WordPiece::builder().unk_token("[UNK]".into()).build().map_err(tk_err)?, bert_normalizer())?;
                tk.train(&mut trainer, texts.into_iter()).map_err(tk_err)?;
                bert_tokenizer(canonical_wordpiece(&tk)?, bert_normalizer())?
            }
            VocabKind::Bpe => {
                let mut tk = Tokenizer::new(BPE::default());
                let norm: Vec<NormalizerWrapper> = vec![NFC.into(), Lowercase.into()];
                tk.with_normalizer(Some(Sequence::new(norm)));
                tk.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
                tk.with_decoder(Some(ByteLevelDecoder::default()));
                let specials = BPE_SPECIALS.iter().map(|s| AddedToken::from(*s, true)).collect();
                let trainer = BpeTrainerBuilder::default()
                    .vocab_size(vocab_size)
                    .min_frequency(1)
                    .special_tokens(specials)
                    .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
                    .show_progress(false)
                    .build();
                let mut trainer: TrainerWrapper = trainer.into();
                tk.train(&mut trainer, texts).map_err(tk_err)?;
                let (sot, eot) = (id_of(&tk, "<|startoftext|>")?, id_of(&tk, "<|endoftext|>")?);
                tk.with_post_processor(Some(template("<|startoftext|>", sot, "<|endoftext|>", eot)?));
                tk
            }
        };
        // The trained vocabulary is stored without padding/truncation: those belong to the model's
        // context length, which is set at load time.
        tk.with_padding(None);
        tk.with_truncation(None).map_err(tk_err)?;
        Self::from_tokenizer(tk, context)
    }

    /// Loads any `tokenizer.json` (ours, or one from a pretrained model).
    pub fn from_file(path: &Path, context: usize) -> Result<Self> {
        let tk = Tokenizer::from_file(path).map_err(|e| DataError::input(path.display(), e.to_string()))?;
        Self::from_tokenizer(tk, context)
    }

    /// OpenCLIP's own tokenizer from its merges file (`bpe_simple_vocab_16e6.txt.gz`); see
    /// [`crate::openclip_bpe`].
    pub fn openclip_bpe(merges: &Path, context: usize) -> Result<Self> {
        let text = crate::openclip_bpe::read_merges(merges)?;
        Self::from_tokenizer(crate::openclip_bpe::tokenizer(&text, &merges.display().to_string())?, context)
    }

    /// A published BERT vocabulary (`vocab.txt`, one token per line: Chinese-CLIP's
    /// RoBERTa-wwm-ext, BERT-Chinese) with Google BERT's uncased tokenizer around it, as
    /// Chinese-CLIP's `FullTokenizer(do_lower_case=True)` runs it: control characters dropped,
    /// a space around every CJK character, lower case with accents stripped, punctuation split,
    /// WordPiece with words of up to 200 characters; `[CLS] … [SEP]`, padded with `[PAD]`.
    pub fn bert_vocab(vocab: &Path, context: usize) -> Result<Self> {
        let path = vocab.display().to_string();
        let model = WordPiece::from_file(&path)
            .unk_token("[UNK]".into())
            .max_input_chars_per_word(200)
            .build()
            .map_err(|e| DataError::input(&path, format!("not a WordPiece vocabulary (one token per line): {e}")))?;
        for t in WORDPIECE_SPECIALS {
            if !model.get_vocab().contains_key(t) && t != "[MASK]" {
                return Err(DataError::input(&path, format!("has no {t} token: not a BERT vocabulary")));
            }
        }
        let mut tk = bert_tokenizer(model, BertNormalizer::new(true, true, None, true))?;
        let pad = tk.token_to_id("[PAD]").expect("checked above");
        tk.with_padding(Some(PaddingParams { pad_id: pad, pad_token: "[PAD]".into(), ..Default::default() }));
        Self::from_tokenizer(tk, context)
    }

    pub fn from_json(json: &str, context: usize) -> Result<Self> {
        let tk: Tokenizer = json.parse().map_err(tk_err)?;
        Self::from_tokenizer(tk, context)
    }

    fn from_tokenizer(mut inner: Tokenizer, context: usize) -> Result<Self> {
        if context < 2 {
            return Err(DataError::Tokenizer(format!("context length {context} is too short")));
        }
        let pad_id = match inner.get_padding() {
            Some(p) => p.pad_id,
            None => ["[PAD]", "<pad>", "<|endoftext|>", "</s>"].iter().find_map(|t| inner.token_to_id(t)).unwrap_or(0),
        };
        let pad_token = inner.id_to_token(pad_id).unwrap_or_else(|| "[PAD]".into());
        inner.with_padding(Some(PaddingParams { strategy: PaddingStrategy::Fixed(context), pad_id, pad_token, ..Default::default() }));
        inner.with_truncation(Some(TruncationParams { max_length: context, ..Default::default() })).map_err(tk_err)?;
        Ok(TextTokenizer { inner, context, pad_id })
    }

    pub fn context(&self) -> usize {
        self.context
    }
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The tokenizer as `tokenizer.json` text (what checkpoints store).
    pub fn to_json(&self) -> Result<String> {
        self.inner.to_string(false).map_err(tk_err)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let json = self.inner.to_string(true).map_err(tk_err)?;
        vlp_atomic::write(path, json.as_bytes()).map_err(|e| DataError::io(path, e))
    }

    /// Encodes a batch: ids and mask, `[batch, context]` each.
    pub fn encode_batch<S: AsRef<str> + Send + Sync>(&self, texts: &[S]) -> Result<EncodedBatch> {
        let inputs: Vec<&str> = texts.iter().map(AsRef::as_ref).collect();
        let encs = self.inner.encode_batch(inputs, true).map_err(tk_err)?;
        let longest = encs.iter().map(|e| e.get_attention_mask().iter().filter(|&&m| m == 1).count()).max().unwrap_or(0);
        let width = longest.max(1).next_multiple_of(EncodedBatch::COLUMN_STEP).min(self.context);
        let mut out = EncodedBatch { ids: Vec::with_capacity(encs.len() * width), mask: Vec::new(), context: width };
        out.mask.reserve(encs.len() * width);
        for e in &encs {
            debug_assert_eq!(e.get_ids().len(), self.context);
            out.ids.extend_from_slice(&e.get_ids()[..width]);
            out.mask.extend_from_slice(&e.get_attention_mask()[..width]);
        }
        Ok(out)
    }

    /// Token strings of one text (for inspection and tests).
    pub fn tokens(&self, text: &str) -> Result<Vec<String>> {
        let e = self.inner.encode(text, true).map_err(tk_err)?;
        Ok(e.get_tokens().iter().zip(e.get_attention_mask()).filter(|(_, m)| **m == 1).map(|(t, _)| t.clone()).collect())
    }

    /// Decodes ids back to text; pads and special tokens are dropped, and the spaces a WordPiece
    /// decoder puts between CJK characters are removed again.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let text = self.inner.decode(ids, true).map_err(tk_err)?;
        Ok(join_cjk(text.trim()))
    }
}

fn id_of(tk: &Tokenizer, token: &str) -> Result<u32> {
    tk.token_to_id(token).ok_or_else(|| DataError::Tokenizer(format!("trained vocabulary lacks {token}")))
}

fn template(bos: &str, bos_id: u32, eos: &str, eos_id: u32) -> Result<TemplateProcessing> {
    TemplateProcessing::builder()
        .try_single(format!("{bos} $A {eos}"))
        .map_err(tk_err)?
        .special_tokens(vec![(bos, bos_id), (eos, eos_id)])
        .build()
        .map_err(tk_err)
}

pub use vlp_cjk::is_cjk;

/// Removes a space whose neighbours are both CJK, or CJK and punctuation.
fn join_cjk(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    for (i, &c) in chars.iter().enumerate() {
        if c == ' ' && i > 0 && i + 1 < chars.len() {
            let (l, r) = (chars[i - 1], chars[i + 1]);
            let joinable = |a: char, b: char| is_cjk(a) && (is_cjk(b) || b.is_ascii_punctuation());
            if joinable(l, r) || joinable(r, l) {
                continue;
            }
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CORPUS: [&str; 6] = [
        "a small red circle to the left of a large blue square",
        "a large green triangle above a small yellow circle",
        "一个小的红色圆形在一个大的蓝色正方形左边",
        "一个大的绿色三角形在一个小的黄色圆形上面",
        "一個小的紅色圓形在一個大的藍色正方形左邊",
        "兩隻貓在沙發上睡覺，天氣很好。",
    ];

    #[test]
    fn wordpiece_round_trips_english_and_both_chineses() {
        let tk = TextTokenizer::train(VocabKind::WordPiece, 400, CORPUS.iter(), 32).unwrap();
        for text in CORPUS {
            let enc = tk.encode_batch(&[text]).unwrap();
            assert_eq!(enc.ids.len(), enc.context);
            assert_eq!(tk.decode(&enc.ids).unwrap(), text, "ids {:?}", enc.ids);
        }
        // every CJK character is its own token, as in BERT-Chinese
        let toks = tk.tokens("红色圆形").unwrap();
        assert_eq!(toks, vec!["[CLS]", "红", "色", "圆", "形", "[SEP]"]);
    }

    #[test]
    fn bpe_round_trips_any_script() {
        let tk = TextTokenizer::train(VocabKind::Bpe, 600, CORPUS.iter(), 64).unwrap();
        for text in CORPUS {
            let enc = tk.encode_batch(&[text]).unwrap();
            assert_eq!(tk.decode(&enc.ids).unwrap(), text);
        }
    }

    #[test]
    fn pads_truncates_and_masks() {
        let tk = TextTokenizer::train(VocabKind::WordPiece, 400, CORPUS.iter(), 8).unwrap();
        let enc = tk.encode_batch(&["red", CORPUS[0]]).unwrap();
        assert_eq!(enc.len(), 2);
        assert_eq!(&enc.mask[..8], &[1, 1, 1, 0, 0, 0, 0, 0]);
        assert!(enc.ids[3..8].iter().all(|&i| i == tk.pad_id()));
        assert_eq!(&enc.mask[8..], &[1; 8]);
        // truncation keeps the closing [SEP]
        assert_eq!(enc.ids[15], tk.inner.token_to_id("[SEP]").unwrap());
    }

    #[test]
    fn a_batch_is_as_wide_as_its_longest_text_in_steps_of_eight() {
        let tk = TextTokenizer::train(VocabKind::WordPiece, 400, CORPUS.iter(), 32).unwrap();
        let texts = ["红色", "a small red circle to the left of"];
        let full: Vec<_> = texts.iter().map(|t| tk.inner.encode(*t, true).unwrap()).collect();
        let real = |e: &tokenizers::Encoding| e.get_attention_mask().iter().sum::<u32>() as usize;
        let longest = full.iter().map(real).max().unwrap();
        let enc = tk.encode_batch(&texts).unwrap();
        let w = enc.context;
        assert_eq!(enc.len(), 2);
        assert!(w >= longest && w < longest + 8 && w.is_multiple_of(8), "width {w} for a longest text of {longest}");
        for (row, e) in full.iter().enumerate() {
            assert_eq!(&enc.ids[row * w..(row + 1) * w], &e.get_ids()[..w]);
            assert_eq!(&enc.mask[row * w..(row + 1) * w], &e.get_attention_mask()[..w]);
            // only padding was cut off
            assert!(e.get_attention_mask()[w..].iter().all(|&m| m == 0));
        }
        assert_eq!(enc.mask[..w].iter().sum::<u32>(), 4, "[CLS] 红 色 [SEP]");
        // never wider than the context, even when that is not a multiple of the step
        let tk = TextTokenizer::train(VocabKind::WordPiece, 400, CORPUS.iter(), 12).unwrap();
        assert_eq!(tk.encode_batch(&[CORPUS[0]]).unwrap().context, 12);
        assert_eq!(tk.encode_batch(&[""]).unwrap().context, 8);
    }

    #[test]
    fn training_twice_gives_the_same_ids() {
        for kind in [VocabKind::WordPiece, VocabKind::Bpe] {
            let a = TextTokenizer::train(kind, 300, CORPUS.iter(), 32).unwrap();
            for _ in 0..4 {
                let b = TextTokenizer::train(kind, 300, CORPUS.iter(), 32).unwrap();
                assert_eq!(a.to_json().unwrap(), b.to_json().unwrap(), "{kind:?}");
            }
        }
    }

    #[test]
    fn saved_tokenizer_loads_back_identically() {
        let tk = TextTokenizer::train(VocabKind::WordPiece, 400, CORPUS.iter(), 16).unwrap();
        let again = TextTokenizer::from_json(&tk.to_json().unwrap(), 16).unwrap();
        assert_eq!(tk.encode_batch(&CORPUS).unwrap(), again.encode_batch(&CORPUS).unwrap());
    }
}
