//! Medians and spreads over rounds: the machine is shared and noisy.

#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Stats {
    pub(super) median: f64,
    pub(super) p25: f64,
    pub(super) p75: f64,
    pub(super) min: f64,
    pub(super) max: f64,
}

pub(super) fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

pub(super) fn stats(values: &[f64]) -> Stats {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    Stats {
        median: quantile(&sorted, 0.5),
        p25: quantile(&sorted, 0.25),
        p75: quantile(&sorted, 0.75),
        min: sorted.first().copied().unwrap_or(f64::NAN),
        max: sorted.last().copied().unwrap_or(f64::NAN),
    }
}
