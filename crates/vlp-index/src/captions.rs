//! Captions and keywords in a tantivy index, searched with BM25.
//!
//! Text is analysed here, not by a tantivy tokenizer: words of alphabetic scripts are lower-cased
//! and split on anything that is not a letter or digit; runs of CJK characters, written without
//! spaces, become their single characters and their character bigrams (as Lucene's CJK
//! analyser), so "红色圆形" matches "圆形" and "红". Tantivy then sees tokens separated by
//! spaces. Queries go through the same analysis and become a disjunction of terms, so no user
//! input is parsed as query syntax.

use crate::{IndexError, Result};
use std::path::Path;
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, FAST, STORED};
use tantivy::tokenizer::{TextAnalyzer, WhitespaceTokenizer};
use tantivy::{doc, Index, IndexReader, TantivyDocument, Term};
use vlp_cjk::is_cjk;

const ANALYZER: &str = "vlp_words_and_cjk_bigrams";

/// The tokens of `text`, in order.
pub fn analyze(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut cjk: Vec<char> = Vec::new();
    let flush_cjk = |cjk: &mut Vec<char>, out: &mut Vec<String>| {
        for (i, c) in cjk.iter().enumerate() {
            out.push(c.to_string());
            if let Some(next) = cjk.get(i + 1) {
                out.push(format!("{c}{next}"));
            }
        }
        cjk.clear();
    };
    for c in text.chars() {
        if is_cjk(c) && c.is_alphanumeric() {
            if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
            cjk.push(c);
        } else if c.is_alphanumeric() {
            flush_cjk(&mut cjk, &mut out);
            word.extend(c.to_lowercase());
        } else {
            flush_cjk(&mut cjk, &mut out);
            if !word.is_empty() {
                out.push(std::mem::take(&mut word));
            }
        }
    }
    flush_cjk(&mut cjk, &mut out);
    if !word.is_empty() {
        out.push(word);
    }
    out
}

pub struct CaptionIndex {
    index: Index,
    reader: IndexReader,
    text: Field,
    row: Field,
}

fn schema() -> (Schema, Field, Field) {
    let mut b = Schema::builder();
    let indexing = TextFieldIndexing::default().set_tokenizer(ANALYZER).set_index_option(IndexRecordOption::WithFreqsAndPositions);
    let text = b.add_text_field("text", TextOptions::default().set_indexing_options(indexing));
    let row = b.add_u64_field("row", STORED | FAST);
    (b.build(), text, row)
}

fn tv(dir: &Path, e: impl std::fmt::Display) -> IndexError {
    IndexError::Corrupt { path: dir.display().to_string(), message: format!("caption index: {e}") }
}

fn register(index: &Index) {
    index.tokenizers().register(ANALYZER, TextAnalyzer::builder(WhitespaceTokenizer::default()).build());
}

