//! The parity harness's short version on its committed fixture (20 steps of a small OpenCLIP
//! model, written by `benches/openclip/parity.py --config benches/openclip/parity-ci.json --steps
//! 20 --batch 16 --warmup 4 --clip 1.0`): vlp, started from OpenCLIP's initial weights and fed
//! OpenCLIP's batches, takes the same 20 steps (forward, ClipLoss, backward, global-norm clipping,
//! AdamW with OpenCLIP's weight-decay split, warmup + cosine, logit-scale clamp).
//!
//! Tolerance: 1e-4 on every step's loss and 1e-4 on every weight after the last step. OpenCLIP's
//! own f32 run against its f64 run differs by 4e-7 here, so the tolerance leaves room only for
//! float summation order (burn's and PyTorch's kernels add in different orders, and Adam divides
//! by √v, which amplifies differences in small gradients); a wrong init, weight-decay split,
//! clipping, schedule, LayerNorm ε, GELU or pooling moves the loss by 1e-2 or more within a few
//! steps (measured: BENCHMARKS.md).

use std::path::Path;
use vlp_train::parity::{run, Fixture};

#[test]
fn vlp_takes_openclips_steps() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/openclip-parity");
    let fixture = Fixture::load(&dir).unwrap();
    let report = run::<burn::backend::Autodiff<burn::backend::Flex>>(&fixture, None, &Default::default()).unwrap();
    assert_eq!(report.steps.len(), 20);
    for s in &report.steps {
        assert!((s.vlp - s.openclip).abs() < 1e-4, "step {}: vlp's loss {} against OpenCLIP's {}", s.step, s.vlp, s.openclip);
    }
    // The loss went somewhere: the comparison is not of two models standing still.
    assert!(report.steps[0].vlp - report.steps[19].vlp > 0.3, "{:?}", report.steps);
    let (gap, key) = report.max_weight_gap.clone().expect("all steps ran");
    assert!(gap < 1e-4, "after 20 steps vlp's {key} differs from OpenCLIP's by {gap}");
}
