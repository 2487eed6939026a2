//! One module per subcommand.

pub mod bench;
pub mod data;
pub mod eval;
pub mod export;
pub mod filter;
pub mod import;
pub mod index;
pub mod load;
pub mod plot;
pub mod serve;
pub mod tokenizer;
pub mod train;
pub mod trec_eval;
pub mod zeroshot;

/// How CSV/TSV inputs are read (OpenCLIP's `--csv-img-key`, `--csv-caption-key`,
/// `--csv-separator`), on every command that reads data.
#[derive(clap::Args, Clone)]
pub struct CsvArgs {
    /// The image column of CSV/TSV input.
    #[arg(long, default_value = "filepath")]
    pub csv_img_key: String,
    /// The caption column of CSV/TSV input.
    #[arg(long, default_value = "title")]
    pub csv_caption_key: String,
    /// CSV/TSV field separator (one character, or `tab`); by default tab for `.tsv`, and for a
    /// `.csv` whose header holds the columns only when split at tabs (OpenCLIP's default), else comma.
    #[arg(long, value_parser = csv_separator)]
    pub csv_separator: Option<u8>,
    /// What a relative image path in a CSV/TSV is relative to: the table's folder (vlp's
    /// default, so a table and its images move together) or `cwd`, the working directory (as
    /// OpenCLIP opens them).
    #[arg(long, value_enum, default_value = "table")]
    pub csv_paths: CsvPaths,
}

#[derive(clap::ValueEnum, Clone, Copy)]
pub enum CsvPaths {
    Table,
    Cwd,
}

impl CsvArgs {
    pub fn columns(&self) -> vlp_data::source::CsvColumns {
        vlp_data::source::CsvColumns {
            image: self.csv_img_key.clone(),
            caption: self.csv_caption_key.clone(),
            separator: self.csv_separator,
            relative_to: match self.csv_paths {
                CsvPaths::Table => vlp_data::source::RelativeTo::Table,
                CsvPaths::Cwd => vlp_data::source::RelativeTo::WorkingDirectory,
            },
        }
    }
}

/// `--csv-separator`: one ASCII character, or `tab` (`\t`).
pub fn csv_separator(s: &str) -> Result<u8, String> {
    match s {
        "tab" | "\\t" | "\t" => Ok(b'\t'),
        _ if s.len() == 1 && s.is_ascii() => Ok(s.as_bytes()[0]),
        _ => Err(format!("'{s}': a separator is one ASCII character, or `tab`")),
    }
}

/// Where a command that embeds runs: `--device` and the batch it embeds in.
#[derive(clap::Args, Clone, Copy)]
pub struct EmbedOn {
    /// `cpu`, or `cuda` (the first card; a vlp built with `--features cuda`).
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: train::Device,
    /// Images per embedding batch (default 128 on the CPU, 1024 on a card); texts go twice as many.
    #[arg(long, value_name = "N")]
    pub embed_batch: Option<usize>,
}

impl EmbedOn {
    pub fn images_per_batch(&self) -> usize {
        let default = match self.device {
            train::Device::Cpu => 128,
            train::Device::Cuda => 1024,
        };
        self.embed_batch.unwrap_or(default).max(1)
    }
    pub fn texts_per_batch(&self) -> usize {
        2 * self.images_per_batch()
    }
}

/// Runs `$body` with the type `$B` bound to the backend of `$on` (an [`EmbedOn`]'s device) and
/// `$device` to its device: Flex on the CPU, burn-cuda's f32 backend on the first card.
macro_rules! on_device {
    ($on:expr, |$B:ident, $device:ident| $body:expr) => {
        match $on {
            $crate::cmd::train::Device::Cpu => {
                type $B = burn::backend::Flex;
                let $device: <$B as burn::tensor::backend::BackendTypes>::Device = Default::default();
                $body
            }
            #[cfg(feature = "cuda")]
            $crate::cmd::train::Device::Cuda => {
                type $B = burn::backend::Cuda<f32>;
                let $device = burn::backend::cuda::CudaDevice::new(0);
                $body
            }
            #[cfg(not(feature = "cuda"))]
            $crate::cmd::train::Device::Cuda => {
                anyhow::bail!("--device cuda: this vlp was built without CUDA: rebuild with `cargo build --release --features cuda`")
            }
        }
    };
}
pub(crate) use on_device;
