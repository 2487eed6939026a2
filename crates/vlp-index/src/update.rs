//! Changing a built index without rebuilding it: items added are inserted into the loaded HNSW
//! graphs, so an addition costs the new rows, not the corpus; items deleted by id become
//! tombstones that no search returns. Both write the changed index beside the old one and swap
//! it in, as a build does.

use crate::ann::HnswGraph;
use crate::catalog::{write_index, BuildInput, IndexInfo, RetrievalIndex};
use crate::{IndexError, Result};
use std::collections::HashSet;

/// What an addition did.
#[derive(Debug, Clone, PartialEq)]
pub struct Added {
    pub items: usize,
    /// Texts already in the index (by id) are not added twice.
    pub texts: usize,
    pub texts_already_present: usize,
    pub info: IndexInfo,
}

impl RetrievalIndex {
    /// Adds `new`'s items and texts, embedded by this index's model.
    #[allow(clippy::should_implement_trait)] // `vlp index add`: not `+`, it writes the index's files
    pub fn add(self, new: BuildInput) -> Result<Added> {
        let path = self.dir.display().to_string();
        if new.model != self.info.model {
            return Err(IndexError::ModelMismatch { path, index: self.info.model.clone(), query: new.model });
        }
        let new_tokens = new.image_tokens.as_ref().map(|(shape, _)| *shape);
        if new.dim != self.info.dim || new_tokens != self.info.image_tokens {
            return Err(IndexError::Invalid(format!(
                "{path}: the new rows are {} wide with token shape {new_tokens:?}; the index's are {} wide with {:?}",
                new.dim, self.info.dim, self.info.image_tokens
            )));
        }
        let mut ids: HashSet<&str> = self.items.iter().map(|it| it.id.as_str()).collect();
        for it in &new.items {
            if !ids.insert(it.id.as_str()) {
                return Err(IndexError::Invalid(format!(
                    "{path}: item {:?} is already in the index (ids are never reused, deleted ones included)",
                    it.id
                )));
            }
        }
        let dim = self.info.dim;
        let precision = self.info.precision;
        // the graphs take the new vectors as they will be stored
        let new_image_vectors = precision.round(new.image_vectors);
        let new_text_vectors = precision.round(new.text_vectors);
        // the open index holds its graphs frozen for search; the growable ones are read again
        let mut image_graph = HnswGraph::load(&self.dir.join("images.hnsw"), self.image_vectors.rows(), dim, self.info.hnsw)?;
        let mut text_graph = HnswGraph::load(&self.dir.join("texts.hnsw"), self.text_vectors.rows(), dim, self.info.hnsw)?;
        if image_graph.len() != self.items.len() || text_graph.len() != self.texts.len() {
            return Err(IndexError::Corrupt { path, message: "the HNSW graphs changed since the index was opened".into() });
        }
        image_graph.insert(&new_image_vectors, dim);
        let known_texts: HashSet<&str> = self.texts.iter().map(|t| t.id.as_str()).collect();
        let mut texts = self.texts.clone();
        let mut text_vectors = self.text_vectors.to_f32().into_owned();
        let mut fresh_vectors = Vec::new();
        let mut present = 0;
        for (t, v) in new.texts.iter().zip(new_text_vectors.chunks(dim.max(1))) {
            if known_texts.contains(t.id.as_str()) {
                present += 1;
                continue;
            }
            texts.push(t.clone());
            fresh_vectors.extend_from_slice(v);
        }
        text_graph.insert(&fresh_vectors, dim);
        text_vectors.extend_from_slice(&fresh_vectors);
        let mut image_vectors = self.image_vectors.to_f32().into_owned();
        image_vectors.extend_from_slice(&new_image_vectors);
        let image_tokens = match (new.image_tokens, &self.image_tokens, self.info.image_tokens) {
            (Some((shape, values)), Some(store), Some(_)) => {
                let mut all = store.to_f32().into_owned();
                all.extend_from_slice(&values);
                Some((shape, all))
            }
            _ => None,
        };
        let mut items = self.items.clone();
        let added_items = new.items.len();
        items.extend(new.items);
        let added_texts = texts.len() - self.texts.len();
        let input = BuildInput {
            model: self.info.model.clone(),
            dim,
            hnsw: self.info.hnsw,
            items,
            image_vectors,
            texts,
            text_vectors,
            source: self.info.source.clone(),
            image_tokens,
            precision,
        };
        let info = write_index(&self.dir, input, Some((&mut image_graph, &mut text_graph)), self.info.deleted.clone())?;
        Ok(Added { items: added_items, texts: added_texts, texts_already_present: present, info })
    }

