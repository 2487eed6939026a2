//! One module per subcommand.

pub mod bench;
pub mod data;
pub mod eval;
pub mod filter;
pub mod index;
pub mod load;
pub mod plot;
pub mod serve;
pub mod tokenizer;
pub mod train;
pub mod trec_eval;
pub mod zeroshot;
