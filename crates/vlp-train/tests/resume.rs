//! Checkpoints resume exactly, and a diverging loss stops the run without touching the last good
//! checkpoint. Tiny models on a tiny generated set, so this runs in seconds.

use burn::backend::{Autodiff, Flex};
use burn::tensor::Tensor;
use std::path::Path;
use vlp_embed::embed::embed_texts;
use vlp_train::checkpoint::{self, Encoder};
use vlp_train::trainer::{train, TrainJob};
use vlp_train::{RunConfig, TrainError};

mod common;
use common::{data, job, parameters, CONFIG};

type B = Autodiff<Flex>;

fn text_embeddings(run: &Path) -> Vec<f32> {
    let enc = Encoder::<Flex>::load(run, &Default::default()).unwrap();
    let texts = vec!["a small red circle".to_string(), "一个大的蓝色正方形".to_string()];
    let ids = vec!["a".to_string(), "b".to_string()];
    embed_texts(&enc.model, &enc.tokenizer, &ids, &texts, 8, &Default::default()).unwrap().vectors
}

#[test]
fn n_plus_resumed_n_steps_equal_2n_straight() {
    let tmp = tempfile::tempdir().unwrap();
    let d = data(&tmp.path().join("data"));
    let cfg = RunConfig::from_toml(CONFIG, "test").unwrap();
    let device = Default::default();

    let straight = tmp.path().join("straight");
    let s = train::<B>(&job(&cfg, &d, &straight, false), &device).unwrap();
    assert_eq!(s.state.step, 6);
    assert!(s.val.is_some() && s.random_baseline.is_some());

    let split = tmp.path().join("split");
    // interrupted after N = 3 steps of the 6-step schedule, then resumed
    let h = train::<B>(&TrainJob { stop_after: Some(3), ..job(&cfg, &d, &split, false) }, &device).unwrap();
    assert_eq!(h.state.step, 3);
    let r = train::<B>(&job(&cfg, &d, &split, true), &device).unwrap();
    assert_eq!(r.state.step, 6);
    assert!((s.final_loss - r.final_loss).abs() < 1e-5, "{} vs {}", s.final_loss, r.final_loss);
    let (a, b) = (text_embeddings(&straight), text_embeddings(&split));
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-5, "weights differ after resume: {x} vs {y}");
    }
    // the same run twice from scratch is identical too (seeded)
    let again = tmp.path().join("again");
    train::<B>(&job(&cfg, &d, &again, false), &device).unwrap();
    assert_eq!(text_embeddings(&straight), text_embeddings(&again));
    // a finished run is not overwritten by accident
    let err = train::<B>(&job(&cfg, &d, &straight, false), &device).unwrap_err().to_string();
    assert!(err.contains("--resume"), "{err}");
}

