//! Bad input, built on the spot: each bad sample is skipped with the right counted reason, every
//! good sample around it is kept, and the run goes on.

use image::{ImageFormat, RgbImage};
use serde_json::Map;
use std::io::Write;
use vlp_data::image_pipeline::ImageConfig;
use vlp_data::loader::{scan, BatchLoader, LoaderConfig};
use vlp_data::source::{self, Division, InputKind, Part, ReadOptions};
use vlp_data::text::{TextTokenizer, VocabKind};
use vlp_data::{SkipLog, SkipReason, WdsWriter};

fn encoded(format: ImageFormat, w: u32, h: u32) -> Vec<u8> {
    let img = RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 5) as u8, 90]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A small valid PNG whose header claims 60000 × 60000 pixels: a decompression bomb's header.
fn bomb_png() -> Vec<u8> {
    let mut png = encoded(ImageFormat::Png, 4, 4);
    // IHDR data starts at byte 16 (8 signature + 4 length + 4 type); its CRC covers type + data.
    png[16..20].copy_from_slice(&60000u32.to_be_bytes());
    png[20..24].copy_from_slice(&60000u32.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    png
}

fn raw_tar_member(builder: &mut tar::Builder<std::fs::File>, name: &str, data: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    builder.append_data(&mut h, name, data).unwrap();
}

fn assert_counts(log: &SkipLog, want: &[(SkipReason, u64)]) {
    for (reason, n) in want {
        assert_eq!(log.count(*reason), *n, "{reason}: {}", log.summary());
    }
    assert_eq!(log.total(), want.iter().map(|(_, n)| n).sum::<u64>(), "{}", log.summary());
}

#[test]
fn webdataset_shards_skip_each_bad_sample_and_keep_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let png = encoded(ImageFormat::Png, 40, 30);
    let jpg = encoded(ImageFormat::Jpeg, 50, 50);
    let webp = encoded(ImageFormat::WebP, 20, 20);
    let path = dir.path().join("shard-000000.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
    let sample = |b: &mut tar::Builder<std::fs::File>, key: &str, ext: &str, img: &[u8], cap: Option<&[u8]>| {
        raw_tar_member(b, &format!("{key}.{ext}"), img);
        if let Some(c) = cap {
            raw_tar_member(b, &format!("{key}.txt"), c);
        }
        raw_tar_member(b, &format!("{key}.json"), br#"{"url": "http://example.com"}"#);
    };
    sample(&mut b, "good0", "png", &png, Some(b"a red square".as_slice()));
    sample(&mut b, "empty", "jpg", b"", Some(b"empty image".as_slice()));
    sample(&mut b, "corrupt", "jpg", b"this is not a jpeg at all, just text", Some(b"corrupt".as_slice()));
    sample(&mut b, "truncated", "png", &png[..png.len() / 2], Some(b"cut png".as_slice()));
    sample(&mut b, "good1", "jpg", &jpg, Some("一个大的蓝色圆形".as_bytes()));
    sample(&mut b, "wrongext", "jpg", &png, Some(b"png named jpg".as_slice()));
    sample(&mut b, "bomb", "png", &bomb_png(), Some(b"huge".as_slice()));
    sample(&mut b, "emptycap", "png", &png, Some(b"   ".as_slice()));
    sample(&mut b, "latin1", "png", &png, Some(b"caf\xe9 au lait".as_slice()));
    sample(&mut b, "longcap", "png", &png, Some("word ".repeat(1000).as_bytes()));
    sample(&mut b, "nocap", "png", &png, None);
    raw_tar_member(&mut b, "noimage.txt", b"a caption without an image");
    // a file name that starts with a dot has no WebDataset key (`webdataset` drops it too)
    sample(&mut b, "dir/", "png", &png, Some(b"no key".as_slice()));
    sample(&mut b, "good2", "webp", &webp, Some(b"a webp".as_slice()));
    b.finish().unwrap();
    drop(b);

    // A second shard, cut off in the middle of its third sample's image.
    let mut w = WdsWriter::new(&dir.path().join("cut"), "cut", 100).unwrap();
    for i in 0..3 {
        w.write(&format!("c{i}"), &png, "png", "kept before the cut", &Map::new()).unwrap();
    }
    let full = w.finish().unwrap().remove(0);
    let bytes = std::fs::read(&full).unwrap();
    let c2 = bytes.windows(6).position(|w| w == b"c2.png").expect("c2 header");
    let cut_at = c2 + 512 + png.len() / 2;
    let cut = dir.path().join("shard-000001.tar");
    std::fs::File::create(&cut).unwrap().write_all(&bytes[..cut_at]).unwrap();

    let opts = ReadOptions { max_caption_chars: 1000, ..Default::default() };
    let spec = format!("{}/shard-{{000000..000001}}.tar", dir.path().display());
    let image = ImageConfig { size: 16, max_pixels: 1 << 20, ..Default::default() };
    let report = scan(source::open(&spec, None, &opts).unwrap(), &image);
    assert_eq!(report.good_keys, ["good0", "good1", "good2", "c0", "c1"]);
    assert_counts(
        &report.skips,
        &[
            (SkipReason::ImageEmpty, 1),
            (SkipReason::ImageUndecodable, 2),
            (SkipReason::ImageWrongExtension, 1),
            (SkipReason::ImageTooLarge, 1),
            (SkipReason::CaptionEmpty, 1),
            (SkipReason::CaptionNotUtf8, 1),
            (SkipReason::CaptionTooLong, 1),
            (SkipReason::CaptionMissing, 1),
            (SkipReason::ImageMissing, 1),
            (SkipReason::ShardTruncated, 1),
            (SkipReason::KeyMissing, 1),
        ],
    );
    let cut_loc = &report.skips.examples(SkipReason::ShardTruncated)[0].location;
    assert!(cut_loc.contains("shard-000001.tar:c2"), "{cut_loc}");
    let bomb = &report.skips.examples(SkipReason::ImageTooLarge)[0].location;
    assert!(bomb.ends_with(":bomb"), "{bomb}");
    let summary = report.skips.summary();
    assert!(summary.contains("skipped: 12 sample(s)"), "{summary}");

    // The training path (parallel decode, batching) keeps the same samples and counts the same skips.
    let tk = TextTokenizer::train(VocabKind::WordPiece, 200, ["a red square", "一个大的蓝色圆形", "a webp"].iter(), 8).unwrap();
    let cfg = LoaderConfig { batch_size: 2, image, train_seed: Some(7), epoch: 0, drop_last: false, prefetch: 2, shuffle_buffer: 0 };
    let mut loader = BatchLoader::new(source::open(&spec, None, &opts).unwrap(), tk.clone(), cfg.clone());
    let batches: Vec<_> = loader.by_ref().map(Result::unwrap).collect();
    let keys: Vec<String> = batches.iter().flat_map(|b| b.keys.clone()).collect();
    assert_eq!(keys, ["good0", "good1", "good2", "c0", "c1"]);
    // The machines of a data-parallel job each read a part: by shard when the shards divide
    // (2), by sample when not (3); either way every sample and every skip is in one part.
    assert_parts_cover(&spec, &opts, 2, Division::Shards);
    assert_parts_cover(&spec, &opts, 3, Division::Samples);
    for b in &batches {
        assert_eq!(b.images.len(), b.len() * 3 * 16 * 16);
        assert_eq!(b.ids.len(), b.len() * 8);
    }
    assert_eq!(loader.skips().total(), 12, "{}", loader.skips().summary());
}

#[test]
fn manifest_and_csv_skip_bad_lines_and_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("img")).unwrap();
    std::fs::write(dir.path().join("img/a.png"), encoded(ImageFormat::Png, 8, 8)).unwrap();
    std::fs::write(dir.path().join("img/b.jpg"), encoded(ImageFormat::Jpeg, 8, 8)).unwrap();
    let manifest = dir.path().join("m.jsonl");
    std::fs::write(
        &manifest,
        [
            r#"{"id": "a", "image": "img/a.png", "captions": ["a cat", {"text": "一只猫", "lang": "zh"}], "lang": "en"}"#,
            r#"{not json"#,
            r#"{"id": "gone", "image": "img/missing.png", "caption": "lost"}"#,
            r#"["an", "array"]"#,
            "",
            r#"{"id": "b", "image": "img/b.jpg", "caption": "a dog", "group": "pets"}"#,
            r#"{"id": "c", "image": "img/a.png", "captions": ["", " "]}"#,
        ]
        .join("\n"),
    )
    .unwrap();
    let samples: Vec<_> = source::open(manifest.to_str().unwrap(), None, &ReadOptions::default()).unwrap().collect();
    let good: Vec<_> = samples.iter().filter_map(|s| s.as_ref().ok()).collect();
    assert_eq!(good.iter().map(|s| s.key.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    assert_eq!(good[0].captions.len(), 2);
    assert_eq!(good[0].captions[1].lang.as_deref(), Some("zh"));
    assert_eq!(good[1].meta["group"], "pets");
    let mut log = SkipLog::new();
    samples.iter().filter_map(|s| s.as_ref().err()).for_each(|s| s.record_in(&mut log));
    assert_counts(&log, &[(SkipReason::ManifestBadLine, 2), (SkipReason::ImageFileMissing, 1), (SkipReason::CaptionEmpty, 1)]);
    assert!(log.examples(SkipReason::ManifestBadLine)[0].location.ends_with("m.jsonl:2"));
    assert_parts_cover(manifest.to_str().unwrap(), &ReadOptions::default(), 2, Division::Samples);

    let table = dir.path().join("t.tsv");
    std::fs::write(&table, "filepath\ttitle\textra\nimg/a.png\ta cat\tx\nimg/nope.png\tnothing\ty\nimg/b.jpg\n img/b.jpg\ta dog\tz\n")
        .unwrap();
    let samples: Vec<_> = source::open(table.to_str().unwrap(), None, &ReadOptions::default()).unwrap().collect();
    let good: Vec<_> = samples.iter().filter_map(|s| s.as_ref().ok()).map(|s| s.key.clone()).collect();
    assert_eq!(good, ["img/a.png"]);
    let mut log = SkipLog::new();
    samples.iter().filter_map(|s| s.as_ref().err()).for_each(|s| s.record_in(&mut log));
    // " img/b.jpg" (leading space) names a file that does not exist
    assert_counts(&log, &[(SkipReason::ImageFileMissing, 2), (SkipReason::CsvBadRow, 1)]);
    assert_parts_cover(table.to_str().unwrap(), &ReadOptions::default(), 2, Division::Samples);

    // OpenCLIP's `train.csv` is tab-separated (its default `--csv-separator`): found from the header
    let openclip = dir.path().join("train.csv");
    std::fs::write(&openclip, "filepath\ttitle\nimg/a.png\ta cat, sitting\nimg/b.jpg\ta dog\n").unwrap();
    let good: Vec<_> = source::open(openclip.to_str().unwrap(), None, &ReadOptions::default()).unwrap().filter_map(Result::ok).collect();
    assert_eq!(good.iter().map(|s| s.captions[0].text.as_str()).collect::<Vec<_>>(), ["a cat, sitting", "a dog"]);
    // a comma-separated one stays comma-separated, and a separator given is used as it is
    let commas = dir.path().join("commas.csv");
    std::fs::write(&commas, "filepath,title\nimg/a.png,a cat\n").unwrap();
    let good: Vec<_> = source::open(commas.to_str().unwrap(), None, &ReadOptions::default()).unwrap().filter_map(Result::ok).collect();
    assert_eq!((good.len(), good[0].captions[0].text.as_str()), (1, "a cat"));
    let mut semicolons = ReadOptions::default();
    semicolons.csv.separator = Some(b';');
    assert_eq!(source::csv_separator(&openclip, &semicolons.csv), b';');
    // relative paths start from the table's folder, or (as OpenCLIP) from the working directory,
    // where these images are not: each is then a missing file, skipped and counted
    let mut from_cwd = ReadOptions::default();
    from_cwd.csv.relative_to = source::RelativeTo::WorkingDirectory;
    let samples: Vec<_> = source::open(openclip.to_str().unwrap(), None, &from_cwd).unwrap().collect();
    assert!(samples.iter().all(|s| s.as_ref().is_err_and(|e| e.reason == SkipReason::ImageFileMissing)), "{samples:?}");
    let absolute = dir.path().join("absolute.csv");
    std::fs::write(&absolute, format!("filepath\ttitle\n{}\ta cat\n", dir.path().join("img/a.png").display())).unwrap();
    assert_eq!(source::open(absolute.to_str().unwrap(), None, &from_cwd).unwrap().filter_map(Result::ok).count(), 1);
}

/// Reads `spec` whole and in `count` parts: the parts, divided as `division`, hold every item
/// (sample or skip) of the whole once, each in its input order.
fn assert_parts_cover(spec: &str, opts: &ReadOptions, count: usize, division: Division) {
    let items = |part: Part| -> Vec<String> {
        let opts = ReadOptions { part, ..opts.clone() };
        source::open(spec, None, &opts).unwrap().map(|i| i.map_or_else(|skip| skip.location, |s| s.key)).collect()
    };
    assert_eq!(InputKind::detect(spec, None).unwrap().division(Part::new(0, count).unwrap()), division, "{spec}");
    let whole = items(Part::WHOLE);
    let parts: Vec<Vec<String>> = (0..count).map(|i| items(Part::new(i, count).unwrap())).collect();
    assert!(parts.iter().all(|p| !p.is_empty() && p.len() < whole.len()), "{spec}: {parts:?}");
    for p in &parts {
        let mut rest = whole.iter();
        assert!(p.iter().all(|item| rest.any(|w| w == item)), "{spec}: a part out of the input's order: {p:?}");
    }
    let mut joined: Vec<String> = parts.concat();
    let mut all = whole.clone();
    joined.sort();
    all.sort();
    assert_eq!(joined, all, "{spec}: the parts hold every item once");
    assert!(Part::new(count, count).is_err());
}

#[test]
fn missing_inputs_are_errors_that_name_them() {
    let e = source::open("/nonexistent/shards-{0..3}.tar", None, &ReadOptions::default()).err().unwrap().to_string();
    assert!(e.contains("/nonexistent/shards-0.tar") && e.contains("does not exist"), "{e}");
    let e = source::open("/nonexistent/m.jsonl", None, &ReadOptions::default()).err().unwrap().to_string();
    assert!(e.contains("/nonexistent/m.jsonl"), "{e}");
}

#[test]
fn writer_output_reads_back_and_leaves_no_temporary_files() {
    let dir = tempfile::tempdir().unwrap();
    let png = encoded(ImageFormat::Png, 8, 8);
    let mut w = WdsWriter::new(dir.path(), "out", 2).unwrap();
    for i in 0..5 {
        let mut meta = Map::new();
        meta.insert("score".into(), serde_json::json!(i as f64 / 10.0));
        w.write(&format!("k{i}"), &png, "png", &format!("caption {i}"), &meta).unwrap();
    }
    // a key with a dot in a folder name is WebDataset's (the key ends at the file name's first
    // dot); one with a dot in its file name, or none, is refused by name
    w.write("dot.dir/s6", &png, "png", "caption 6", &Map::new()).unwrap();
    for bad in ["", "dir/", "a.b", "dot.dir/s.6"] {
        let e = w.write(bad, &png, "png", "x", &Map::new()).unwrap_err().to_string();
        assert!(e.contains("WebDataset key"), "{bad}: {e}");
    }
    let shards = w.finish().unwrap();
    assert_eq!(shards.len(), 3);
    let names: Vec<String> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    let back: Vec<_> =
        source::open(&format!("{}/", dir.path().display()), None, &ReadOptions::default()).unwrap().map(Result::unwrap).collect();
    assert_eq!(back.len(), 6);
    assert_eq!(back[3].captions[0].text, "caption 3");
    assert_eq!((back[5].key.as_str(), back[5].captions[0].text.as_str()), ("dot.dir/s6", "caption 6"));
    assert_eq!(back[3].meta["score"], 0.3);

    // a shard of a fixed name with no sample is still written, as an empty tar that reads back
    let empty = dir.path().join("empty").join("00003.tar");
    assert_eq!(WdsWriter::single(&empty).unwrap().finish().unwrap(), vec![empty.clone()]);
    let stream = source::open(&empty.display().to_string(), None, &ReadOptions::default()).unwrap();
    assert_eq!(stream.count(), 0);

    // dropped mid-way: the unfinished shard is removed, the finished one stays
    let mut w = WdsWriter::new(&dir.path().join("partial"), "p", 2).unwrap();
    for i in 0..3 {
        w.write(&format!("k{i}"), &png, "png", "x", &Map::new()).unwrap();
    }
    drop(w);
    let left: Vec<_> = std::fs::read_dir(dir.path().join("partial")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["p-000000.tar"]);
}
