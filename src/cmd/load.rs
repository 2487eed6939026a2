//! `vlp bench serve`: a bounded load test of a running `vlp serve` on loopback. N clients on
//! keep-alive connections send text searches (and, with `--malformed`, a share of bad requests)
//! for a fixed time; prints queries/s, latency percentiles, errors and the server's memory.

use anyhow::{bail, Context, Result};
use clap::Args;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct LoadArgs {
    /// The server, as `vlp serve` printed it.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// Text queries, one per line (a JSONL manifest's captions also work).
    #[arg(long)]
    queries: PathBuf,
    #[arg(long, default_value_t = 64)]
    clients: usize,
    #[arg(long, default_value_t = 30.0)]
    seconds: f64,
    #[arg(long, default_value_t = 10)]
    k: usize,
    #[arg(long, default_value = "dense")]
    mode: String,
    /// Share of requests that are malformed (each must get a 4xx; the good ones must still succeed).
    #[arg(long, default_value_t = 0.0)]
    malformed: f64,
    /// The server's process id, to read its memory before and after.
    #[arg(long)]
    pid: Option<u32>,
    #[arg(long)]
    token: Option<String>,
    #[arg(long)]
    json: bool,
}

/// Requests no server should accept, each with the status class it must get.
fn malformed_bodies() -> Vec<String> {
    vec![
        "{\"text\": ".into(),
        "not json at all".into(),
        json!({"text": "x".repeat(5000)}).to_string(),
        json!({"text": "red", "k": 100000}).to_string(),
        json!({"text": "red", "nonsense": true}).to_string(),
        json!({"image": "@@@@"}).to_string(),
        json!({"image": "aGVsbG8="}).to_string(),
        json!({}).to_string(),
        json!({"embedding": [1.0]}).to_string(),
    ]
}

fn rss_mib(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn read_queries(path: &PathBuf) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(o)) => {
                let caps = o.get("captions").and_then(Value::as_array).cloned().unwrap_or_default();
                out.extend(caps.iter().filter_map(|c| c.get("text").or(Some(c)).and_then(Value::as_str)).map(str::to_string));
            }
            _ => out.push(line.trim().to_string()),
        }
    }
    out.sort();
    out.dedup();
    if out.is_empty() {
        bail!("{}: no queries", path.display());
    }
    Ok(out)
}

#[derive(Default)]
struct ClientResult {
    good_latencies: Vec<f64>,
    good: u64,
    bad_sent: u64,
    errors: u64,
    first_error: Option<String>,
}

/// One request on a keep-alive connection: (status, body).
fn exchange(conn: &mut Option<BufReader<TcpStream>>, addr: &str, request: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    if conn.is_none() {
        let s = TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        *conn = Some(BufReader::new(s));
    }
    let r = conn.as_mut().expect("connected above");
    r.get_mut().write_all(request)?;
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let mut len = 0;
    let mut close = false;
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim_end().to_ascii_lowercase();
        if l.is_empty() {
            break;
        }
        if let Some(v) = l.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        close |= l == "connection: close";
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    if close {
        *conn = None;
    }
    Ok((status, body))
}

pub fn run(a: LoadArgs) -> Result<()> {
    let queries = Arc::new(read_queries(&a.queries)?);
    let bad = Arc::new(malformed_bodies());
    let before = a.pid.and_then(rss_mib);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let handles: Vec<_> = (0..a.clients)
        .map(|c| {
            let (queries, bad, stop) = (queries.clone(), bad.clone(), stop.clone());
            let (addr, mode, k, malformed, token) = (a.addr.clone(), a.mode.clone(), a.k, a.malformed, a.token.clone());
            std::thread::spawn(move || {
                let mut out = ClientResult::default();
                let mut conn = None;
                let mut rng = ChaCha8Rng::seed_from_u64(c as u64);
                let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
                while !stop.load(Ordering::Relaxed) {
                    let is_bad = rng.gen_bool(malformed.clamp(0.0, 1.0));
                    let body = if is_bad {
                        bad[rng.gen_range(0..bad.len())].clone()
                    } else {
                        json!({"text": queries[rng.gen_range(0..queries.len())], "k": k, "mode": mode}).to_string()
                    };
                    let req = format!("POST /v1/search HTTP/1.1\r\nHost: load\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                    let t = Instant::now();
                    match exchange(&mut conn, &addr, req.as_bytes()) {
                        Ok((status, resp)) => {
                            let ok = if is_bad { (400..500).contains(&status) } else { status == 200 };
                            if is_bad {
                                out.bad_sent += 1;
                            } else if ok {
                                out.good += 1;
                                out.good_latencies.push(t.elapsed().as_secs_f64());
                            }
                            if !ok {
                                out.errors += 1;
                                out.first_error.get_or_insert_with(|| format!("{status}: {}", String::from_utf8_lossy(&resp)));
                            }
                        }
                        Err(e) => {
                            conn = None;
                            out.errors += 1;
                            out.first_error.get_or_insert_with(|| e.to_string());
                        }
                    }
                }
                out
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(a.seconds));
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    let (mut good, mut bad_sent, mut errors, mut first_error) = (0, 0, 0, None);
    for h in handles {
        let r = h.join().expect("client thread");
        lat.extend(r.good_latencies);
        good += r.good;
        bad_sent += r.bad_sent;
        errors += r.errors;
        first_error = first_error.or(r.first_error);
    }
    let wall = started.elapsed().as_secs_f64();
    let after = a.pid.and_then(rss_mib);
    lat.sort_by(f64::total_cmp);
    let pct = |q: f64| if lat.is_empty() { f64::NAN } else { lat[((q * lat.len() as f64) as usize).min(lat.len() - 1)] * 1e3 };
    let report = json!({
        "clients": a.clients, "seconds": wall, "mode": a.mode, "k": a.k,
        "good_requests": good, "malformed_requests": bad_sent, "errors": errors, "first_error": first_error,
        "queries_per_s": good as f64 / wall, "p50_ms": pct(0.5), "p90_ms": pct(0.9), "p99_ms": pct(0.99), "max_ms": pct(1.0),
        "server_rss_mib_before": before, "server_rss_mib_after": after,
    });
    if a.json {
        println!("{report}");
    } else {
        println!(
            "{} clients, {:.0} s: {good} good queries ({:.1}/s), {bad_sent} malformed, {errors} errors; latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms; server RSS {} -> {} MiB",
            a.clients, wall, good as f64 / wall, pct(0.5), pct(0.9), pct(0.99),
            before.map_or("?".into(), |m| format!("{m:.0}")), after.map_or("?".into(), |m| format!("{m:.0}"))
        );
        if let Some(e) = first_error {
            println!("first error: {e}");
        }
    }
    if errors > 0 {
        bail!("{errors} request(s) failed");
    }
    Ok(())
}
