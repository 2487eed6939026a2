//! TREC qrels (`qid 0 docid grade`) and runs (`qid Q0 docid rank score tag`).

use crate::{EvalError, Result};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;

/// Graded judgements per query. Query ids are strings (`2` and `02` differ).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Qrels {
    queries: BTreeMap<String, HashMap<String, i32>>,
}

impl Qrels {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, qid: &str, docid: &str, grade: i32) {
        self.queries.entry(qid.to_string()).or_default().insert(docid.to_string(), grade);
    }

    pub fn parse(text: &str, name: &str) -> Result<Qrels> {
        let mut q = Qrels::new();
        for (n, line) in text.lines().enumerate() {
            let mut f = line.split_ascii_whitespace();
            let Some(qid) = f.next() else { continue };
            let (Some(_iter), Some(docid), Some(grade)) = (f.next(), f.next(), f.next()) else {
                return Err(parse_err(name, n, "expected 'qid iter docid grade'"));
            };
            let grade: i32 = grade.parse().map_err(|_| parse_err(name, n, &format!("grade '{grade}' is not an integer")))?;
            q.insert(qid, docid, grade);
        }
        Ok(q)
    }

    pub fn read(path: &Path) -> Result<Qrels> {
        Self::parse(&read_text(path)?, &path.display().to_string())
    }

    /// The judgements of one query.
    pub fn query(&self, qid: &str) -> Option<&HashMap<String, i32>> {
        self.queries.get(qid)
    }

    /// Query ids in byte order.
    pub fn query_ids(&self) -> impl Iterator<Item = &str> {
        self.queries.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.queries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.queries.is_empty()
    }

    pub fn to_trec(&self) -> String {
        let mut s = String::new();
        for (q, docs) in &self.queries {
            let mut docs: Vec<_> = docs.iter().collect();
            docs.sort();
            for (d, g) in docs {
                let _ = writeln!(s, "{q} 0 {d} {g}");
            }
        }
        s
    }
}

/// What to do when a run lists the same document twice for one query. trec_eval refuses such a
/// run; the other policies keep one of the two entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DuplicatePolicy {
    #[default]
    Error,
    First,
    Last,
    Max,
}

/// Ranked results per query, ranked as trec_eval ranks them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Run {
    queries: BTreeMap<String, Vec<(String, f32)>>,
    pub tag: String,
}

impl Run {
    pub fn new(tag: &str) -> Self {
        Run { queries: BTreeMap::new(), tag: tag.to_string() }
    }

    /// Adds a query's results (any order) and ranks them. Scores are stored as `f32`, as
    /// trec_eval stores them, so scores that differ only beyond float precision tie.
    pub fn insert_query(&mut self, qid: &str, results: Vec<(String, f32)>) {
        let mut results = results;
        rank(&mut results);
        self.queries.insert(qid.to_string(), results);
    }

