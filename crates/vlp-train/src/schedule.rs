//! Learning rate: linear warmup from 0, then cosine decay to 0 (OpenCLIP's `cosine_lr`).

/// The learning rate of optimizer step `step` (0-based) of `total`.
pub fn lr_at(step: usize, base: f64, warmup: usize, total: usize) -> f64 {
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    let decay = total.saturating_sub(warmup).max(1);
    let progress = ((step - warmup) as f64 / decay as f64).min(1.0);
    0.5 * (1.0 + (std::f64::consts::PI * progress).cos()) * base
}

#[cfg(test)]
mod tests {
    use super::lr_at;

    #[test]
    fn warmup_then_cosine() {
        assert!((lr_at(0, 1.0, 10, 110) - 0.1).abs() < 1e-12);
        assert!((lr_at(9, 1.0, 10, 110) - 1.0).abs() < 1e-12);
        assert!((lr_at(10, 1.0, 10, 110) - 1.0).abs() < 1e-12);
        assert!((lr_at(60, 1.0, 10, 110) - 0.5).abs() < 1e-12);
        assert!(lr_at(109, 1.0, 10, 110) < 1e-3);
    }
}
