//! The search page in headless Chromium, driven through chromedriver's W3C WebDriver protocol:
//! type a query (English, then Chinese) and see result images; upload an image and see results;
//! click a result to search by it. Needs Debian's `chromium` and `chromium-driver`, so it is
//! `#[ignore]`d in a plain `cargo test`; `scripts/test` installs both and runs it.
//!
//! `cargo test --test browser -- --ignored`

mod common;

use common::{tiny_index, Server};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A minimal WebDriver client: one HTTP/1.1 request per call.
struct Driver {
    child: Child,
    port: u16,
    session: String,
}

impl Driver {
    fn start(profile: &std::path::Path) -> Driver {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian: apt-get install chromium chromium-driver)");
        let mut d = Driver { child, port, session: String::new() };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        // the flags that keep Chromium off the network in a sandbox without one
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1200,900",
        ];
        let mut args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}}}});
        let v = d.call("POST", "/session", Some(&caps));
        d.session = v["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {v}")).to_string();
        d
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut c = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        c.write_all(req.as_bytes()).unwrap();
        // chromedriver says `Connection: close` and then keeps the connection open: read by length
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            let n = c.read(&mut buf).unwrap();
            assert!(n > 0, "chromedriver closed the connection early");
            out.extend_from_slice(&buf[..n]);
            let Some(split) = out.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
            let head = String::from_utf8_lossy(&out[..split]).to_ascii_lowercase();
            let len: usize = head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
            if out.len() >= split + 4 + len {
                let v: Value = serde_json::from_slice(&out[split + 4..split + 4 + len]).unwrap_or(Value::Null);
                return v["value"].clone();
            }
        }
    }

    fn session(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    fn find(&self, css: &str) -> String {
        let v = self.session("POST", "/element", Some(&json!({"using": "css selector", "value": css})));
        v.as_object().and_then(|o| o.values().next()).and_then(Value::as_str).unwrap_or_else(|| panic!("no element {css}: {v}")).to_string()
    }

    fn type_into(&self, css: &str, text: &str) {
        let el = self.find(css);
        self.session("POST", &format!("/element/{el}/clear"), Some(&json!({})));
        self.session("POST", &format!("/element/{el}/value"), Some(&json!({"text": text})));
    }

    fn click(&self, css: &str) {
        let el = self.find(css);
        self.session("POST", &format!("/element/{el}/click"), Some(&json!({})));
    }

    fn script(&self, js: &str) -> Value {
        self.session("POST", "/execute/sync", Some(&json!({"script": js, "args": []})))
    }

    /// Waits until the status line reports the finished search for `want` ("N results for {want}")
    /// and the results' images have all loaded. The line says "searching {want} …" while the request
    /// is in flight, with the previous search's results still shown: matching `want` alone let a
    /// loaded CI machine read those old results and click a card that was about to be replaced.
    fn wait_for_results(&self, want: &str) -> Value {
        let done = format!("results for {want}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.script(
                "const imgs = [...document.querySelectorAll('.result img')];
                 return {status: document.getElementById('status').textContent,
                         error: document.getElementById('status').className,
                         results: imgs.length,
                         loaded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
                         first: (document.querySelector('.result') || {}).dataset?.id || null};",
            );
            assert_ne!(v["error"], "error", "the page shows an error: {v}");
            let n = v["results"].as_u64().unwrap_or(0);
            if v["status"].as_str().unwrap_or("").contains(&done) && n > 0 && v["loaded"].as_u64() == Some(n) {
                return v;
            }
            assert!(Instant::now() < deadline, "no results for {want:?}: {v}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            self.session("DELETE", "", None);
        }
        let _ = self.child.kill();
    }
}

#[test]
#[ignore = "needs chromium and chromedriver; scripts/test runs it"]
fn search_page_by_text_by_upload_and_by_click() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, index) = tiny_index(tmp.path());
    let srv = Server::start(&index, &[]);
    let d = Driver::start(&tmp.path().join("profile"));
    d.session("POST", "/url", Some(&json!({"url": format!("http://{}/", srv.addr)})));

    d.type_into("#q", "a large red star");
    d.click("#search");
    let v = d.wait_for_results("\"a large red star\"");
    assert!(v["results"].as_u64().unwrap() >= 10, "{v}");

    d.type_into("#q", "一个小的蓝色圆形");
    d.click("#search");
    d.wait_for_results("\"一个小的蓝色圆形\"");

    let image = std::fs::read_dir(data.join("images")).unwrap().next().unwrap().unwrap().path();
    let upload = d.find("#file");
    d.session("POST", &format!("/element/{upload}/value"), Some(&json!({"text": image.display().to_string()})));
    let v = d.wait_for_results(image.file_name().unwrap().to_str().unwrap());

    let first = v["first"].as_str().unwrap().to_string();
    d.click(".result");
    d.wait_for_results(&format!("images like {first}"));

    // a picture of the page, for people
    let shot = d.session("GET", "/screenshot", None);
    use base64::Engine;
    let png = base64::engine::general_purpose::STANDARD.decode(shot.as_str().unwrap()).unwrap();
    assert_eq!(&png[..4], b"\x89PNG");
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::write(dir.join("search-page.png"), png).unwrap();
}
