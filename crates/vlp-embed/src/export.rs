//! vlp models out to OpenCLIP: a run's latest checkpoint written as a directory that
//! `open_clip.create_model_and_transforms("local-dir:DIR")` loads, giving the embeddings vlp
//! gives (checked by `benches/openclip/check_export.py`).
//!
//! ```text
//! DIR/open_clip_config.json      {"model_cfg": OpenCLIP's model config, "preprocess_cfg": ...}
//! DIR/open_clip_model.safetensors  the state dict, f32, OpenCLIP's names and layout
//! DIR/tokenizer.json             the run's tokenizer (OpenCLIP's `local-dir:` loader does not
//!                                read it: a model trained with vlp's own vocabulary needs its ids)
//! ```
//! The directory is written under a temporary name and renamed when complete.

use crate::checkpoint::Encoder;
use crate::{EmbedError, Result};
use std::path::{Path, PathBuf};
use vlp_model::openclip::{openclip_config, to_state_dict};

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    pub dir: PathBuf,
    pub tensors: usize,
    /// Parameters left out because OpenCLIP has no place for them (FILIP's, Wukong's).
    pub dropped: usize,
}

/// Writes `run`'s latest checkpoint (or the checkpoint `run` names) as an OpenCLIP model
/// directory `out`, which must not exist yet.
pub fn export_openclip(run: &Path, out: &Path) -> Result<Exported> {
    if out.exists() {
        return Err(EmbedError::invalid(out, "already exists; export into a new directory"));
    }
    let device = Default::default();
    let enc = Encoder::<burn::backend::Flex>::load(run, &device)?;
    // OpenCLIP pools at the largest token id unless told the end token's id.
    let empty = enc.tokenizer.encode_batch(&[""])?;
    let real = empty.mask.iter().filter(|&&m| m == 1).count();
    let end = *empty
        .ids
        .get(real.wrapping_sub(1))
        .ok_or_else(|| EmbedError::invalid(run, "the tokenizer encodes the empty text as no tokens"))?;
    let eos_id = (end as usize + 1 != enc.tokenizer.vocab_size()).then_some(end);
    let model_cfg = openclip_config(&enc.config.model, eos_id).map_err(|e| EmbedError::import(&enc.dir, e))?;
    let state = to_state_dict(&enc.model).map_err(|e| EmbedError::import(&enc.dir, e))?;
    let data = &enc.config.data;
    let config = serde_json::json!({
        "model_cfg": model_cfg,
        "preprocess_cfg": {"mean": data.mean, "std": data.std, "interpolation": data.resize, "resize_mode": "shortest"},
        "vlp": {"checkpoint": enc.dir.display().to_string(), "step": enc.state.step},
    });
    out.file_name().ok_or_else(|| EmbedError::invalid(out, "not a directory name"))?;
    let tmp = vlp_atomic::temp_dir(out).map_err(|e| EmbedError::io(out, e))?;
    let weights = tmp.join("open_clip_model.safetensors");
    state.write_safetensors(&weights).map_err(|e| EmbedError::import(&weights, e))?;
    let json = serde_json::to_string_pretty(&config).expect("a config serialises");
    std::fs::write(tmp.join("open_clip_config.json"), json).map_err(|e| EmbedError::io(&tmp, e))?;
    enc.tokenizer.save(&tmp.join("tokenizer.json"))?;
    vlp_atomic::commit(&tmp, out).map_err(|e| EmbedError::io(out, e))?;
    use burn::module::Module;
    let exported: usize = state.keys().map(|k| state.get(k).map_or(0, |(_, v)| v.len())).sum();
    Ok(Exported { dir: out.to_path_buf(), tensors: state.keys().count(), dropped: enc.model.num_params() - exported })
}
