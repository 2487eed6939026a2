//! One image with its captions, as read from any input format, before decoding.

use serde_json::{Map, Value};

/// A caption and what is known of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caption {
    pub text: String,
    /// BCP-47-ish language tag (`en`, `zh`, `zh-Hant`), when the input says.
    pub lang: Option<String>,
    /// Which text field it came from (`name`, `keywords`, ...), when the input says.
    pub field: Option<String>,
}

impl Caption {
    pub fn plain(text: impl Into<String>) -> Self {
        Caption { text: text.into(), lang: None, field: None }
    }

    /// The caption as a manifest writes it: `{"text", "lang"?, "field"?}`.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("text".into(), Value::String(self.text.clone()));
        if let Some(l) = &self.lang {
            m.insert("lang".into(), Value::String(l.clone()));
        }
        if let Some(f) = &self.field {
            m.insert("field".into(), Value::String(f.clone()));
        }
        Value::Object(m)
    }
}

/// An undecoded image-text pair. Decoding is left to [`crate::image_pipeline`] so that it can run
/// in parallel, away from the thread that reads the input.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The sample's key: the WebDataset `__key__`, the manifest `id`, or the CSV image path.
    pub key: String,
    /// Where it was read, for messages: `shard.tar:KEY`, `manifest.jsonl:12`.
    pub location: String,
    /// The encoded image file.
    pub image: Vec<u8>,
    /// The image's extension as named (lowercase, no dot): `jpg`, `png`, `webp`.
    pub image_ext: String,
    /// At least one non-empty caption.
    pub captions: Vec<Caption>,
    /// Everything else the input carried (the WebDataset `.json`, other manifest fields).
    pub meta: Map<String, Value>,
}
