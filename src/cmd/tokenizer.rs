//! `vlp tokenizer train | encode`.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use vlp_data::source::{self, ReadOptions};
use vlp_data::text::{TextTokenizer, VocabKind};

#[derive(Args)]
pub struct TokenizerArgs {
    #[command(subcommand)]
    command: TokenizerCommand,
}

#[derive(Subcommand)]
enum TokenizerCommand {
    /// Learn a vocabulary from the captions of any supported input.
    Train {
        /// Shards, a manifest, a CSV/TSV table, or a built data set directory.
        #[arg(long)]
        data: String,
        #[arg(long)]
        split: Option<String>,
        #[arg(long, value_parser = parse_kind, default_value = "wordpiece")]
        kind: VocabKind,
        #[arg(long, default_value_t = 8000)]
        vocab_size: usize,
        /// Where to write `tokenizer.json`.
        #[arg(long)]
        out: PathBuf,
    },
    /// Show how a tokenizer splits a text, and that it decodes back.
    Encode {
        #[arg(long)]
        tokenizer: PathBuf,
        #[arg(long, default_value_t = 77)]
        context: usize,
        text: String,
    },
}

fn parse_kind(s: &str) -> Result<VocabKind, String> {
    match s {
        "wordpiece" => Ok(VocabKind::WordPiece),
        "bpe" => Ok(VocabKind::Bpe),
        _ => Err(format!("unknown vocabulary kind '{s}' (wordpiece or bpe)")),
    }
}

pub fn run(args: TokenizerArgs) -> Result<()> {
    match args.command {
        TokenizerCommand::Train { data, split, kind, vocab_size, out } => {
            // Captions only: the images are read by the stream but not decoded.
            let stream = source::open(&data, split.as_deref(), &ReadOptions::default()).with_context(|| format!("opening {data}"))?;
            let mut captions = Vec::new();
            let mut skipped = 0u64;
            for item in stream {
                match item {
                    Ok(s) => captions.extend(s.captions.into_iter().map(|c| c.text)),
                    Err(_) => skipped += 1,
                }
            }
            if captions.is_empty() {
                bail!("{data}: no captions to learn a vocabulary from ({skipped} samples skipped)");
            }
            let tk = TextTokenizer::train(kind, vocab_size, captions.iter(), 77)?;
            tk.save(&out)?;
            eprintln!("{} captions ({skipped} samples skipped) → {} tokens → {}", captions.len(), tk.vocab_size(), out.display());
            Ok(())
        }
        TokenizerCommand::Encode { tokenizer, context, text } => {
            let tk = TextTokenizer::from_file(&tokenizer, context)?;
            let enc = tk.encode_batch(&[text.as_str()])?;
            println!("tokens: {:?}", tk.tokens(&text)?);
            println!("ids:    {:?}", &enc.ids[..enc.mask.iter().filter(|&&m| m == 1).count()]);
            println!("decoded: {}", tk.decode(&enc.ids)?);
            Ok(())
        }
    }
}
