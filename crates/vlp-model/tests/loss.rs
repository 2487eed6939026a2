//! The losses against references written as plain f64 loops (not with the code under test), the
//! pad-invariance of the token-level logits, and a finite-difference check of the gradient.

use burn::backend::{Autodiff, Flex};
use burn::tensor::{Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vlp_model::{ClipLoss, TokenwiseLoss};

type B = Flex;
type AB = Autodiff<Flex>;

/// A deterministic pseudo-random vector in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect()
}

/// Rows of `dim` normalised to unit length.
fn unit_rows(mut v: Vec<f64>, dim: usize) -> Vec<f64> {
    for row in v.chunks_mut(dim) {
        let n = row.iter().map(|x| x * x).sum::<f64>().sqrt();
        row.iter_mut().for_each(|x| *x /= n);
    }
    v
}

fn tensor<const D: usize, BK: burn::tensor::backend::Backend>(v: &[f64], shape: [usize; D]) -> Tensor<BK, D> {
    let f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
    Tensor::from_data(TensorData::new(f, shape), &Default::default())
}

fn scalar<BK: burn::tensor::backend::Backend>(t: Tensor<BK, 1>) -> f64 {
    t.into_data().to_vec::<f32>().unwrap()[0] as f64
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Cross-entropy of each row against the diagonal, averaged.
fn ce_rows(logits: &[Vec<f64>]) -> f64 {
    let n = logits.len();
    let mut total = 0.0;
    for (i, row) in logits.iter().enumerate() {
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let lse = m + row.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
        total += lse - row[i];
    }
    total / n as f64
}

fn clip_reference(img: &[f64], txt: &[f64], b: usize, d: usize, log_scale: f64) -> f64 {
    let s = log_scale.exp();
    let i2t: Vec<Vec<f64>> = (0..b).map(|i| (0..b).map(|j| s * dot(&img[i * d..][..d], &txt[j * d..][..d])).collect()).collect();
    let t2i: Vec<Vec<f64>> = (0..b).map(|j| (0..b).map(|i| i2t[i][j]).collect()).collect();
    (ce_rows(&i2t) + ce_rows(&t2i)) / 2.0
}

/// FILIP with its two logit matrices; `mask[j][q]` says whether text j's token q is real.
#[allow(clippy::too_many_arguments)] // the formula's terms, each named
fn filip_reference(
    img: &[f64],
    txt: &[f64],
    mask: &[Vec<bool>],
    b: usize,
    n: usize,
    l: usize,
    d: usize,
    log_scale: f64,
) -> (Vec<Vec<f64>>, Vec<Vec<f64>>, f64) {
    let it = |i: usize, p: usize| &img[(i * n + p) * d..][..d];
    let tt = |j: usize, q: usize| &txt[(j * l + q) * d..][..d];
    let mut i2t = vec![vec![0.0; b]; b];
    let mut t2i = vec![vec![0.0; b]; b];
    for i in 0..b {
        for j in 0..b {
            let mut sum = 0.0;
            for p in 0..n {
                let mut best = f64::NEG_INFINITY;
                for q in 0..l {
                    if mask[j][q] {
                        best = best.max(dot(it(i, p), tt(j, q)));
                    }
                }
                sum += best;
            }
            i2t[i][j] = sum / n as f64;
            let (mut sum, mut count) = (0.0, 0.0);
            for q in 0..l {
                if mask[j][q] {
                    let best = (0..n).map(|p| dot(it(i, p), tt(j, q))).fold(f64::NEG_INFINITY, f64::max);
                    sum += best;
                    count += 1.0;
                }
            }
            t2i[j][i] = sum / count;
        }
    }
    let s = log_scale.exp();
    let scaled = |m: &Vec<Vec<f64>>| m.iter().map(|r| r.iter().map(|x| x * s).collect()).collect::<Vec<Vec<f64>>>();
    let loss = (ce_rows(&scaled(&i2t)) + ce_rows(&scaled(&t2i))) / 2.0;
    (i2t, t2i, loss)
}

#[test]
fn clip_loss_matches_f64_reference() {
    let (b, d) = (5, 8);
    let img = unit_rows(values(b * d, 1), d);
    let txt = unit_rows(values(b * d, 2), d);
    for log_scale in [0.0, 2.659_260_1, 4.0] {
        let got = scalar(ClipLoss::forward::<B>(tensor(&img, [b, d]), tensor(&txt, [b, d]), tensor(&[log_scale], [1])));
        let want = clip_reference(&img, &txt, b, d, log_scale);
        assert!((got - want).abs() < 1e-4 * want.max(1.0), "log_scale {log_scale}: {got} vs {want}");
    }
    // hand-computed: two orthogonal pairs at scale 1 → each row is [1, 0] → ln(1 + e^-1)
    let eye = [1.0, 0.0, 0.0, 1.0];
    let got = scalar(ClipLoss::forward::<B>(tensor(&eye, [2, 2]), tensor(&eye, [2, 2]), tensor(&[0.0], [1])));
    assert!((got - (1.0 + (-1.0f64).exp()).ln()).abs() < 1e-6, "{got}");
}

fn mask_rows(lengths: &[usize], l: usize) -> (Vec<Vec<bool>>, Vec<f64>) {
    let m: Vec<Vec<bool>> = lengths.iter().map(|&k| (0..l).map(|q| q < k).collect()).collect();
    let flat = m.iter().flatten().map(|&x| if x { 1.0 } else { 0.0 }).collect();
    (m, flat)
}

#[test]
fn tokenwise_loss_and_both_logit_matrices_match_f64_reference() {
    let (b, n, l, d) = (4, 3, 6, 5);
    let img = unit_rows(values(b * n * d, 3), d);
    let txt = unit_rows(values(b * l * d, 4), d);
    let (mask, mask_flat) = mask_rows(&[6, 2, 4, 3], l);
    let (want_i2t, want_t2i, want_loss) = filip_reference(&img, &txt, &mask, b, n, l, d, 1.5);
    let (i2t, t2i) = TokenwiseLoss::similarities::<B>(tensor(&img, [b, n, d]), tensor(&txt, [b, l, d]), tensor(&mask_flat, [b, l]));
    let (i2t, t2i) = (i2t.into_data().to_vec::<f32>().unwrap(), t2i.into_data().to_vec::<f32>().unwrap());
    for i in 0..b {
        for j in 0..b {
            assert!((i2t[i * b + j] as f64 - want_i2t[i][j]).abs() < 1e-5, "i2t[{i}][{j}]");
            assert!((t2i[j * b + i] as f64 - want_t2i[j][i]).abs() < 1e-5, "t2i[{j}][{i}]");
        }
    }
    // the two directions are different matrices, not transposes of each other
    assert!((0..b * b).any(|k| (i2t[k] - t2i[(k % b) * b + k / b]).abs() > 1e-3));
    let got = scalar(TokenwiseLoss::forward::<B>(
        tensor(&img, [b, n, d]),
        tensor(&txt, [b, l, d]),
        tensor(&mask_flat, [b, l]),
        tensor(&[1.5], [1]),
    ));
    assert!((got - want_loss).abs() < 1e-4, "{got} vs {want_loss}");
}

#[test]
fn padding_never_changes_a_token_level_logit() {
    let (b, n, l, d) = (3, 4, 5, 6);
    let img = unit_rows(values(b * n * d, 5), d);
    let txt = unit_rows(values(b * l * d, 6), d);
    let (_, mask) = mask_rows(&[5, 3, 1], l);
    let base = TokenwiseLoss::similarities::<B>(tensor(&img, [b, n, d]), tensor(&txt, [b, l, d]), tensor(&mask, [b, l]));
    // add 7 pad tokens with large, arbitrary embeddings
    let extra = 7;
    let pads = values(b * extra * d, 7).into_iter().map(|x| x * 100.0).collect::<Vec<_>>();
    let mut txt2 = Vec::new();
    let mut mask2 = Vec::new();
    for j in 0..b {
        txt2.extend_from_slice(&txt[j * l * d..(j + 1) * l * d]);
        txt2.extend_from_slice(&pads[j * extra * d..(j + 1) * extra * d]);
        mask2.extend_from_slice(&mask[j * l..(j + 1) * l]);
        mask2.extend(std::iter::repeat_n(0.0, extra));
    }
    let padded =
        TokenwiseLoss::similarities::<B>(tensor(&img, [b, n, d]), tensor(&txt2, [b, l + extra, d]), tensor(&mask2, [b, l + extra]));
    for (x, y) in [(base.0, padded.0), (base.1, padded.1)] {
        let (x, y) = (x.into_data().to_vec::<f32>().unwrap(), y.into_data().to_vec::<f32>().unwrap());
        for (a, c) in x.iter().zip(&y) {
            assert!((a - c).abs() < 1e-6, "{a} vs {c}");
        }
    }
}

#[test]
fn gradients_match_finite_differences_of_the_reference() {
    let (b, n, l, d) = (3, 2, 3, 4);
    let img = unit_rows(values(b * n * d, 8), d);
    let txt = unit_rows(values(b * l * d, 9), d);
    let (mask, mask_flat) = mask_rows(&[3, 2, 1], l);
    let log_scale = 1.0;
    let img_t: Tensor<AB, 3> = tensor(&img, [b, n, d]).require_grad();
    let txt_t: Tensor<AB, 2> = tensor(&txt, [b * l, d]).require_grad();
    let img_g: Tensor<AB, 2> = tensor(&img[..b * d], [b, d]).require_grad();
    let token =
        TokenwiseLoss::forward(img_t.clone(), txt_t.clone().reshape([b, l, d]), tensor(&mask_flat, [b, l]), tensor(&[log_scale], [1]));
    let global = ClipLoss::forward(img_g.clone(), txt_t.clone().slice([0..b]), tensor(&[log_scale], [1]));
    let grads = (token + global).backward();
    let g_img = img_t.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
    let g_txt = txt_t.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();
    let g_img_global = img_g.grad(&grads).unwrap().into_data().to_vec::<f32>().unwrap();

    let total = |img: &[f64], txt: &[f64], img_global: &[f64]| {
        filip_reference(img, txt, &mask, b, n, l, d, log_scale).2 + clip_reference(img_global, &txt[..b * d], b, d, log_scale)
    };
    let img_global: Vec<f64> = img[..b * d].to_vec();
    let h = 1e-6;
    let fd = |which: usize, k: usize| {
        let (mut a, mut t, mut g) = (img.clone(), txt.clone(), img_global.clone());
        let (mut a2, mut t2, mut g2) = (img.clone(), txt.clone(), img_global.clone());
        match which {
            0 => {
                a[k] += h;
                a2[k] -= h;
            }
            1 => {
                t[k] += h;
                t2[k] -= h;
            }
            _ => {
                g[k] += h;
                g2[k] -= h;
            }
        }
        (total(&a, &t, &g) - total(&a2, &t2, &g2)) / (2.0 * h)
    };
    for k in 0..img.len() {
        assert!((g_img[k] as f64 - fd(0, k)).abs() < 1e-4, "d/d image token {k}: {} vs {}", g_img[k], fd(0, k));
    }
    for k in 0..txt.len() {
        assert!((g_txt[k] as f64 - fd(1, k)).abs() < 1e-4, "d/d text token {k}: {} vs {}", g_txt[k], fd(1, k));
    }
    for k in 0..img_global.len() {
        assert!((g_img_global[k] as f64 - fd(2, k)).abs() < 1e-4, "d/d image global {k}");
    }
}
