//! Shard lists as WebDataset and img2dataset users write them: a directory, a glob, or a brace
//! range (`data/{00000..00123}.tar`), several joined by `::`.

use crate::{DataError, Result};
use std::path::{Path, PathBuf};

/// Expands a shard specification into existing files, in order.
///
/// `dir/` lists the `.tar` files of a directory (sorted); `*`/`?`/`[` patterns are globs; `{a..b}`
/// is a numeric range (zero-padded to the width of `a`) and `{x,y}` a list; `::` joins several.
pub fn expand_shards(spec: &str) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for part in spec.split("::").filter(|p| !p.is_empty()) {
        for pattern in expand_braces(part)? {
            let path = Path::new(&pattern);
            if path.is_dir() {
                let mut tars: Vec<PathBuf> = std::fs::read_dir(path)
                    .map_err(|e| DataError::io(path, e))?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "tar"))
                    .collect();
                tars.sort();
                if tars.is_empty() {
                    return Err(DataError::input(&pattern, "directory holds no .tar shards"));
                }
                out.extend(tars);
            } else if pattern.contains(['*', '?', '[']) {
                let mut hits: Vec<PathBuf> = glob::glob(&pattern)
                    .map_err(|e| DataError::input(&pattern, format!("bad glob: {e}")))?
                    .filter_map(|p| p.ok())
                    .collect();
                hits.sort();
                if hits.is_empty() {
                    return Err(DataError::input(&pattern, "glob matches no file"));
                }
                out.extend(hits);
            } else if path.is_file() {
                out.push(path.to_path_buf());
            } else {
                return Err(DataError::input(&pattern, "shard does not exist"));
            }
        }
    }
    if out.is_empty() {
        return Err(DataError::input(spec, "no shards given"));
    }
    Ok(out)
}

/// Expands the first `{...}` group, recursively, so `a{0..1}b{x,y}` gives four strings.
pub fn expand_braces(s: &str) -> Result<Vec<String>> {
    let Some(open) = s.find('{') else { return Ok(vec![s.to_string()]) };
    let close = s[open..].find('}').map(|i| open + i).ok_or_else(|| DataError::input(s, "unclosed '{' in shard list"))?;
    let (head, body, tail) = (&s[..open], &s[open + 1..close], &s[close + 1..]);
    let items: Vec<String> = if let Some((a, b)) = body.split_once("..") {
        let lo: u64 = a.parse().map_err(|_| DataError::input(s, format!("bad range start '{a}'")))?;
        let hi: u64 = b.parse().map_err(|_| DataError::input(s, format!("bad range end '{b}'")))?;
        if hi < lo {
            return Err(DataError::input(s, "range end is before its start"));
        }
        let width = a.len();
        (lo..=hi).map(|i| format!("{i:0width$}")).collect()
    } else {
        body.split(',').map(str::to_string).collect()
    };
    let mut out = Vec::new();
    for item in items {
        out.extend(expand_braces(&format!("{head}{item}{tail}"))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn braces_expand_ranges_and_lists() {
        assert_eq!(expand_braces("s-{008..010}.tar").unwrap(), vec!["s-008.tar", "s-009.tar", "s-010.tar"]);
        assert_eq!(expand_braces("{a,b}{0..1}").unwrap(), vec!["a0", "a1", "b0", "b1"]);
        assert!(expand_braces("x{3..1}").is_err());
        assert!(expand_braces("x{1..").is_err());
    }
}
