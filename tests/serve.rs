//! `vlp serve` as a client sees it, over real sockets: every route, the hostile inputs (each with
//! its status and stable error code, the server still healthy afterwards), the token, the 503
//! of a full server, and a graceful stop on SIGTERM.

mod common;

use common::{tiny_index, Server};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;

fn png(w: u32, h: u32) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(w, h, image::Rgb([200, 30, 30]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// PNG's chunk checksum (CRC-32, as zlib computes it).
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
        }
    }
    !c
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

#[test]
fn api_answers_every_query_kind_and_refuses_hostile_input() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, index) = tiny_index(tmp.path());
    let srv = Server::start(&index, &["--max-body-bytes", "200000", "--max-pixels", "1000000"]);

    let (st, health) = srv.json("GET", "/healthz", None, None);
    assert_eq!(st, 200);
    let items = health["items"].as_u64().unwrap();
    assert!(items > 0, "{health}");
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(health["queries"], json!(["text", "image", "embedding", "item"]), "{health}");

    // text, each mode; Chinese with a filter; the text side
    for mode in ["dense", "bm25", "hybrid"] {
        let (st, v) = srv.json("POST", "/v1/search", Some(&json!({"text": "a large red star", "k": 5, "mode": mode})), None);
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["results"].as_array().unwrap().len(), 5, "{mode}: {v}");
        assert!(v["took_ms"].as_f64().unwrap() >= 0.0);
    }
    let (st, v) =
        srv.json("POST", "/v1/search", Some(&json!({"text": "红色星形", "mode": "bm25", "filter": {"lang": "zh"}, "k": 3})), None);
    assert_eq!((st, v["count"].as_u64()), (200, Some(3)), "{v}");
    let (st, v) = srv.json("POST", "/v1/search", Some(&json!({"text": "red", "side": "texts", "k": 4})), None);
    assert!(st == 200 && v["results"][0]["text"].is_string(), "{v}");
    let (st, v) = srv.json("POST", "/v1/search", Some(&json!({"text": "a small blue circle", "rerank": 20, "k": 4})), None);
    assert_eq!((st, v["count"].as_u64()), (200, Some(4)), "{v}");

    // an image, as base64 and as a multipart upload; an item; an embedding of the index's width
    let image = std::fs::read(std::fs::read_dir(data.join("images")).unwrap().next().unwrap().unwrap().path()).unwrap();
    let (st, v) = srv.json("POST", "/v1/search", Some(&json!({"image": b64(&image), "k": 3})), None);
    assert_eq!((st, v["count"].as_u64()), (200, Some(3)), "{v}");
    let boundary = "vlpboundary";
    let mut form = format!("--{boundary}\r\nContent-Disposition: form-data; name=\"k\"\r\n\r\n2\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"q.png\"\r\nContent-Type: image/png\r\n\r\n").into_bytes();
    form.extend_from_slice(&image);
    form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let (st, _, body) = srv.request("POST", "/v1/search", &[("Content-Type", &format!("multipart/form-data; boundary={boundary}"))], &form);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!((st, v["count"].as_u64()), (200, Some(2)), "{v}");
    let first = v["results"][0]["id"].as_str().unwrap().to_string();
    let (st, v) = srv.json("POST", "/v1/search", Some(&json!({"item": first, "k": 1})), None);
    assert_eq!((st, v["results"][0]["id"].as_str()), (200, Some(first.as_str())), "an item is its own nearest image: {v}");
    let (st, v) =
        srv.json("POST", "/v1/search", Some(&json!({"embedding": vec![0.25; health["dim"].as_u64().unwrap() as usize], "k": 2})), None);
    assert_eq!((st, v["count"].as_u64()), (200, Some(2)), "{v}");

    // items and their images
    let (st, v) = srv.json("GET", &format!("/v1/items/{first}"), None, None);
    assert!(st == 200 && v["id"] == first.as_str() && v.get("score").is_none(), "{v}");
    let (st, head, bytes) = srv.request("GET", &format!("/v1/items/{first}/image"), &[], b"");
    assert!(st == 200 && head.contains("content-type: image/png"), "{head}");
    assert_eq!(&bytes[..4], b"\x89PNG");

    // hostile input: each refused with its status and code
    let bomb = {
        // a valid PNG header that claims 30000 x 30000 pixels
        let mut p = png(1, 1);
        p[16..20].copy_from_slice(&30000u32.to_be_bytes());
        p[20..24].copy_from_slice(&30000u32.to_be_bytes());
        let crc = crc32(&p[12..29]);
        p[29..33].copy_from_slice(&crc.to_be_bytes());
        p
    };
    let gif = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;".to_vec();
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({"text": "x".repeat(1001)}), 400, "text_too_long"),
        (json!({"text": "   "}), 400, "empty_text"),
        (json!({"text": "red", "k": 1001}), 400, "k_too_large"),
        (json!({"text": "red", "image": b64(&image)}), 400, "bad_query"),
        (json!({}), 400, "bad_query"),
        (json!({"text": "red", "bogus": 1}), 400, "bad_json"),
        (json!({"text": "red", "mode": "telepathy"}), 400, "bad_json"),
        (json!({"text": "red", "filter": "nofield"}), 400, "bad_filter"),
        (json!({"image": "%%% not base64"}), 400, "bad_image"),
        (json!({"image": b64(b"not an image at all")}), 415, "unsupported_image"),
        (json!({"image": b64(&gif)}), 415, "unsupported_image"),
        (json!({"image": b64(&bomb)}), 413, "image_too_large"),
        (json!({"image": b64(&png(1, 1)[..20])}), 400, "bad_image"),
        (json!({"image": b64(&image), "mode": "bm25"}), 400, "bad_mode"),
        (json!({"embedding": [1.0, 2.0]}), 400, "bad_embedding"),
        (json!({"item": "../../etc/passwd"}), 404, "not_found"),
    ];
    for (body, status, want) in &cases {
        let (st, v) = srv.json("POST", "/v1/search", Some(body), None);
        assert_eq!((st, code(&v)), (*status, *want), "{body}: {v}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    }
    let (st, _, body) = srv.request("POST", "/v1/search", &[("Content-Type", "application/json")], b"{\"text\": ");
    assert_eq!((st, code(&serde_json::from_slice(&body).unwrap())), (400, "bad_json"));
    let huge = json!({"image": b64(&vec![0u8; 300_000])});
    let (st, v) = srv.json("POST", "/v1/search", Some(&huge), None);
    assert_eq!((st, code(&v)), (413, "body_too_large"), "{v}");
    let (st, v) = srv.json("GET", "/v1/items/..%2F..%2Fetc%2Fpasswd/image", None, None);
    assert_eq!((st, code(&v)), (404, "not_found"));
    let (st, v) = srv.json("GET", "/nowhere", None, None);
    assert_eq!((st, code(&v)), (404, "not_found"));
    let (st, v) = srv.json("GET", "/v1/search", None, None);
    assert_eq!((st, code(&v)), (405, "method_not_allowed"));
    let (st, _, _) = srv.raw(b"this is not HTTP\r\n\r\n");
    assert_eq!(st, 400);

    // still healthy, and the metrics counted it all
    assert_eq!(srv.json("GET", "/healthz", None, None).0, 200);
    let (st, _, metrics) = srv.request("GET", "/metrics", &[], b"");
    let metrics = String::from_utf8(metrics).unwrap();
    assert_eq!(st, 200);
    assert!(metrics.contains("vlp_requests_total{route=\"/v1/search\",status=\"400\"}"), "{metrics}");
    assert!(metrics.contains(&format!("vlp_index_items {items}")), "{metrics}");
    assert!(metrics.contains("vlp_request_duration_seconds_bucket{route=\"/v1/search\",le=\"+Inf\"}"));
    let (st, head, page) = srv.request("GET", "/", &[], b"");
    assert!(st == 200 && head.contains("text/html") && String::from_utf8_lossy(&page).contains("id=\"results\""));
}

#[test]
fn token_overload_and_graceful_stop() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, index) = tiny_index(tmp.path());
    let mut srv = Server::start(&index, &["--token", "s3cret", "--max-inflight", "1"]);
    let q = json!({"text": "red", "k": 2});
    assert_eq!(srv.json("GET", "/healthz", None, None).0, 200, "health needs no token");
    let (st, v) = srv.json("POST", "/v1/search", Some(&q), None);
    assert_eq!((st, code(&v)), (401, "unauthorized"));
    assert_eq!(srv.json("POST", "/v1/search", Some(&q), Some("wrong")).0, 401);
    assert_eq!(srv.json("GET", "/metrics", None, None).0, 401);
    assert_eq!(srv.json("POST", "/v1/search", Some(&q), Some("s3cret")).0, 200);

    // a request whose body has not all arrived holds the one admission slot: the next gets 503 at once
    let mut slow = TcpStream::connect(&srv.addr).unwrap();
    slow.write_all(b"POST /v1/search HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\nContent-Type: application/json\r\nContent-Length: 30\r\n\r\n{\"text\": \"red\",").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (st, v) = srv.json("POST", "/v1/search", Some(&q), Some("s3cret"));
    assert_eq!((st, code(&v)), (503, "overloaded"));

    // SIGTERM while that request is in flight: it is answered, then the server exits cleanly
    let pid = srv.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    std::thread::sleep(std::time::Duration::from_millis(300));
    slow.write_all(b" \"k\": 1}       ").unwrap();
    let mut out = String::new();
    slow.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    let status = srv.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}
