//! The one hash of bytes in vlp's on-disk formats: xxh3-64 (the `xxhash-rust` crate), for the
//! checksums of index files and vector stores and for the identity of the model that made an
//! index's vectors.
//!
//! Until index format 2 these were a hand-written word-wise fold documented as FNV-1a, which it
//! was not; format 3 switched to a named, specified hash, and an index of format 2 is refused with
//! a message to rebuild it rather than read under the other hash. (The data sets' splits and
//! seeds keep `vlp_data::stable_hash`, true byte-wise FNV-1a, because changing it would change
//! which pairs are held out.)

use xxhash_rust::xxh3::Xxh3;

/// xxh3-64 of the concatenation of `parts`.
pub fn xxh3_64(parts: &[&[u8]]) -> u64 {
    let mut h = Xxh3::new();
    for p in parts {
        h.update(p);
    }
    h.digest()
}

/// xxh3-64 of `values`' little-endian bytes, through a stack buffer: no allocation, for keys
/// computed once per vector while a graph is built or read.
pub fn xxh3_f32(values: &[f32]) -> u64 {
    let mut h = Xxh3::new();
    let mut buf = [0u8; 256];
    for block in values.chunks(64) {
        for (b, x) in buf.chunks_exact_mut(4).zip(block) {
            b.copy_from_slice(&x.to_le_bytes());
        }
        h.update(&buf[..4 * block.len()]);
    }
    h.digest()
}

/// A file checksum as the formats store it: xxh3-64 of `parts`, 16 hex digits.
pub fn checksum(parts: &[&[u8]]) -> String {
    format!("{:016x}", xxh3_64(parts))
}

/// A model identity as an index records it: `xxh3:` and 16 hex digits, so a later change of hash
/// is visible in the string and never compares equal by accident.
pub fn identity(parts: &[&[u8]]) -> String {
    format!("xxh3:{:016x}", xxh3_64(parts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_hash_as_their_concatenation_and_match_the_reference() {
        assert_eq!(xxh3_64(&[b"ab", b"", b"c"]), xxh3_64(&[b"abc"]));
        // xxh3-64 of the empty input, seed 0 (the reference implementation's test vector)
        assert_eq!(xxh3_64(&[]), 0x2d06_8005_38d3_94c2);
        assert_eq!(identity(&[b"x"]).len(), 5 + 16);
        let v: Vec<f32> = (0..150).map(|i| i as f32 * 0.37 - 20.0).collect();
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(xxh3_f32(&v), xxh3_64(&[&bytes]));
    }
}
