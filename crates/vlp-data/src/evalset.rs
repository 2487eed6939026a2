//! A retrieval evaluation set: images, distinct texts and graded qrels both ways. Read from a
//! built data set split, or made from any input by pairing each caption with its image.

use crate::dataset::{read_qrels, DatasetDir, Direction, TextRecord};
use crate::sample::Sample;
use crate::skip::SkipLog;
use crate::source::{self, ReadOptions};
use crate::{DataError, Result};
use std::collections::HashMap;

#[derive(Debug, Clone)]
pub struct EvalSet {
    /// Images in input order; `key` is the image id used in qrels and runs.
    pub images: Vec<Sample>,
    pub texts: Vec<TextRecord>,
    /// `(text id, image id, grade)`
    pub t2i: Vec<(String, String, i32)>,
    /// `(image id, text id, grade)`
    pub i2t: Vec<(String, String, i32)>,
    pub skipped: SkipLog,
}

impl EvalSet {
    /// Loads `split` of a built data set, or pairs captions with images for any other input.
    pub fn load(input: &str, split: &str, opts: &ReadOptions) -> Result<EvalSet> {
        let path = std::path::Path::new(input);
        if path.is_dir() && path.join(crate::dataset::DATASET_FILE).is_file() {
            return Self::from_dataset(&DatasetDir::new(path), split, opts);
        }
        Self::from_pairs(input, opts)
    }

    fn read_samples(input: &str, split: Option<&str>, opts: &ReadOptions) -> Result<(Vec<Sample>, SkipLog)> {
        let mut log = SkipLog::new();
        let mut images = Vec::new();
        for item in source::open(input, split, opts)? {
            match item {
                Ok(s) => images.push(s),
                Err(skip) => skip.record_in(&mut log),
            }
        }
        Ok((images, log))
    }

    pub fn from_dataset(dir: &DatasetDir, split: &str, opts: &ReadOptions) -> Result<EvalSet> {
        let (images, skipped) = Self::read_samples(&dir.root().display().to_string(), Some(split), opts)?;
        let texts_path = dir.texts(split);
        let texts = std::fs::read_to_string(&texts_path)
            .map_err(|e| DataError::io(&texts_path, e))?
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).map_err(|e| DataError::input(texts_path.display(), e.to_string())))
            .collect::<Result<Vec<TextRecord>>>()?;
        Ok(EvalSet {
            images,
            texts,
            t2i: read_qrels(&dir.qrels(split, Direction::T2i))?,
            i2t: read_qrels(&dir.qrels(split, Direction::I2t))?,
            skipped,
        })
    }

    /// Every distinct caption is a text; grade 2 links it with each image it captions.
    pub fn from_pairs(input: &str, opts: &ReadOptions) -> Result<EvalSet> {
        let (images, skipped) = Self::read_samples(input, None, opts)?;
        let mut texts: Vec<TextRecord> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let (mut t2i, mut i2t) = (Vec::new(), Vec::new());
        for img in &images {
            for c in &img.captions {
                let i = *index.entry(c.text.clone()).or_insert_with(|| {
                    texts.push(TextRecord {
                        id: format!("t{:06}", texts.len()),
                        text: c.text.clone(),
                        lang: c.lang.clone(),
                        field: c.field.clone(),
                    });
                    texts.len() - 1
                });
                t2i.push((texts[i].id.clone(), img.key.clone(), 2));
                i2t.push((img.key.clone(), texts[i].id.clone(), 2));
            }
        }
        Ok(EvalSet { images, texts, t2i, i2t, skipped })
    }

    /// Qrels of one direction keeping only grades ≥ `min_grade` (R@k "grade 2" uses 2).
    pub fn qrels(&self, direction: Direction, min_grade: i32) -> Vec<(String, String, i32)> {
        let src = match direction {
            Direction::T2i => &self.t2i,
            Direction::I2t => &self.i2t,
        };
        src.iter().filter(|(_, _, g)| *g >= min_grade).cloned().collect()
    }
}
