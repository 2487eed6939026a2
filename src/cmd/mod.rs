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

/// `--csv-separator`: one ASCII character, or `tab` (`\t`).
pub fn csv_separator(s: &str) -> Result<u8, String> {
    match s {
        "tab" | "\\t" | "\t" => Ok(b'\t'),
        _ if s.len() == 1 && s.is_ascii() => Ok(s.as_bytes()[0]),
        _ => Err(format!("'{s}': a separator is one ASCII character, or `tab`")),
    }
}
