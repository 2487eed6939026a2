//! Mixed precision (`train.precision = "bf16"`, `vlp_model::autocast`) trains as f32 does,
//! within bf16's rounding: the towers' products run from bf16 inputs (emulated on the CPU: bf16
//! inputs, f32 sums), the weights, their gradients, the optimizer and the losses stay f32.

use vlp_model::autocast::Precision;
use vlp_train::trainer::train;
use vlp_train::RunConfig;

mod common;
use common::{data, job, parameters, steps, B, CONFIG};

#[test]
fn a_bf16_run_follows_the_f32_run_within_bf16_rounding() {
    let tmp = tempfile::tempdir().unwrap();
    let d = data(&tmp.path().join("data"));
    let f32_cfg = RunConfig::from_toml(CONFIG, "test").unwrap();
    let mut bf16_cfg = f32_cfg.clone();
    bf16_cfg.train.precision = Precision::Bf16;
    let (full, mixed) = (tmp.path().join("f32"), tmp.path().join("bf16"));
    train::<B>(&job(&f32_cfg, &d, &full, false), &Default::default()).unwrap();
    let summary = train::<B>(&job(&bf16_cfg, &d, &mixed, false), &Default::default()).unwrap();
    let (a, b) = (steps(&full), steps(&mixed));
    assert_eq!(a.len(), b.len());
    for (step, (x, y)) in a.iter().zip(&b).enumerate() {
        // 8 bits of mantissa on each product's inputs: the loss moves in its third digit at most
        assert!((x.0 - y.0).abs() <= 0.01 * x.0, "step {}: loss {} in f32, {} in bf16", step + 1, x.0, y.0);
    }
    assert_ne!(a, b, "the bf16 run rounded somewhere");
    // the checkpoint holds f32 weights close to the f32 run's, and the run config says bf16
    let (pa, pb) = (parameters(&full), parameters(&mixed));
    let worst = pa.iter().flat_map(|(k, x)| x.iter().zip(&pb[k]).map(|(u, v)| (u - v).abs())).fold(0f32, f32::max);
    assert!(worst > 0.0 && worst < 0.01, "largest weight difference {worst}");
    let saved = std::fs::read_to_string(summary.checkpoint.join("config.toml")).unwrap();
    assert!(saved.contains("precision = \"bf16\""), "{saved}");
}
