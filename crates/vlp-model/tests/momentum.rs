//! BriVL's momentum contrast: the key queue's ring-buffer order, the EMA update and the loss,
//! each against values computed by hand, and the loss with an empty queue and `m` = 0 against the
//! in-batch global loss.

use burn::backend::Flex;
use burn::module::Param;
use burn::tensor::{Tensor, TensorData};
use vlp_model::momentum::{ema, queue_loss, KeyQueue, Keys};
use vlp_model::{ClipLoss, LossConfig, ModelConfig, MomentumConfig, MomentumState, QueueCursor, QueueInputs};

type B = Flex;

fn rows(data: &[f32], cols: usize) -> Tensor<B, 2> {
    Tensor::from_data(TensorData::new(data.to_vec(), [data.len() / cols, cols]), &Default::default())
}

fn values<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

#[test]
fn the_queue_overwrites_its_oldest_keys_and_wraps_around() {
    let q = KeyQueue::<B>::new(5, 1, &Default::default());
    let c = QueueCursor::default();
    assert!(q.filled(c).is_none());
    let (q, c) = q.enqueue(rows(&[1.0, 2.0], 1), c);
    assert_eq!(c, QueueCursor { next: 2, filled: 2 });
    assert_eq!(values(q.filled(c).unwrap()), [1.0, 2.0]);
    let (q, c) = q.enqueue(rows(&[3.0, 4.0], 1), c);
    // 5 and 6 fill the last slot and wrap to the first
    let (q, c) = q.enqueue(rows(&[5.0, 6.0], 1), c);
    assert_eq!(c, QueueCursor { next: 1, filled: 5 });
    assert_eq!(values(q.keys.val()), [6.0, 2.0, 3.0, 4.0, 5.0]);
    // a batch larger than the queue leaves its newest keys
    let (q, c) = q.enqueue(rows(&[7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0], 1), c);
    assert_eq!(c, QueueCursor { next: 1, filled: 5 });
    assert_eq!(values(q.keys.val()), [13.0, 9.0, 10.0, 11.0, 12.0]);
    // an empty queue (queue_size 0) takes nothing
    let empty = KeyQueue::<B>::new(0, 1, &Default::default());
    let (empty, c) = empty.enqueue(rows(&[1.0], 1), QueueCursor::default());
    assert!(empty.filled(c).is_none());
}

fn tiny() -> ModelConfig {
    let text = r#"
embed_dim = 8
[image]
kind = "vit"
image_size = 8
patch_size = 4
width = 8
layers = 1
heads = 2
[text]
context_length = 6
vocab_size = 20
width = 8
layers = 1
heads = 2
causal = true
pool = "eos"
"#;
    toml::from_str(text).unwrap()
}

#[test]
fn the_momentum_towers_move_by_one_minus_m_towards_the_online_ones() {
    let device = Default::default();
    let mut momentum = tiny().init::<B>(&device);
    let mut online = tiny().init::<B>(&device);
    momentum.logit_scale = Param::from_tensor(Tensor::from_floats([2.0], &device));
    online.logit_scale = Param::from_tensor(Tensor::from_floats([4.0], &device));
    momentum.token_logit_scale = Param::from_tensor(Tensor::from_floats([1.0], &device));
    online.token_logit_scale = Param::from_tensor(Tensor::from_floats([-1.0], &device));
    let moved = ema(momentum, &online, 0.25);
    // 0.25 · 2 + 0.75 · 4 and 0.25 · 1 − 0.75 · 1
    assert_eq!(values(moved.logit_scale.val()), [3.5]);
    assert_eq!(values(moved.token_logit_scale.val()), [-0.5]);
    // a matrix and a bias, element by element
    let linear = || burn::nn::LinearConfig::new(3, 2).init::<B>(&device);
    let (m, o) = (linear(), linear());
    let (mw, ow) = (values(m.weight.val()), values(o.weight.val()));
    let (mb, ob) = (values(m.bias.as_ref().unwrap().val()), values(o.bias.as_ref().unwrap().val()));
    let moved = ema(m, &o, 0.9);
    for (got, (a, b)) in values(moved.weight.val()).iter().zip(mw.iter().zip(&ow)) {
        assert!((got - (0.9 * a + 0.1 * b)).abs() < 1e-6);
    }
    for (got, (a, b)) in values(moved.bias.unwrap().val()).iter().zip(mb.iter().zip(&ob)) {
        assert!((got - (0.9 * a + 0.1 * b)).abs() < 1e-6);
    }
    // m = 0 copies the online model
    let copied = ema(tiny().init::<B>(&device), &online, 0.0);
    assert_eq!(values(copied.logit_scale.val()), [4.0]);
}