/// BriVL's momentum towers and key queues are part of the checkpoint: 3 + resumed 3 steps equal
/// 6 straight ones, queues (which wrap: 20 keys, batches of 8) and momentum weights included.
#[test]
fn momentum_towers_and_queues_resume_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let d = data(&tmp.path().join("data"));
    let brivl = CONFIG.replace(
        "token_weight = 0.5",
        "token_weight = 0.0\nqueue_weight = 1.0\n[loss.momentum]\nmomentum = 0.9\nqueue_size = 20\ntemperature = 0.07",
    );
    let cfg = RunConfig::from_toml(&brivl, "test").unwrap();
    let device = Default::default();
    let straight = tmp.path().join("straight");
    let s = train::<B>(&job(&cfg, &d, &straight, false), &device).unwrap();
    let split = tmp.path().join("split");
    train::<B>(&TrainJob { stop_after: Some(3), ..job(&cfg, &d, &split, false) }, &device).unwrap();
    let r = train::<B>(&job(&cfg, &d, &split, true), &device).unwrap();
    assert_eq!(r.state.step, 6);
    assert!((s.final_loss - r.final_loss).abs() < 1e-5, "{} vs {}", s.final_loss, r.final_loss);
    // 6 batches of 8 into 20 slots: full, next write at 48 mod 20 = 8
    assert_eq!((s.state.queue.filled, s.state.queue.next), (20, 8));
    assert_eq!(s.state.queue, r.state.queue);
    let load = |run: &Path| checkpoint::load_for_resume::<B>(&checkpoint::latest(run).unwrap(), &device, &cfg.train).unwrap();
    let (a, b) = (load(&straight), load(&split));
    let (ma, mb) = (a.momentum.expect("saved"), b.momentum.expect("saved"));
    let rows = |q: &vlp_model::momentum::KeyQueue<Flex>| q.keys.val().into_data().to_vec::<f32>().unwrap();
    for (x, y) in [(rows(&ma.image_queue), rows(&mb.image_queue)), (rows(&ma.text_queue), rows(&mb.text_queue))] {
        assert!(x.iter().any(|v| *v != 0.0), "the queue was filled");
        for (p, q) in x.iter().zip(&y) {
            assert!((p - q).abs() < 1e-5, "queues differ after resume: {p} vs {q}");
        }
    }
    let scale = |m: &vlp_model::DualEncoder<Flex>| m.logit_scale.val().into_scalar();
    assert!((scale(&ma.model) - scale(&mb.model)).abs() < 1e-6);
    // the step log carries the queue loss
    let log = std::fs::read_to_string(straight.join("train_log.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert!(first["queue"].as_f64().is_some_and(|q| q > 0.0), "{first}");
}

/// A checkpoint written before the model record gained its last field (Wukong's optional token
/// reduction) is that record without bincode's one-byte `None`: it still loads, to the same
/// weights. A reducing model trains, checkpoints and loads back with `T` tokens per image.
#[test]
fn older_checkpoints_load_and_a_reducing_model_round_trips() {
    let tmp = tempfile::tempdir().unwrap();
    let d = data(&tmp.path().join("data"));
    let mut cfg = RunConfig::from_toml(CONFIG, "test").unwrap();
    cfg.train.steps = 2;
    let run = tmp.path().join("run");
    train::<B>(&job(&cfg, &d, &run, false), &Default::default()).unwrap();
    let before = text_embeddings(&run);
    let model_bin = checkpoint::latest(&run).unwrap().join("model.bin");
    let mut bytes = std::fs::read(&model_bin).unwrap();
    assert_eq!(bytes.pop(), Some(0), "the record ends with the reduction's None");
    std::fs::write(&model_bin, &bytes).unwrap();
    assert_eq!(text_embeddings(&run), before);
    // a cut deeper than that is still refused, by name
    std::fs::write(&model_bin, &bytes[..bytes.len() - 9]).unwrap();
    let err = Encoder::<Flex>::load(&run, &Default::default()).err().expect("refused").to_string();
    assert!(err.contains("model.bin"), "{err}");

    let reducing = CONFIG.replace("heads = 2\n[model.text]", "heads = 2\ntoken_reduction = { tokens = 2, groups = 2 }\n[model.text]");
    let mut cfg = RunConfig::from_toml(&reducing, "test").unwrap();
    cfg.train.steps = 2;
    let run = tmp.path().join("reducing");
    train::<B>(&job(&cfg, &d, &run, false), &Default::default()).unwrap();
    let enc = Encoder::<Flex>::load(&run, &Default::default()).unwrap();
    let images = Tensor::<Flex, 4>::zeros([1, 3, 16, 16], &Default::default());
    assert_eq!(enc.model.encode_image(images).tokens.dims(), [1, 2, 16]);
}

#[test]
fn a_diverging_loss_stops_the_run_and_keeps_the_last_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let d = data(&tmp.path().join("data"));
    let mut cfg = RunConfig::from_toml(CONFIG, "test").unwrap();
    cfg.train.steps = 50;
    cfg.train.checkpoint_every = 1;
    let out = tmp.path().join("run");
    // two good steps, then the same run resumed at an absurd learning rate
    train::<B>(&TrainJob { stop_after: Some(2), ..job(&cfg, &d, &out, false) }, &Default::default()).unwrap();
    cfg.train.warmup_steps = 0;
    cfg.train.grad_clip_norm = 0.0;
    cfg.train.lr = 1e38;
    let err = train::<B>(&job(&cfg, &d, &out, true), &Default::default()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, TrainError::Diverged(_)), "{msg}");
    assert!(msg.contains("at step") && msg.contains("is kept"), "{msg}");
    let kept = checkpoint::latest(&out).expect("the step-1 checkpoint survives");
    let (_, _, state) = checkpoint::read_meta(&kept).unwrap();
    // the kept checkpoint is from before the bad step, and it loads with finite weights
    assert_eq!(state.step, 2, "{msg}");
    assert!(msg.contains("ckpt-000002, is kept") && !msg.contains("at step 2 "), "{msg}");
    assert!(text_embeddings(&out).iter().all(|x| x.is_finite()));
    let names: Vec<String> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
}

