//! Wukong's token reduction: shapes and distributions, the initial draws, the identity reduction
//! against the un-reduced token-level loss, a finite-difference check of its gradient, and a
//! reducing model end to end (tokens out, padding of the text still invisible).

use burn::backend::{Autodiff, Flex};
use burn::module::Param;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use vlp_model::token_reduction::TokenReductionConfig;
use vlp_model::{LossConfig, ModelConfig, TokenwiseLoss};

type B = Flex;
type AB = Autodiff<Flex>;

fn values<const D: usize, BK: burn::tensor::backend::Backend>(t: Tensor<BK, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

#[test]
fn weights_are_a_distribution_over_the_patches_for_each_output_token() {
    let device = Default::default();
    let r = TokenReductionConfig { tokens: 3, groups: 4 }.init::<B>(16, &device);
    let x = Tensor::<B, 3>::random([2, 9, 16], Distribution::Normal(0.0, 1.0), &device);
    let w = r.weights(x.clone());
    assert_eq!(w.dims(), [2, 3, 9]);
    for row in values(w).chunks(9) {
        let sum: f32 = row.iter().sum();
        assert!((sum - 1.0).abs() < 1e-5 && row.iter().all(|&p| p > 0.0), "{row:?}");
    }
    assert_eq!(r.forward(x).dims(), [2, 3, 16]);
    assert_eq!(r.tokens(), 3);
}

#[test]
fn it_starts_as_wukongs_kaiming_init() {
    let device = Default::default();
    let (c, t) = (256, 24);
    let r = TokenReductionConfig { tokens: t, groups: 8 }.init::<B>(c, &device);
    let std = |v: Vec<f32>| {
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        (mean, (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt())
    };
    for (name, got, want) in [
        ("select_grouped", std(values(r.select_grouped.val())), (2.0 / c as f64).sqrt()),
        ("feature_grouped", std(values(r.feature_grouped.val())), (2.0 / c as f64).sqrt()),
        ("select", std(values(r.select.val())), (2.0 / t as f64).sqrt()),
    ] {
        assert!(got.0.abs() < 0.1 * want && (got.1 / want - 1.0).abs() < 0.05, "{name}: {got:?}, want std {want}");
    }
    assert_eq!(r.select_grouped.val().dims(), [8, 32, 32]);
}

/// Identity feature convolution (each group's block is the identity).
fn identity_features(r: &mut vlp_model::token_reduction::TokenReduction<B>, groups: usize, k: usize) {
    let mut eye = vec![0f32; groups * k * k];
    for g in 0..groups {
        for i in 0..k {
            eye[g * k * k + i * k + i] = 1.0;
        }
    }
    r.feature_grouped = Param::from_tensor(Tensor::from_data(TensorData::new(eye, [groups, k, k]), &Default::default()));
}

#[test]
fn the_identity_reduction_gives_the_unreduced_token_loss() {
    let device = Default::default();
    let (b, n, d, l) = (3, 4, 8, 5);
    let mut r = TokenReductionConfig { tokens: n, groups: 2 }.init::<B>(d, &device);
    identity_features(&mut r, 2, d / 2);
    let image = Tensor::<B, 3>::random([b, n, d], Distribution::Normal(0.0, 1.0), &device);
    let eye: Vec<f32> = (0..b * n * n).map(|k| if (k % (n * n)) / n == k % n { 1.0 } else { 0.0 }).collect();
    let reduced = r.apply(Tensor::from_data(TensorData::new(eye, [b, n, n]), &device), image.clone());
    assert_eq!(values(reduced.clone()), values(image.clone()));
    let text = Tensor::<B, 3>::random([b, l, d], Distribution::Normal(0.0, 1.0), &device);
    let mask =
        Tensor::<B, 2>::from_data(TensorData::new(vec![1f32, 1., 1., 0., 0., 1., 1., 1., 1., 1., 1., 0., 0., 0., 0.], [b, l]), &device);
    let norm = vlp_model::dual::l2_normalize::<B, 3>;
    let scale = Tensor::<B, 1>::from_floats([2.0], &device);
    let a = values(TokenwiseLoss::forward(norm(image), norm(text.clone()), mask.clone(), scale.clone()));
    let c = values(TokenwiseLoss::forward(norm(reduced), norm(text), mask, scale));
    assert_eq!(a, c);
}

#[test]
fn its_gradient_matches_finite_differences() {
    let device = Default::default();
    let (b, n, d) = (2, 6, 8);
    let r = TokenReductionConfig { tokens: 2, groups: 2 }.init::<AB>(d, &device);
    let x = Tensor::<AB, 3>::random([b, n, d], Distribution::Normal(0.0, 1.0), &device);
    let target = Tensor::<AB, 3>::random([b, 2, d], Distribution::Normal(0.0, 1.0), &device);
    let loss = |r: &vlp_model::token_reduction::TokenReduction<AB>| (r.forward(x.clone()) * target.clone()).sum();
    let grads = loss(&r).backward();
    // d loss / d select[i, j], and / d feature_grouped[g, i, j], against central differences in f32
    let g_select = values(r.select.grad(&grads).unwrap());
    let g_feat = values(r.feature_grouped.grad(&grads).unwrap());
    let eps = 1e-2f32;
    for (k, analytic) in [(0usize, g_select[0]), (5, g_select[5]), (11, g_select[11])] {
        let bump = |delta: f32| {
            let mut v = values(r.select.val());
            v[k] += delta;
            let mut moved = r.clone();
            moved.select = Param::from_tensor(Tensor::from_data(TensorData::new(v, [d, 2]), &device));
            values(loss(&moved))[0]
        };
        let numeric = (bump(eps) - bump(-eps)) / (2.0 * eps);
        assert!((numeric - analytic).abs() < 2e-2 * (1.0 + analytic.abs()), "select[{k}]: {numeric} vs {analytic}");
    }
    for (k, analytic) in [(0usize, g_feat[0]), (7, g_feat[7]), (20, g_feat[20])] {
        let bump = |delta: f32| {
            let mut v = values(r.feature_grouped.val());
            v[k] += delta;
            let mut moved = r.clone();
            moved.feature_grouped = Param::from_tensor(Tensor::from_data(TensorData::new(v, [2, d / 2, d / 2]), &device));
            values(loss(&moved))[0]
        };
        let numeric = (bump(eps) - bump(-eps)) / (2.0 * eps);
        assert!((numeric - analytic).abs() < 2e-2 * (1.0 + analytic.abs()), "feature_grouped[{k}]: {numeric} vs {analytic}");
    }
}

#[test]
fn a_reducing_model_returns_t_unit_tokens_and_trains_on_them() {
    let text = r#"
embed_dim = 8
token_dim = 8
[image]
kind = "vit"
image_size = 8
patch_size = 2
width = 8
layers = 1
heads = 2
token_reduction = { tokens = 3, groups = 2 }
[text]
context_length = 6
vocab_size = 20
width = 8
layers = 1
heads = 2
causal = true
pool = "eos"
"#;
    let cfg: ModelConfig = toml::from_str(text).unwrap();
    cfg.validate().unwrap();
    let device = Default::default();
    let model = cfg.init::<AB>(&device);
    let images = Tensor::<AB, 4>::random([2, 3, 8, 8], Distribution::Normal(0.0, 1.0), &device);
    let out = model.encode_image(images.clone());
    assert_eq!(out.tokens.dims(), [2, 3, 8]);
    for row in values(out.tokens).chunks(8) {
        let norm: f32 = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }
    let ids = Tensor::<AB, 2, Int>::from_data(TensorData::new(vec![1, 5, 19, 0, 0, 0, 2, 7, 9, 19, 0, 0], [2, 6]), &device);
    let mask = ids.clone().greater_elem(0).float();
    let loss_cfg = LossConfig { global_weight: 1.0, token_weight: 1.0, ..Default::default() };
    let loss = model.loss(images, ids, mask, &loss_cfg).total;
    let grads = loss.backward();
    let r = model.image_token_reduction.as_ref().unwrap();
    assert!(values(r.select.grad(&grads).unwrap()).iter().any(|g| *g != 0.0), "the reduction is trained");
    // groups must divide the token width
    let bad: Result<ModelConfig, _> = toml::from_str(&text.replace("groups = 2", "groups = 3"));
    let e = bad.unwrap().validate().unwrap_err().to_string();
    assert!(e.contains("model.image.token_reduction.groups"), "{e}");
}