    pub fn parse(text: &str, name: &str, policy: DuplicatePolicy) -> Result<Run> {
        // Per query: docid → (score, line) so duplicates can follow the policy.
        let mut raw: BTreeMap<&str, HashMap<&str, f32>> = BTreeMap::new();
        let mut tag = String::new();
        for (n, line) in text.lines().enumerate() {
            let mut f = line.split_ascii_whitespace();
            let Some(qid) = f.next() else { continue };
            let (Some(_q0), Some(docid), Some(_rank), Some(score)) = (f.next(), f.next(), f.next(), f.next()) else {
                return Err(parse_err(name, n, "expected 'qid Q0 docid rank score tag'"));
            };
            if tag.is_empty() {
                tag = f.next().unwrap_or("").to_string();
            }
            let score: f64 = score.parse().map_err(|_| parse_err(name, n, &format!("score '{score}' is not a number")))?;
            let score = score as f32;
            let docs = raw.entry(qid).or_default();
            match docs.entry(docid) {
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(score);
                }
                std::collections::hash_map::Entry::Occupied(mut o) => match policy {
                    DuplicatePolicy::Error => {
                        return Err(parse_err(name, n, &format!("duplicate run entry {qid} {docid}")));
                    }
                    DuplicatePolicy::First => {}
                    DuplicatePolicy::Last => {
                        o.insert(score);
                    }
                    DuplicatePolicy::Max => {
                        if score > *o.get() {
                            o.insert(score);
                        }
                    }
                },
            }
        }
        let mut run = Run::new(&tag);
        for (qid, docs) in raw {
            run.insert_query(qid, docs.into_iter().map(|(d, s)| (d.to_string(), s)).collect());
        }
        Ok(run)
    }

    pub fn read(path: &Path, policy: DuplicatePolicy) -> Result<Run> {
        Self::parse(&read_text(path)?, &path.display().to_string(), policy)
    }

    /// A query's results, best first.
    pub fn query(&self, qid: &str) -> Option<&[(String, f32)]> {
        self.queries.get(qid).map(Vec::as_slice)
    }

    pub fn query_ids(&self) -> impl Iterator<Item = &str> {
        self.queries.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.queries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.queries.is_empty()
    }

    /// The run in TREC format, ranks numbered from 1 in trec_eval's order.
    pub fn to_trec(&self) -> String {
        let mut s = String::new();
        let tag = if self.tag.is_empty() { "vlp" } else { &self.tag };
        for (q, docs) in &self.queries {
            for (i, (d, score)) in docs.iter().enumerate() {
                let _ = writeln!(s, "{q} Q0 {d} {} {score} {tag}", i + 1);
            }
        }
        s
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        vlp_atomic::write(path, self.to_trec().as_bytes()).map_err(|e| io_err(path, e))
    }
}

/// trec_eval's order: score descending, then document id descending in byte order.
pub fn rank(results: &mut [(String, f32)]) {
    results.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| b.0.as_bytes().cmp(a.0.as_bytes())));
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| io_err(path, e))
}

fn io_err(path: &Path, source: std::io::Error) -> EvalError {
    EvalError::Io { path: path.display().to_string(), source }
}

fn parse_err(name: &str, line0: usize, message: &str) -> EvalError {
    EvalError::Parse { location: format!("{name}:{}", line0 + 1), message: message.to_string() }
}

/// Ranks every document for every query by a dense score matrix (`scores[q * docs + d]`) and
/// keeps the best `k`, in trec_eval's order: the exact (brute-force) run.
pub fn run_from_scores(tag: &str, query_ids: &[String], doc_ids: &[String], scores: &[f32], k: usize) -> Run {
    use rayon::prelude::*;
    assert_eq!(scores.len(), query_ids.len() * doc_ids.len(), "scores must be [queries, docs]");
    let n = doc_ids.len();
    let rows: Vec<(String, Vec<(String, f32)>)> = query_ids
        .par_iter()
        .enumerate()
        .map(|(q, qid)| {
            let row = &scores[q * n..(q + 1) * n];
            let mut order: Vec<usize> = (0..n).collect();
            let by_trec =
                |a: &usize, b: &usize| row[*b].total_cmp(&row[*a]).then_with(|| doc_ids[*b].as_bytes().cmp(doc_ids[*a].as_bytes()));
            if k < n {
                order.select_nth_unstable_by(k, by_trec);
                order.truncate(k);
            }
            order.sort_by(by_trec);
            (qid.clone(), order.into_iter().map(|d| (doc_ids[d].clone(), row[d])).collect())
        })
        .collect();
    let mut run = Run::new(tag);
    for (q, results) in rows {
        run.queries.insert(q, results);
    }
    run
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_break_by_docid_descending_bytes() {
        let mut r = vec![("d10".into(), 1.0), ("d9".into(), 1.0), ("d100".into(), 1.0), ("d2".into(), 1.0), ("z".into(), 0.5)];
        rank(&mut r);
        let ids: Vec<&str> = r.iter().map(|(d, _)| d.as_str()).collect();
        assert_eq!(ids, ["d9", "d2", "d100", "d10", "z"]);
    }

    #[test]
    fn run_round_trips_through_trec_text() {
        let run = Run::parse("q1 Q0 a 1 0.5 t\nq1 Q0 b 2 0.25 t\n", "x", DuplicatePolicy::Error).unwrap();
        assert_eq!(Run::parse(&run.to_trec(), "y", DuplicatePolicy::Error).unwrap().query("q1"), run.query("q1"));
    }
}