#[test]
fn config_errors_name_the_field() {
    let bad = CONFIG.replace("heads = 2\n[model.text]", "heads = 3\n[model.text]");
    let e = RunConfig::from_toml(&bad, "x.toml").unwrap_err().to_string();
    assert!(e.contains("model.image.heads"), "{e}");
    let bad = CONFIG.replace("batch_size = 8", "batch_size = 8\nbatchsize = 9");
    let e = RunConfig::from_toml(&bad, "x.toml").unwrap_err().to_string();
    assert!(e.contains("x.toml") && e.contains("batchsize"), "{e}");
    let bad = CONFIG.replace("patch_size = 8", "patch_size = 5");
    let e = RunConfig::from_toml(&bad, "x.toml").unwrap_err().to_string();
    assert!(e.contains("model.image.patch_size"), "{e}");
    // Every shipped config loads.
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut loaded = 0;
    for entry in std::fs::read_dir(&configs).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            RunConfig::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            loaded += 1;
        }
    }
    assert!(loaded >= 8, "only {loaded} configs found in {}", configs.display());
}

/// `--init` starts from another run's weights and tokenizer; `--lock` (LiT) keeps one tower bit
/// for bit while the other and the temperatures train, and survives a resume.
#[test]
fn fine_tuning_from_a_run_keeps_a_locked_tower_as_it_was() {
    use vlp_train::config::Tower;
    let tmp = tempfile::tempdir().unwrap();
    let d = data(&tmp.path().join("data"));
    let cfg = RunConfig::from_toml(CONFIG, "test").unwrap();
    let device = Default::default();
    let base = tmp.path().join("base");
    train::<B>(&job(&cfg, &d, &base, false), &device).unwrap();
    let before = parameters(&base);
    for tower in [Tower::Image, Tower::Text] {
        let mut ft_cfg = cfg.clone();
        ft_cfg.train.lock = Some(tower);
        ft_cfg.train.seed = 11;
        let out = tmp.path().join(format!("ft-{}", tower.field()));
        // interrupted after 2 of its 6 steps and resumed: the lock is set again on resume
        let ft = TrainJob { init: Some(base.clone()), stop_after: Some(2), ..job(&ft_cfg, &d, &out, false) };
        train::<B>(&ft, &device).unwrap();
        let s = train::<B>(&TrainJob { init: Some(base.clone()), ..job(&ft_cfg, &d, &out, true) }, &device).unwrap();
        assert_eq!(s.state.step, 6);
        let after = parameters(&out);
        let mut changed = 0;
        for (path, values) in &before {
            if path.split('.').next() == Some(tower.field()) {
                assert_eq!(values, &after[path], "{path} moved although the {} tower is locked", tower.field());
            } else if values != &after[path] {
                changed += 1;
            }
        }
        assert!(changed > 5, "only {changed} unlocked parameters trained");
        // the init run's tokenizer came along
        let read = |run: &Path| std::fs::read_to_string(checkpoint::latest(run).unwrap().join("tokenizer.json")).unwrap();
        assert_eq!(read(&base), read(&out));
    }
    // another architecture is refused by name
    let mut wider = cfg.clone();
    wider.model.embed_dim = 32;
    let err = train::<B>(&TrainJob { init: Some(base.clone()), ..job(&wider, &d, &tmp.path().join("x"), false) }, &device)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--init") && err.contains("differs"), "{err}");
}