#[test]
fn the_queue_loss_matches_a_hand_computed_value() {
    // image queries q0 = (1, 0), q1 = (0, 1); text keys k0 = (1, 0), k1 = (0, 1);
    // one queued text key (0.6, 0.8); text queries t0 = (0.6, 0.8), t1 = (1, 0); image keys equal
    // the image queries; empty image queue; scale 2.
    let keys = Keys { image: rows(&[1.0, 0.0, 0.0, 1.0], 2), text: rows(&[1.0, 0.0, 0.0, 1.0], 2) };
    let scale = Tensor::<B, 1>::from_floats([2.0], &Default::default());
    let loss = queue_loss(rows(&[1.0, 0.0, 0.0, 1.0], 2), rows(&[0.6, 0.8, 1.0, 0.0], 2), &keys, None, Some(rows(&[0.6, 0.8], 2)), scale);
    let ce = |logits: &[f64], target: usize| -> f64 {
        let z: f64 = logits.iter().map(|l| l.exp()).sum();
        z.ln() - logits[target]
    };
    // image → [k0, k1, queued]: q0 · = (1, 0, 0.6), q1 · = (0, 1, 0.8), times 2
    let i2t = (ce(&[2.0, 0.0, 1.2], 0) + ce(&[0.0, 2.0, 1.6], 1)) / 2.0;
    // text → image keys: t0 · = (0.6, 0.8), t1 · = (1, 0), times 2
    let t2i = (ce(&[1.2, 1.6], 0) + ce(&[2.0, 0.0], 1)) / 2.0;
    let want = (i2t + t2i) / 2.0;
    let got = values(loss)[0] as f64;
    assert!((got - want).abs() < 1e-6, "{got} vs {want}");
}

#[test]
fn with_an_empty_queue_and_m_zero_the_loss_is_the_in_batch_global_loss() {
    let device = Default::default();
    let cfg = tiny();
    let model = cfg.init::<B>(&device);
    let momentum_cfg = MomentumConfig { momentum: 0.0, queue_size: 0, temperature: None };
    // m = 0: the momentum towers are the online ones as they stand
    let state = MomentumState::new(ema(cfg.init::<B>(&device), &model, 0.0), &momentum_cfg, 8, &device);
    let images = Tensor::<B, 4>::random([4, 3, 8, 8], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
    let ids = Tensor::<B, 2, burn::tensor::Int>::from_data(
        TensorData::new(vec![1, 5, 19, 0, 0, 0, 2, 7, 9, 19, 0, 0, 3, 19, 0, 0, 0, 0, 4, 4, 6, 8, 19, 0], [4, 6]),
        &device,
    );
    let mask = ids.clone().greater_elem(0).float();
    let keys = state.keys(images.clone(), ids.clone(), mask.clone());
    let queue = QueueInputs {
        keys: keys.clone(),
        image_queue: state.image_queue.filled(QueueCursor::default()),
        text_queue: state.text_queue.filled(QueueCursor::default()),
    };
    let loss_cfg = LossConfig { global_weight: 0.0, queue_weight: 1.0, momentum: momentum_cfg, ..Default::default() };
    let queued = values(model.loss_with_queue(images.clone(), ids.clone(), mask.clone(), &loss_cfg, queue).total)[0];
    let global =
        values(ClipLoss::forward(model.encode_image(images).global, model.encode_text(ids, mask).global, model.logit_scale.val()))[0];
    assert!((queued - global).abs() < 1e-6, "{queued} vs {global}");
    assert!(global > 0.1);
}
