//! Data-parallel training is one device's training with the whole batch: two replicas of a
//! global batch of n (n/2 pairs each) take, step for step, the steps of one device with the
//! batch of n, for the global loss, the token-level loss and BriVL's queues; and each replica's
//! gathered batch gives the whole batch's logits and, summed over the replicas, its gradients.
//! The replicas are two CPU devices of this process, as `vlp train --devices cpu:2` runs them.

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use vlp_model::{BatchFeatures, ClipLoss};
use vlp_train::parallel::{self, slice_of};
use vlp_train::trainer::{train, TrainJob};
use vlp_train::RunConfig;

mod common;
use common::{assert_same_training, data, job, on_two_devices, steps, CONFIG};

use common::B;

/// Trains `config` on one device and on two, and compares every step and the weights at the end.
fn two_devices_equal_one(config: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let d = data(&tmp.path().join("data"));
    let cfg = RunConfig::from_toml(config, "test").unwrap();
    let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
    train::<B>(&job(&cfg, &d, &one, false), &Default::default()).unwrap();
    let s = on_two_devices(&job(&cfg, &d, &two, false)).unwrap();
    assert_eq!(s.state.step, cfg.train.steps);
    assert_eq!(steps(&one).len(), cfg.train.steps);
    assert!(steps(&one).iter().zip(steps(&two)).all(|(x, y)| (x.2, y.2) == (1, 2)), "the second run is on two devices");
    assert_same_training(&one, &two, "two devices");
}

#[test]
fn two_devices_take_the_steps_of_one_with_the_whole_batch() {
    // global loss and FILIP's token-level loss (CONFIG has both), batch 8: 4 pairs each
    two_devices_equal_one(CONFIG);
}

#[test]
fn an_odd_global_batch_splits_and_still_equals_one_device() {
    // global loss only, batch 7: 3 pairs on the first replica and 4 on the second
    two_devices_equal_one(&CONFIG.replace("token_weight = 0.5", "token_weight = 0.0").replace("batch_size = 8", "batch_size = 7"));
}

#[test]
fn brivl_queues_are_filled_from_the_whole_batch() {
    let queued = CONFIG.replace(
        "token_weight = 0.5",
        "token_weight = 0.0\nqueue_weight = 1.0\n[loss.momentum]\nmomentum = 0.9\nqueue_size = 16\ntemperature = 0.07",
    );
    two_devices_equal_one(&queued);
}

/// The data's order and the global batch do not depend on the number of devices, so a run
/// interrupted on two devices resumes on one (or the other way round) exactly.
#[test]
fn a_run_stopped_on_two_devices_resumes_on_one_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let d = data(&tmp.path().join("data"));
    let cfg = RunConfig::from_toml(CONFIG, "test").unwrap();
    let (straight, split) = (tmp.path().join("straight"), tmp.path().join("split"));
    train::<B>(&job(&cfg, &d, &straight, false), &Default::default()).unwrap();
    on_two_devices(&TrainJob { stop_after: Some(3), ..job(&cfg, &d, &split, false) }).unwrap();
    train::<B>(&job(&cfg, &d, &split, true), &Default::default()).unwrap();
    let (a, b) = (steps(&straight), steps(&split));
    assert_eq!(a.len(), b.len());
    for (step, (x, y)) in a.iter().zip(&b).enumerate() {
        assert!((x.0 - y.0).abs() <= 1e-5 * x.0.abs().max(1.0), "step {}: loss {} straight, {} resumed", step + 1, x.0, y.0);
    }
    assert_eq!(b.iter().map(|s| s.2).collect::<Vec<_>>(), [2, 2, 2, 1, 1, 1]);
}

#[test]
fn a_batch_too_small_for_the_devices_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = RunConfig::from_toml(&CONFIG.replace("batch_size = 8", "batch_size = 3"), "test").unwrap();
    let e = on_two_devices(&job(&cfg, "unused", tmp.path(), false)).unwrap_err().to_string();
    assert!(e.contains("train.batch_size 3") && e.contains("2 devices"), "{e}");
}

/// Each replica's gathered batch gives the whole batch's logits, and the replicas' gradients
/// with respect to their own rows, put together, are the whole batch's loss gradient.
#[test]
fn each_replica_sees_the_whole_batch_and_the_gradients_add_up() {
    let (n, dim, world) = (7, 5, 2);
    let values: Vec<f32> = (0..2 * n * dim).map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0).collect();
    let rows = |t: usize| -> Tensor<B, 2> {
        let m = Tensor::<B, 2>::from_data(TensorData::new(values[t * n * dim..(t + 1) * n * dim].to_vec(), [n, dim]), &Default::default());
        vlp_model::dual::l2_normalize(m)
    };
    let scale = || Tensor::<B, 1>::from_floats([1.5], &Default::default());
    // one device, the whole batch
    let (image, text) = (rows(0).detach().require_grad(), rows(1).detach().require_grad());
    let logits = ClipLoss::logits(image.clone(), text.clone(), scale()).into_data().to_vec::<f32>().unwrap();
    let grads = ClipLoss::forward(image.clone(), text.clone(), scale()).backward();
    let full_grad = image.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
    // two replicas, each with its rows
    let _group = parallel::group_lock();
    let ranks = parallel::ranks(world, std::time::Duration::from_secs(60), None).unwrap();
    let per_rank: Vec<(Vec<f32>, Vec<f32>)> = std::thread::scope(|s| {
        let handles: Vec<_> = ranks
            .into_iter()
            .map(|rank| {
                let (rows, scale) = (&rows, &scale);
                s.spawn(move || {
                    rank.register::<Flex>(&Default::default()).unwrap();
                    let mine = slice_of(n, rank.index, world);
                    let image = rows(0).narrow(0, mine.start, mine.len()).detach().require_grad();
                    let text = rows(1).narrow(0, mine.start, mine.len()).detach().require_grad();
                    let local = BatchFeatures { image: image.clone(), text, tokens: None };
                    let all = rank.gather_features(local, &parallel::Layout::even(n, world)).unwrap();
                    let logits = ClipLoss::logits(all.image.clone(), all.text.clone(), scale()).into_data().to_vec::<f32>().unwrap();
                    let grads = ClipLoss::forward(all.image, all.text, scale()).backward();
                    let grad = image.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
                    rank.finish::<Flex>().unwrap();
                    (logits, grad)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let close = |a: &[f32], b: &[f32], what: &str| {
        assert_eq!(a.len(), b.len(), "{what}");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= 1e-6, "{what}[{i}]: {x} against {y}");
        }
    };
    for (r, (l, _)) in per_rank.iter().enumerate() {
        close(l, &logits, &format!("rank {r}'s logits"));
    }
    let joined: Vec<f32> = per_rank.iter().flat_map(|(_, g)| g.clone()).collect();
    close(&joined, &full_grad, "the replicas' image gradients");
}