    /// Marks items deleted; returns the ids that are not in the index (nothing is done for them).
    pub fn delete(&self, ids: &[String]) -> Result<Vec<String>> {
        let present: HashSet<&str> = self.items.iter().map(|it| it.id.as_str()).collect();
        let (known, unknown): (Vec<&String>, Vec<&String>) = ids.iter().partition(|id| present.contains(id.as_str()));
        let mut info = self.info.clone();
        for id in known {
            if !info.deleted.contains(id) {
                info.deleted.push(id.clone());
            }
        }
        let path = self.dir.join("index.json");
        vlp_atomic::write(&path, serde_json::to_string_pretty(&info).expect("serialises").as_bytes())
            .map_err(|e| IndexError::io(&path, e))?;
        Ok(unknown.into_iter().cloned().collect())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::catalog::tests::input;
    use crate::catalog::{build, BuildInput, Mode, RetrievalIndex, SearchParams};

    /// Rows `from..` of a build input.
    pub(crate) fn tail(all: &BuildInput, from: usize) -> BuildInput {
        let d = all.dim;
        BuildInput {
            model: all.model.clone(),
            dim: d,
            hnsw: all.hnsw,
            items: all.items[from..].to_vec(),
            image_vectors: all.image_vectors[from * d..].to_vec(),
            texts: all.texts[from..].to_vec(),
            text_vectors: all.text_vectors[from * d..].to_vec(),
            source: all.source.clone(),
            image_tokens: all.image_tokens.as_ref().map(|(shape, tokens)| (*shape, tokens[from * shape[0] * shape[1]..].to_vec())),
            precision: all.precision,
        }
    }

    pub(crate) fn head(all: &BuildInput, to: usize) -> BuildInput {
        let d = all.dim;
        BuildInput {
            items: all.items[..to].to_vec(),
            image_vectors: all.image_vectors[..to * d].to_vec(),
            texts: all.texts[..to].to_vec(),
            text_vectors: all.text_vectors[..to * d].to_vec(),
            image_tokens: all.image_tokens.as_ref().map(|(shape, tokens)| (*shape, tokens[..to * shape[0] * shape[1]].to_vec())),
            precision: all.precision,
            ..tail(all, to)
        }
    }

    #[test]
    fn added_items_are_found_and_deleted_ones_never() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("idx");
        let all = input(300);
        build(&dir, head(&all, 200)).unwrap();
        let added = RetrievalIndex::open(&dir).unwrap().add(tail(&all, 200)).unwrap();
        assert_eq!((added.items, added.texts, added.info.items), (100, 100, 300));
        let idx = RetrievalIndex::open(&dir).unwrap();
        // the graph holds the new rows: each finds itself
        let found = (200..300)
            .filter(|&r| {
                idx.dense_images(&idx.image_vectors.row_vec(r), "m1", &SearchParams { k: 1, ..Default::default() }).unwrap()[0].score
                    > 0.9999
            })
            .count();
        assert!(found >= 95, "{found} of 100 added rows found");
        let bm25 = idx.text_to_images("thing 250", None, &SearchParams { k: 1, mode: Mode::Bm25, ..Default::default() }).unwrap();
        assert_eq!(idx.items[bm25[0].row].id, "img250");
        let mut tokens = Vec::new();
        idx.image_tokens.as_ref().unwrap().row_into(250, &mut tokens);
        assert!(idx.rerank_images(&[250], &tokens[..4], "m1").is_ok());

        // ids are never reused; another model's rows are refused
        assert!(RetrievalIndex::open(&dir).unwrap().add(tail(&all, 299)).unwrap_err().to_string().contains("already in the index"));
        let mut other = tail(&input(301), 300);
        other.model = "m2".into();
        assert!(matches!(RetrievalIndex::open(&dir).unwrap().add(other), Err(crate::IndexError::ModelMismatch { .. })));

        let unknown = idx.delete(&["img250".into(), "nope".into()]).unwrap();
        assert_eq!(unknown, vec!["nope".to_string()]);
        let idx = RetrievalIndex::open(&dir).unwrap();
        let v = idx.image_vectors.row_vec(250);
        for exact in [false, true] {
            let hits = idx.dense_images(&v, "m1", &SearchParams { k: 10, exact, ..Default::default() }).unwrap();
            assert!(hits.len() == 10 && hits.iter().all(|h| h.row != 250), "exact {exact}");
        }
        let bm25 = idx.text_to_images("thing 250", None, &SearchParams { k: 5, mode: Mode::Bm25, ..Default::default() }).unwrap();
        assert!(bm25.iter().all(|r| r.row != 250));
    }
}
