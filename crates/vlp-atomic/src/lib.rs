//! All-or-nothing writes: a file or a directory is written beside its destination under a
//! temporary name ([`temp_path`]), synced to disk, and renamed over the destination
//! ([`commit`]), so a reader, or the next run after a crash, finds the old version or the new
//! one, never half of one. Every crate of vlp that writes a result (checkpoints, indexes and
//! their vector files, data sets and shards, filter outputs, TREC runs, charts, exports) goes
//! through this crate, so that there is one naming scheme and one place where durability is
//! decided.
//!
//! Durability: the new file's (or each file of the new directory's) data is synced before the
//! rename and the parent directory after it, so once [`commit`] returns, the new version
//! survives a power loss, and before, the old one does.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Where a write of `dest` goes first: `.NAME.tmp` beside it, on the same file system (so the
/// rename is atomic) and hidden from listings of `*.tar`, `ckpt-*` and the like.
pub fn temp_path(dest: &Path) -> PathBuf {
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    dest.with_file_name(format!(".{name}.tmp"))
}

/// An empty temporary directory for `dest` ([`temp_path`]; one left by an interrupted write is
/// removed first), to fill and then [`commit`].
pub fn temp_dir(dest: &Path) -> io::Result<PathBuf> {
    let tmp = temp_path(dest);
    if tmp.exists() {
        fs::remove_dir_all(&tmp)?;
    }
    fs::create_dir_all(&tmp)?;
    Ok(tmp)
}

/// Writes `bytes` to `dest`, all or nothing.
pub fn write(dest: &Path, bytes: &[u8]) -> io::Result<()> {
    write_with(dest, |out| out.write_all(bytes))
}

/// Writes `dest` through `fill`, all or nothing: `fill` writes into the temporary file; if it
/// fails, the temporary file is removed and `dest` is left as it was.
pub fn write_with<T>(dest: &Path, fill: impl FnOnce(&mut BufWriter<File>) -> io::Result<T>) -> io::Result<T> {
    let tmp = temp_path(dest);
    let result = (|| {
        let mut out = BufWriter::new(File::create(&tmp)?);
        let value = fill(&mut out)?;
        out.into_inner().map_err(io::IntoInnerError::into_error)?;
        commit(&tmp, dest)?;
        Ok(value)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Makes the finished temporary file or directory `tmp` the new `dest`: syncs it (a directory's
/// every file, then the directory), renames it into place, and syncs the parent directory. A
/// directory already at `dest` is moved aside first and removed once the new one is in place, so
/// that a crash between the two leaves one of them at `dest`'s name or beside it, whole.
pub fn commit(tmp: &Path, dest: &Path) -> io::Result<()> {
    sync_tree(tmp)?;
    if dest.is_dir() {
        let old = dest.with_file_name(format!(".{}.old", dest.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()));
        if old.exists() {
            fs::remove_dir_all(&old)?;
        }
        fs::rename(dest, &old)?;
        fs::rename(tmp, dest)?;
        sync_parent(dest)?;
        fs::remove_dir_all(&old)?;
    } else {
        fs::rename(tmp, dest)?;
    }
    sync_parent(dest)
}

/// Syncs a file, or a directory's files (recursively) and the directory itself.
fn sync_tree(path: &Path) -> io::Result<()> {
    if path.is_dir() {
        for entry in fs::read_dir(path)? {
            sync_tree(&entry?.path())?;
        }
    }
    // a directory opened read-only syncs its entries on Linux; elsewhere this may be refused
    match File::open(path).and_then(|f| f.sync_all()) {
        Err(e) if path.is_dir() && e.kind() == io::ErrorKind::PermissionDenied => Ok(()),
        other => other,
    }
}

fn sync_parent(path: &Path) -> io::Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match File::open(parent).and_then(|f| f.sync_all()) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        n.sort();
        n
    }

    #[test]
    fn a_write_replaces_the_file_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("a.json");
        write(&f, b"old").unwrap();
        write(&f, b"new").unwrap();
        assert_eq!(fs::read(&f).unwrap(), b"new");
        assert_eq!(names(tmp.path()), ["a.json"], "no temporary file left");
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("index.vec");
        write(&f, b"the good one").unwrap();
        let e = write_with(&f, |out| {
            out.write_all(b"half of the new")?;
            out.flush()?;
            Err::<(), _>(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "disk full");
        assert_eq!(fs::read(&f).unwrap(), b"the good one");
        assert_eq!(names(tmp.path()), ["index.vec"]);
    }

    #[test]
    fn a_directory_replaces_the_old_one_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("ckpt-000010");
        for (version, files) in [("old", &["model.bin", "stale.bin"][..]), ("new", &["model.bin"][..])] {
            let t = temp_dir(&dest).unwrap();
            for f in files {
                fs::write(t.join(f), version).unwrap();
            }
            commit(&t, &dest).unwrap();
        }
        assert_eq!(names(&dest), ["model.bin"], "the old directory's files are gone with it");
        assert_eq!(fs::read(dest.join("model.bin")).unwrap(), b"new");
        assert_eq!(names(tmp.path()), ["ckpt-000010"]);
    }

    #[test]
    fn an_interrupted_directory_write_is_cleared_by_the_next() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("export");
        let t = temp_dir(&dest).unwrap();
        fs::write(t.join("partial"), "x").unwrap(); // the process stopped here
        let t = temp_dir(&dest).unwrap();
        assert!(names(&t).is_empty());
        assert!(!dest.exists(), "nothing at the destination until a commit");
    }
}
