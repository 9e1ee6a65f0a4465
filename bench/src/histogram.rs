//! A cheap, mergeable log-linear histogram of microsecond values.
//!
//! Values below 64 get one bucket each; above that every power of two is split into 32
//! linear sub-buckets, so a reported percentile is within ~1.6% of the true sample. The
//! bucket layout is fixed, so histograms merge (and subtract, for per-second windows) by
//! adding counters. 1152 buckets cover 0 .. 2^40 us (12 days); larger values are clamped.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

const SUB_BITS: u32 = 5;
const SUB: usize = 1 << SUB_BITS; // 32
const LINEAR: usize = 2 * SUB; // values 0..64 are exact
const MAX_EXP: u32 = 39; // highest power of two kept
/// Number of buckets.
pub const BUCKETS: usize = LINEAR + (MAX_EXP as usize - SUB_BITS as usize) * SUB;
const MAX_VALUE: u64 = (1 << (MAX_EXP + 1)) - 1;

fn index(v: u64) -> usize {
    let v = v.min(MAX_VALUE);
    if v < LINEAR as u64 {
        return v as usize;
    }
    let e = 63 - v.leading_zeros(); // >= 6
    let shift = e - SUB_BITS;
    let sub = ((v >> shift) as usize) & (SUB - 1);
    LINEAR + (e - SUB_BITS - 1) as usize * SUB + sub
}

/// Inclusive value range of bucket `i`.
fn bounds(i: usize) -> (u64, u64) {
    if i < LINEAR {
        return (i as u64, i as u64);
    }
    let e = ((i - LINEAR) / SUB) as u32 + SUB_BITS + 1;
    let sub = ((i - LINEAR) % SUB) as u64;
    let shift = e - SUB_BITS;
    let lo = (SUB as u64 + sub) << shift;
    (lo, lo + (1 << shift) - 1)
}

/// A plain histogram (one owner). Also the snapshot form of [`AtomicHistogram`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Histogram {
    counts: Vec<u64>,
    count: u64,
    sum: u64,
    min: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    pub fn new() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            count: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    pub fn record(&mut self, v: u64) {
        self.counts[index(v)] += 1;
        self.count += 1;
        self.sum = self.sum.saturating_add(v);
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn max(&self) -> Option<u64> {
        (self.count > 0).then_some(self.max)
    }

    pub fn min(&self) -> Option<u64> {
        (self.count > 0).then_some(self.min)
    }

    pub fn mean(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum as f64 / self.count as f64)
    }

    /// Value at quantile `q` (0..=1): the middle of the bucket holding the sample of rank
    /// ceil(q * count), clamped to the recorded min/max. `None` when empty.
    pub fn percentile(&self, q: f64) -> Option<u64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        if rank >= self.count {
            return Some(self.max);
        }
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (lo, hi) = bounds(i);
                return Some((lo + (hi - lo) / 2).clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }

    /// Adds `other`'s samples.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.count += other.count;
        self.sum = self.sum.saturating_add(other.sum);
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Samples recorded since `earlier` (a previous snapshot of the same histogram). Min and
    /// max are approximated by the bounds of the lowest and highest non-empty bucket.
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        let mut h = Histogram::new();
        for (i, (a, b)) in self.counts.iter().zip(&earlier.counts).enumerate() {
            let c = a.saturating_sub(*b);
            if c > 0 {
                let (lo, hi) = bounds(i);
                h.counts[i] = c;
                h.min = h.min.min(lo.max(self.min));
                h.max = h.max.max(hi.min(self.max));
            }
        }
        h.count = self.count.saturating_sub(earlier.count);
        h.sum = self.sum.saturating_sub(earlier.sum);
        h
    }
}

/// A histogram many tasks record into concurrently (relaxed atomics, no locks).
#[derive(Debug)]
pub struct AtomicHistogram {
    counts: Box<[AtomicU64]>,
    count: AtomicU64,
    sum: AtomicU64,
    min: AtomicU64,
    max: AtomicU64,
}

