//! Gradient caching (`train.grad_accum`, `--grad-accum`) is one pass over the whole batch: a
//! replica's slice encoded in micro-batches takes, step for step, the steps of the slice
//! encoded at once, for the global and token-level losses, BriVL's queues, a locked tower and
//! data-parallel replicas, since the loss is still computed over the whole global batch.

use vlp_train::config::Tower;
use vlp_train::trainer::train;
use vlp_train::RunConfig;

mod common;
use common::{assert_same_training, data, job, on_two_devices, steps, B, CONFIG};

/// Trains `config` in one pass and with `micro` micro-batches (on `devices` devices), and
/// compares every step and the weights.
fn micro_batches_equal_one_pass(config: &str, micro: usize, devices: usize, lock: Option<Tower>) {
    let tmp = tempfile::tempdir().unwrap();
    let d = data(&tmp.path().join("data"));
    let mut cfg = RunConfig::from_toml(config, "test").unwrap();
    cfg.train.lock = lock;
    let (whole, parts) = (tmp.path().join("whole"), tmp.path().join("parts"));
    train::<B>(&job(&cfg, &d, &whole, false), &Default::default()).unwrap();
    let accumulated = RunConfig { train: vlp_train::config::TrainConfig { grad_accum: micro, ..cfg.train.clone() }, ..cfg.clone() };
    accumulated.validate().unwrap();
    let parts_job = job(&accumulated, &d, &parts, false);
    match devices {
        1 => train::<B>(&parts_job, &Default::default()).map(|_| ()),
        _ => on_two_devices(&parts_job).map(|_| ()),
    }
    .unwrap();
    assert_eq!(steps(&whole).len(), cfg.train.steps);
    assert_same_training(&whole, &parts, &format!("{micro} micro-batches on {devices} device(s)"));
}

#[test]
fn four_micro_batches_take_the_steps_of_one_pass() {
    // global loss and FILIP's token-level loss, batch 8: micro-batches of 2
    micro_batches_equal_one_pass(CONFIG, 4, 1, None);
}

#[test]
fn uneven_micro_batches_and_the_global_loss_alone() {
    // batch 7 in 3 micro-batches: 2, 2 and 3 pairs
    let global = CONFIG.replace("token_weight = 0.5", "token_weight = 0.0").replace("batch_size = 8", "batch_size = 7");
    micro_batches_equal_one_pass(&global, 3, 1, None);
}

#[test]
fn micro_batches_with_brivl_queues() {
    let queued = CONFIG.replace(
        "token_weight = 0.5",
        "token_weight = 0.0\nqueue_weight = 1.0\n[loss.momentum]\nmomentum = 0.9\nqueue_size = 16\ntemperature = 0.07",
    );
    micro_batches_equal_one_pass(&queued, 2, 1, None);
}

#[test]
fn micro_batches_with_a_locked_tower() {
    micro_batches_equal_one_pass(CONFIG, 2, 1, Some(Tower::Image));
    micro_batches_equal_one_pass(CONFIG, 2, 1, Some(Tower::Text));
}

#[test]
fn micro_batches_on_two_devices_take_the_steps_of_one_device() {
    // two replicas of 4 pairs each, each in two micro-batches of 2
    micro_batches_equal_one_pass(CONFIG, 2, 2, None);
}

#[test]
fn a_bad_number_of_micro_batches_is_refused_by_name() {
    for bad in ["0", "9"] {
        let e = RunConfig::from_toml(&CONFIG.replace("seed = 7", &format!("seed = 7\ngrad_accum = {bad}")), "test")
            .and_then(|c| c.validate().map(|_| c))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("train.grad_accum"), "{e}");
    }
}
