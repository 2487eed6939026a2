//! Two machines, as two `vlp train --nodes 2` processes talking over loopback through
//! `vlp coordinator`, each reading its half of the data, and two devices of one process
//! (`--devices cpu:2`), take the steps of one device with the whole batch, across epoch ends
//! and a resume; and a machine that never joins stops the job with its cause named, not a hang.

mod common;
use common::{ok, s, vlp, CONFIG};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A free loopback port (bound, then released for the process that will listen on it).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Kills the process when dropped (the coordinator runs until stopped).
struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_vlp")).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run vlp")
}

/// `n` synthetic 16 px images in `dir/data` and the tiny config in `dir/tiny.toml`.
fn tiny_data(dir: &Path, n: usize) -> (PathBuf, PathBuf) {
    let (data, config) = (dir.join("data"), dir.join("tiny.toml"));
    std::fs::write(&config, CONFIG).unwrap();
    ok(&["data", "build", "synthetic", "--out", s(&data), "--images", &n.to_string(), "--size", "16"]);
    (data, config)
}

/// Each step's (loss, gradient norm) from a run's log.
fn steps(run: &Path) -> Vec<(f64, f64)> {
    std::fs::read_to_string(run.join("train_log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["loss"].as_f64().unwrap(), v["grad_norm"].as_f64().unwrap())
        })
        .collect()
}

/// Runs `vlp train ARGS` as the two machines of one job, with a coordinator of their own, and
/// returns each machine's stderr; fails the test if either fails.
fn on_two_machines(args: &[&str]) -> Vec<String> {
    let port = free_port();
    let _coordinator = Killed(spawn(&["coordinator", "--port", &port.to_string()]));
    let coordinator = format!("127.0.0.1:{port}");
    let node = |rank: usize| {
        let (address, r) = (format!("127.0.0.1:{}", free_port()), rank.to_string());
        let place = ["--nodes", "2", "--node-rank", &r, "--coordinator", &coordinator, "--node-address", &address];
        spawn(&[args, &place[..], &["--collective-timeout-s", "120"]].concat())
    };
    let (first, second) = (node(0), node(1));
    [first, second]
        .into_iter()
        .enumerate()
        .map(|(rank, child)| {
            let out = child.wait_with_output().unwrap();
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(out.status.success(), "node {rank} of {args:?} failed: {err}");
            err
        })
        .collect()
}

/// Asserts that two runs' logs hold the same steps, within float rounding.
fn assert_same_steps(a: &[(f64, f64)], b: &[(f64, f64)], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: the first replica logged every step");
    for (step, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x.0 - y.0).abs() <= 1e-5 * x.0.max(1.0), "step {}: loss {} against {} on {what}", step + 1, x.0, y.0);
        assert!((x.1 - y.1).abs() <= 1e-5 * x.1.max(1.0), "step {}: gradient norm {} against {} on {what}", step + 1, x.1, y.1);
    }
}

#[test]
fn two_machines_over_loopback_equal_one_device_and_resume_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    // 40 training pairs: two global batches of 16 an epoch, so the 6 steps cross two epoch ends
    let (data, config) = tiny_data(tmp.path(), 50);
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    // Without a shuffle buffer, machine m reads every second pair from the m-th, so each global
    // batch holds the pairs of one device's batch, in another order (which the loss ignores).
    let common = ["train", "--config", s(&config), "--train", s(&data), "--threads-per-device", "1", "--set", "train.shuffle_buffer=0"];
    ok(&[&common[..], &["--out", s(&one)]].concat());
    let a = steps(&one);
    assert_eq!(a.len(), 6);

    for (rank, err) in on_two_machines(&[&common[..], &["--out", s(&two)]].concat()).iter().enumerate() {
        assert!(err.contains("trained 6 steps (96 samples"), "node {rank} counts the global batch: {err}");
    }
    assert_same_steps(&a, &steps(&two), "two machines");
    // and two devices in one process, as `--devices cpu:2`
    let local = tmp.path().join("local");
    ok(&[&common[..], &["--out", s(&local), "--devices", "cpu:2"]].concat());
    assert_same_steps(&a, &steps(&local), "two devices");
    // only node 0 wrote the run: its checkpoints are the run's, and they load
    assert!(two.join("latest").is_file());
    ok(&["eval", "--checkpoint", s(&two), "--data", s(&data), "--split", "test", "--out", s(&tmp.path().join("eval"))]);

    // Stopped in the middle of the second epoch, the job resumes on two machines to the same
    // steps; on another number of machines it is refused, since the epoch's batches differ.
    let halves = tmp.path().join("halves");
    on_two_machines(&[&common[..], &["--out", s(&halves), "--stop-after", "3"]].concat());
    let (done, _, err) = vlp(&[&common[..], &["--out", s(&halves), "--resume"]].concat());
    assert!(!done && err.contains("divided among 2 machine(s)") && err.contains("resume on 2"), "{err}");
    on_two_machines(&[&common[..], &["--out", s(&halves), "--resume"]].concat());
    assert_same_steps(&a, &steps(&halves), "two machines, stopped after 3 steps and resumed");

    // WebDataset shards that divide among the machines: each reads only its own
    let shards = tmp.path().join("shards");
    ok(&["data", "corrupt", s(&data), "--split", "train", "--out", s(&shards), "--fraction", "0", "--per-shard", "10"]);
    let sharded = tmp.path().join("sharded");
    let args = ["train", "--config", s(&config), "--train", s(&shards), "--out", s(&sharded), "--threads-per-device", "1"];
    for (rank, err) in on_two_machines(&args).iter().enumerate() {
        assert!(err.contains(&format!("reads shards {rank}, {}, ... of the 4", rank + 2)), "node {rank}: {err}");
        assert!(err.contains("trained 6 steps (96 samples"), "node {rank}: {err}");
    }
    assert_eq!(steps(&sharded).len(), 6);
}

#[test]
fn a_machine_that_never_joins_stops_the_job_with_the_cause() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, config) = tiny_data(tmp.path(), 100);
    let port = free_port();
    let _coordinator = Killed(spawn(&["coordinator", "--port", &port.to_string()]));
    let (done, out, err) = vlp(&[
        "train",
        "--config",
        s(&config),
        "--train",
        s(&data),
        "--out",
        s(&tmp.path().join("run")),
        "--nodes",
        "2",
        "--node-rank",
        "0",
        "--coordinator",
        &format!("127.0.0.1:{port}"),
        "--node-address",
        &format!("127.0.0.1:{}", free_port()),
        "--collective-timeout-s",
        "3",
    ]);
    assert!(!done, "{out}");
    assert!(err.contains("rank 0: registration waited more than 3 s"), "{err}");
}