impl Default for AtomicHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl AtomicHistogram {
    pub fn new() -> Self {
        AtomicHistogram {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            min: AtomicU64::new(u64::MAX),
            max: AtomicU64::new(0),
        }
    }

    pub fn record(&self, v: u64) {
        self.counts[index(v)].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum.fetch_add(v, Relaxed);
        self.min.fetch_min(v, Relaxed);
        self.max.fetch_max(v, Relaxed);
    }

    pub fn snapshot(&self) -> Histogram {
        let counts: Vec<u64> = self.counts.iter().map(|c| c.load(Relaxed)).collect();
        Histogram {
            // The total is recomputed so a snapshot taken mid-record stays consistent.
            count: counts.iter().sum(),
            counts,
            sum: self.sum.load(Relaxed),
            min: self.min.load(Relaxed),
            max: self.max.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_ordered() {
        let mut next = 0;
        for i in 0..BUCKETS {
            let (lo, hi) = bounds(i);
            assert_eq!(lo, next, "bucket {i}");
            assert!(hi >= lo);
            assert_eq!(index(lo), i);
            assert_eq!(index(hi), i);
            next = hi + 1;
        }
        assert_eq!(next, MAX_VALUE + 1);
        assert_eq!(index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn percentiles_of_uniform_samples() {
        let mut h = Histogram::new();
        for v in 1..=100_000u64 {
            h.record(v);
        }
        assert_eq!(h.count(), 100_000);
        let close = |got: u64, want: f64| (got as f64 - want).abs() / want < 0.02;
        for (q, want) in [
            (0.5, 50_000.0),
            (0.9, 90_000.0),
            (0.99, 99_000.0),
            (0.999, 99_900.0),
        ] {
            let got = h.percentile(q).unwrap();
            assert!(close(got, want), "p{q}: {got} vs {want}");
        }
        assert_eq!(h.percentile(1.0), Some(100_000));
        assert_eq!(h.percentile(0.0), Some(1));
        assert_eq!(h.max(), Some(100_000));
        assert_eq!(h.min(), Some(1));
        assert!((h.mean().unwrap() - 50_000.5).abs() < 1e-6);
    }

    #[test]
    fn small_values_are_exact_and_empty_is_none() {
        let mut h = Histogram::new();
        assert_eq!(h.percentile(0.5), None);
        for v in [3, 3, 3, 7, 60] {
            h.record(v);
        }
        assert_eq!(h.percentile(0.5), Some(3));
        assert_eq!(h.percentile(0.8), Some(7));
        assert_eq!(h.percentile(0.99), Some(60));
    }

    #[test]
    fn skewed_tail_p99() {
        // 990 fast samples (1 ms) and 10 slow ones (250 ms): p99 is fast, p99.9 is slow.
        let mut h = Histogram::new();
        for _ in 0..990 {
            h.record(1_000);
        }
        for _ in 0..10 {
            h.record(250_000);
        }
        let p99 = h.percentile(0.99).unwrap();
        assert!((980..=1_020).contains(&p99), "{p99}");
        let p999 = h.percentile(0.999).unwrap();
        assert!((245_000..=255_000).contains(&p999), "{p999}");
    }

    #[test]
    fn merge_equals_recording_everything() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        let mut all = Histogram::new();
        for v in 0..5_000u64 {
            let x = v * v % 77_777;
            if v % 3 == 0 {
                a.record(x)
            } else {
                b.record(x)
            }
            all.record(x);
        }
        a.merge(&b);
        assert_eq!(a, all);
    }

    #[test]
    fn atomic_snapshot_and_window() {
        let h = AtomicHistogram::new();
        for v in 0..1000 {
            h.record(v);
        }
        let first = h.snapshot();
        for _ in 0..100 {
            h.record(500_000);
        }
        let now = h.snapshot();
        assert_eq!(now.count(), 1100);
        let window = now.since(&first);
        assert_eq!(window.count(), 100);
        let p50 = window.percentile(0.5).unwrap();
        assert!((490_000..=510_000).contains(&p50), "{p50}");
    }
}
