//! Helpers shared by the tests that drive the `vlp` binary.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Runs `vlp`: success, stdout, stderr.
pub fn vlp(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_vlp")).args(args).output().expect("run vlp");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Runs `vlp` and returns its stdout; fails the test with its stderr if it fails.
pub fn ok(args: &[&str]) -> String {
    let (ok, out, err) = vlp(args);
    assert!(ok, "vlp {args:?} failed: {err}");
    out
}

/// A tiny model: 16 px ViT, 16-wide towers, both losses; trains in seconds.
pub const CONFIG: &str = r#"
[model]
embed_dim = 16
token_dim = 8
[model.image]
kind = "vit"
image_size = 16
patch_size = 8
width = 16
layers = 1
heads = 2
[model.text]
context_length = 16
vocab_size = 256
width = 16
layers = 1
heads = 2
causal = true
pool = "eos"
[loss]
global_weight = 1.0
token_weight = 0.5
[train]
batch_size = 16
steps = 6
lr = 1e-3
warmup_steps = 2
checkpoint_every = 3
val_every = 3
seed = 1
[tokenizer]
kind = "wordpiece"
vocab_size = 256
"#;

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Builds 200 synthetic 16 px images into `dir/data` and trains [`CONFIG`] on them into `dir/run`.
pub fn tiny_run(dir: &Path) -> (PathBuf, PathBuf) {
    let (data, run, config) = (dir.join("data"), dir.join("run"), dir.join("tiny.toml"));
    std::fs::write(&config, CONFIG).unwrap();
    ok(&["data", "build", "synthetic", "--out", s(&data), "--images", "200", "--size", "16"]);
    ok(&["train", "--config", s(&config), "--train", s(&data), "--val", s(&data), "--out", s(&run)]);
    (data, run)
}

/// A `vlp serve` on a free loopback port, killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: String,
}

impl Server {
    pub fn start(index: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_vlp"))
            .args(["serve", "--index", s(index), "--addr", "127.0.0.1:0"])
            .args(extra)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = loop {
            let line = lines.next().expect("the server says where it listens").unwrap();
            if let Some(rest) = line.split("http://").nth(1) {
                break rest.split('/').next().unwrap().to_string();
            }
        };
        // keep draining stderr so the server never blocks on a full pipe
        std::thread::spawn(move || for _ in lines {});
        Server { child, addr }
    }

    /// Sends raw bytes, returns (status, headers, body).
    pub fn raw(&self, request: &[u8]) -> (u16, String, Vec<u8>) {
        let mut c = TcpStream::connect(&self.addr).unwrap();
        c.write_all(request).unwrap();
        let mut out = Vec::new();
        c.read_to_end(&mut out).unwrap();
        let split = out.windows(4).position(|w| w == b"\r\n\r\n").expect("a full response");
        let head = String::from_utf8_lossy(&out[..split]).into_owned();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, head, out[split + 4..].to_vec())
    }

    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String, Vec<u8>) {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.raw(&bytes)
    }

    pub fn json(&self, method: &str, path: &str, body: Option<&Value>, auth: Option<&str>) -> (u16, Value) {
        let bearer = auth.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(b) = &bearer {
            headers.push(("Authorization", b));
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let (status, _, bytes) = self.request(method, path, &headers, body.as_bytes());
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// Builds an index of the test split of [`tiny_run`]'s data in `dir/index`: (data, index).
pub fn tiny_index(dir: &Path) -> (PathBuf, PathBuf) {
    let (data, run) = tiny_run(dir);
    let index = dir.join("index");
    ok(&["index", "build", "--checkpoint", s(&run), "--data", s(&data), "--split", "test", "--out", s(&index)]);
    (data, index)
}
