//! `vlp export openclip RUN --out DIR`: a vlp model as a directory OpenCLIP loads with
//! `open_clip.create_model_and_transforms("local-dir:DIR")`.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use vlp_embed::export::export_openclip;

#[derive(Args)]
pub struct ExportArgs {
    #[command(subcommand)]
    pub target: ExportTarget,
}

#[derive(Subcommand)]
pub enum ExportTarget {
    /// OpenCLIP: open_clip_config.json and open_clip_model.safetensors (ViT image tower, causal
    /// text tower pooled at the end token).
    Openclip {
        /// A run directory (its latest checkpoint) or a checkpoint directory.
        run: PathBuf,
        /// The directory to create.
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(a: ExportArgs) -> Result<()> {
    match a.target {
        ExportTarget::Openclip { run, out } => {
            let done = export_openclip(&run, &out).with_context(|| format!("exporting {} to OpenCLIP", run.display()))?;
            println!("wrote {} tensors to {}", done.tensors, done.dir.display());
            if done.dropped > 0 {
                println!(
                    "left out {} parameters OpenCLIP has no place for (FILIP's per-token projections and temperature, Wukong's token reduction); the global embeddings do not use them",
                    done.dropped
                );
            }
            Ok(())
        }
    }
}