impl CaptionIndex {
    /// Indexes one document per row: all of the row's texts (captions, keywords, title).
    pub fn build(dir: &Path, docs: impl Iterator<Item = (usize, String)>) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| IndexError::io(dir, e))?;
        let (schema, text, row) = schema();
        let index = Index::create_in_dir(dir, schema).map_err(|e| tv(dir, e))?;
        register(&index);
        let mut writer: tantivy::IndexWriter = index.writer_with_num_threads(1, 64_000_000).map_err(|e| tv(dir, e))?;
        for (r, t) in docs {
            writer.add_document(doc!(text => analyze(&t).join(" "), row => r as u64)).map_err(|e| tv(dir, e))?;
        }
        writer.commit().map_err(|e| tv(dir, e))?;
        writer.wait_merging_threads().map_err(|e| tv(dir, e))?;
        Self::open(dir)
    }

    pub fn open(dir: &Path) -> Result<Self> {
        let index = Index::open_in_dir(dir).map_err(|e| tv(dir, e))?;
        register(&index);
        let (_, text, row) = schema();
        if index.schema().get_field("text").ok() != Some(text) || index.schema().get_field("row").ok() != Some(row) {
            return Err(tv(dir, "written by another version (fields differ)"));
        }
        let reader = index.reader().map_err(|e| tv(dir, e))?;
        Ok(CaptionIndex { index, reader, text, row })
    }

    pub fn len(&self) -> u64 {
        self.reader.searcher().num_docs()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows by BM25, best first, among those `keep` accepts. A query with no indexable
    /// characters matches nothing.
    pub fn search(&self, query: &str, k: usize, keep: &dyn Fn(usize) -> bool) -> Result<Vec<(usize, f32)>> {
        let terms = analyze(query);
        if terms.is_empty() || k == 0 {
            return Ok(Vec::new());
        }
        let clauses: Vec<(Occur, Box<dyn Query>)> = terms
            .iter()
            .map(|t| {
                let q: Box<dyn Query> = Box::new(TermQuery::new(Term::from_field_text(self.text, t), IndexRecordOption::WithFreqs));
                (Occur::Should, q)
            })
            .collect();
        let q = BooleanQuery::new(clauses);
        let searcher = self.reader.searcher();
        let total = searcher.num_docs() as usize;
        // over-fetch until k rows pass the filter or every match has been seen
        let mut fetch = k.max(10);
        loop {
            let top = searcher.search(&q, &TopDocs::with_limit(fetch).order_by_score()).map_err(|e| tv(Path::new("captions"), e))?;
            let exhausted = top.len() < fetch || fetch >= total;
            let mut out = Vec::new();
            for (score, addr) in &top {
                let d: TantivyDocument = searcher.doc(*addr).map_err(|e| tv(Path::new("captions"), e))?;
                let r = d.get_first(self.row).and_then(|v| v.as_u64()).ok_or_else(|| tv(Path::new("captions"), "document without a row"))?
                    as usize;
                if keep(r) {
                    out.push((r, *score));
                }
            }
            if out.len() >= k || exhausted {
                out.truncate(k);
                return Ok(out);
            }
            fetch = (fetch * 4).min(total.max(1));
        }
    }

    pub fn tantivy(&self) -> &Index {
        &self.index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn analysis_splits_words_and_makes_cjk_bigrams() {
        assert_eq!(analyze("A Red-Circle, 2x!"), ["a", "red", "circle", "2x"]);
        assert_eq!(analyze("红色圆形"), ["红", "红色", "色", "色圆", "圆", "圆形", "形"]);
        assert_eq!(analyze("免费 button"), ["免", "免费", "费", "button"]);
        assert!(analyze("  ,.!  ").is_empty());
    }

    #[test]
    fn bm25_finds_english_and_chinese_and_filters() {
        let dir = tempfile::tempdir().unwrap();
        let docs = ["a red circle | 一个红色圆形", "a blue square | 一个蓝色正方形", "a red square | 红色正方形", "free button | 免费按钮"];
        let idx = CaptionIndex::build(dir.path(), docs.iter().enumerate().map(|(i, d)| (i, d.to_string()))).unwrap();
        assert_eq!(idx.len(), 4);
        let rows = |q: &str, keep: &dyn Fn(usize) -> bool| idx.search(q, 10, keep).unwrap().into_iter().map(|h| h.0).collect::<Vec<_>>();
        assert_eq!(rows("red circle", &|_| true)[0], 0);
        // a disjunction of characters and bigrams: both squares first, the circle (形) after
        let mut squares = rows("正方形", &|_| true)[..2].to_vec();
        squares.sort();
        assert_eq!(squares, [1, 2]);
        assert_eq!(rows("免费", &|_| true), [3]);
        assert_eq!(rows("red", &|r| r != 0), [2]);
        assert!(rows("AND OR \"( title:", &|_| true).is_empty());
        let reopened = CaptionIndex::open(dir.path()).unwrap();
        assert_eq!(reopened.search("蓝色", 5, &|_| true).unwrap()[0].0, 1);
    }
}
