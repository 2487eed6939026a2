//! OpenCLIP-style CSV/TSV tables: an image path column and a caption column (`filepath` and
//! `title` by default, as OpenCLIP's `--csv-img-key` / `--csv-caption-key`). Relative image paths
//! are resolved against the table's directory.

use super::{check_caption, check_image, ext_of, keep_good_captions, read_image_file, ReadOptions, Skip, SourceItem};
use crate::sample::{Caption, Sample};
use crate::skip::SkipReason;
use serde_json::{Map, Value};
use std::path::Path;

/// Column names of a CSV/TSV table.
#[derive(Debug, Clone)]
pub struct CsvColumns {
    pub image: String,
    pub caption: String,
    /// Field separator; `None` picks tab for `.tsv` and comma otherwise.
    pub separator: Option<u8>,
    /// What a relative image path is relative to.
    pub relative_to: RelativeTo,
}

/// The folder a table's relative image paths start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelativeTo {
    /// The table's own folder: a table and its images move together (vlp's default).
    Table,
    /// The working directory, as OpenCLIP opens them.
    WorkingDirectory,
}

impl Default for CsvColumns {
    fn default() -> Self {
        CsvColumns { image: "filepath".into(), caption: "title".into(), separator: None, relative_to: RelativeTo::Table }
    }
}

/// The field separator of a table: the one configured, else tab for `.tsv`, else comma, unless
/// the header row read with commas lacks the configured columns and holds a tab: OpenCLIP writes
/// and reads `.csv` files tab-separated by default (`--csv-separator`), so such a header is one.
pub fn separator(path: &Path, columns: &CsvColumns) -> u8 {
    if let Some(s) = columns.separator {
        return s;
    }
    if ext_of(&path.display().to_string()) == "tsv" {
        return b'\t';
    }
    use std::io::BufRead;
    let mut header = String::new();
    let read = std::fs::File::open(path).map(std::io::BufReader::new).and_then(|mut r| r.read_line(&mut header));
    let has = |sep: char| {
        let fields: Vec<&str> = header.trim_end_matches(['\r', '\n']).split(sep).map(|f| f.trim_matches('"')).collect();
        fields.contains(&columns.image.as_str()) && fields.contains(&columns.caption.as_str())
    };
    if read.is_ok() && !has(',') && has('\t') {
        b'\t'
    } else {
        b','
    }
}

pub(super) fn read(path: &Path, opts: &ReadOptions, emit: &mut dyn FnMut(SourceItem) -> bool) {
    let name = path.display().to_string();
    let base = match opts.csv.relative_to {
        RelativeTo::Table => path.parent().unwrap_or(Path::new(".")),
        RelativeTo::WorkingDirectory => Path::new(""),
    };
    let sep = separator(path, &opts.csv);
    let mut reader = match csv::ReaderBuilder::new().delimiter(sep).flexible(true).from_path(path) {
        Ok(r) => r,
        Err(e) => {
            emit(Err(Skip::new(SkipReason::CsvBadRow, &name, format!("cannot open: {e}"))));
            return;
        }
    };
    let headers = match reader.byte_headers() {
        Ok(h) => h.clone(),
        Err(e) => {
            emit(Err(Skip::new(SkipReason::CsvBadRow, &name, format!("no header row: {e}"))));
            return;
        }
    };
    let column = |wanted: &str| headers.iter().position(|h| h == wanted.as_bytes());
    let (Some(img_col), Some(cap_col)) = (column(&opts.csv.image), column(&opts.csv.caption)) else {
        emit(Err(Skip::new(
            SkipReason::CsvBadRow,
            &name,
            format!("header lacks the columns '{}' and '{}'", opts.csv.image, opts.csv.caption),
        )));
        return;
    };
    let mut record = csv::ByteRecord::new();
    let mut row = 1usize;
    loop {
        row += 1;
        let read = reader.read_byte_record(&mut record);
        if !opts.part.holds(row - 2) && !matches!(read, Ok(false)) {
            continue; // another part's row
        }
        match read {
            Ok(false) => return,
            Ok(true) => {}
            Err(e) => {
                if !emit(Err(Skip::new(SkipReason::CsvBadRow, format!("{name}:{row}"), e.to_string()))) {
                    return;
                }
                continue;
            }
        }
        let location = format!("{name}:{row}");
        let item = parse_row(&record, &headers, img_col, cap_col, base, &location, opts);
        if !emit(item) {
            return;
        }
    }
}

fn parse_row(
    record: &csv::ByteRecord,
    headers: &csv::ByteRecord,
    img_col: usize,
    cap_col: usize,
    base: &Path,
    location: &str,
    opts: &ReadOptions,
) -> SourceItem {
    let (Some(img), Some(cap)) = (record.get(img_col), record.get(cap_col)) else {
        return Err(Skip::new(SkipReason::CsvBadRow, location, format!("row has {} fields", record.len())));
    };
    let image_rel =
        std::str::from_utf8(img).map_err(|_| Skip::new(SkipReason::CsvBadRow, location, "image path is not UTF-8"))?.to_string();
    let captions = keep_good_captions(vec![check_caption(cap, location, opts).map(Caption::plain)], location)?;
    let ext = ext_of(&image_rel);
    let image = read_image_file(&base.join(&image_rel), location)?;
    check_image(&image, &ext, location, opts)?;
    let mut meta = Map::new();
    for (i, h) in headers.iter().enumerate() {
        if i == img_col || i == cap_col {
            continue;
        }
        if let (Ok(k), Some(Ok(v))) = (std::str::from_utf8(h), record.get(i).map(std::str::from_utf8)) {
            meta.insert(k.to_string(), Value::String(v.to_string()));
        }
    }
    meta.insert("image".into(), Value::String(image_rel.clone()));
    Ok(Sample { key: image_rel, location: location.to_string(), image, image_ext: ext, captions, meta })
}
