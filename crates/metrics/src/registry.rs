//! Long-lived metrics: atomics updated by the code that counts, collected at each exposition.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::{Families, Family, Labels, MetricType};

/// Bucket bounds for durations in seconds (5 ms … 10 s).
pub const DURATION_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A count that only goes up.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }
    /// Adds `d` (may be negative).
    pub fn add(&self, d: f64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some((f64::from_bits(b) + d).to_bits())
            });
    }
    /// The value.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// Observations counted into buckets (`le` upper bounds), with their sum and count.
#[derive(Debug)]
pub struct Histogram {
    bounds: Vec<f64>,
    /// [`SHARDS`] blocks of `stride` cells. A block's first `bounds.len() + 1` cells count
    /// per bucket (not cumulative; the last is above every bound), the next holds the sum (f64
    /// bits), and the rest keep blocks a cache line apart: threads that observe at high rates
    /// (the proxy's workers, see [`set_thread_shard`]) each write blocks of their own.
    cells: Box<[AtomicU64]>,
    stride: usize,
}

/// Blocks per histogram.
pub const SHARDS: usize = 4;

thread_local! {
    static SHARD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Makes this thread write histogram block `i % SHARDS` (every thread writes block 0 unless
/// told otherwise). Worker threads that share no other memory per request take one each, so
/// that counting does not move a cache line between them per observation.
pub fn set_thread_shard(i: usize) {
    SHARD.with(|s| s.set(i % SHARDS));
}

impl Histogram {
    /// A histogram with these upper bounds (sorted and deduplicated here; non-finite ones
    /// are dropped: `+Inf` is always there).
    pub fn new(bounds: &[f64]) -> Self {
        let mut b: Vec<f64> = bounds.iter().copied().filter(|x| x.is_finite()).collect();
        b.sort_by(f64::total_cmp);
        b.dedup();
        // Buckets, the sum, and a cache line (8 cells) of space before the next block.
        let stride = (b.len() + 2 + 8).next_multiple_of(8);
        let cells = (0..stride * SHARDS).map(|_| AtomicU64::new(0)).collect();
        Self {
            bounds: b,
            cells,
            stride,
        }
    }

    /// Counts one observation (NaN is ignored).
    pub fn observe(&self, v: f64) {
        if v.is_nan() {
            return;
        }
        let base = SHARD.with(std::cell::Cell::get) * self.stride;
        let i = self.bounds.partition_point(|b| *b < v);
        if let Some(c) = self.cells.get(base + i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(sum) = self.cells.get(base + self.bounds.len() + 1) {
            let _ = sum.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some((f64::from_bits(b) + v).to_bits())
            });
        }
    }

    /// Observations of bucket `i` (not cumulative), every block together.
    fn bucket(&self, i: usize) -> u64 {
        (0..SHARDS)
            .filter_map(|s| self.cells.get(s * self.stride + i))
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// The sum of the observations.
    pub fn sum(&self) -> f64 {
        (0..SHARDS)
            .filter_map(|s| self.cells.get(s * self.stride + self.bounds.len() + 1))
            .map(|c| f64::from_bits(c.load(Ordering::Relaxed)))
            .sum()
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        (0..=self.bounds.len()).map(|i| self.bucket(i)).sum()
    }

    /// Adds the `_bucket`, `_sum` and `_count` samples to `family` (a histogram family).
    pub fn write_to(&self, family: &mut Family, labels: &[(&str, &str)]) {
        let bucket = format!("{}_bucket", family.name);
        let mut cumulative = 0u64;
        let mut le = String::new();
        for i in 0..=self.bounds.len() {
            cumulative += self.bucket(i);
            le.clear();
            match self.bounds.get(i) {
                Some(b) => crate::write::value(&mut le, *b),
                None => le.push_str("+Inf"),
            }
            let mut l: Vec<(&str, &str)> = labels.to_vec();
            l.push(("le", &le));
            family.add_named(&bucket, &l, cumulative as f64);
        }
        family.add_named(&format!("{}_sum", family.name), labels, self.sum());
        family.add_named(&format!("{}_count", family.name), labels, cumulative as f64);
    }
}

#[derive(Debug, Clone)]
enum Metric {
    Counter(Arc<Counter>),
    Gauge(Arc<Gauge>),
    Histogram(Arc<Histogram>),
    /// A counter whose value is a histogram's count (nothing more to write per event).
    CountOf(Arc<Histogram>),
}

impl Metric {
    fn kind(&self) -> MetricType {
        match self {
            Metric::Counter(_) | Metric::CountOf(_) => MetricType::Counter,
            Metric::Gauge(_) => MetricType::Gauge,
            Metric::Histogram(_) => MetricType::Histogram,
        }
    }
}

#[derive(Debug)]
struct Entry {
    name: String,
    help: String,
    labels: Labels,
    metric: Metric,
}

/// Named metrics, each a family name plus a label set. Getting a metric that exists returns
/// it; asking for an existing name + labels as another kind returns a detached metric (never
/// panics; it is not exposed).
#[derive(Debug, Default)]
pub struct Registry {
    entries: Mutex<Vec<Entry>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    fn get_or_insert(
        &self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        make: impl FnOnce() -> Metric,
    ) -> Metric {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let found = entries.iter().find(|e| {
            e.name == name
                && e.labels.len() == labels.len()
                && e.labels
                    .iter()
                    .zip(labels)
                    .all(|((k, v), (k2, v2))| k == k2 && v == v2)
        });
        if let Some(e) = found {
            return e.metric.clone();
        }
        let metric = make();
        entries.push(Entry {
            name: name.to_string(),
            help: help.to_string(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect(),
            metric: metric.clone(),
        });
        metric
    }

    /// The counter `name{labels}`.
    pub fn counter(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Arc<Counter> {
        match self.get_or_insert(name, help, labels, || Metric::Counter(Arc::default())) {
            Metric::Counter(c) => c,
            _ => Arc::default(),
        }
    }

    /// Exposes `of`'s count as the counter `name{labels}` (when that name and label set is
    /// not taken): for a count that a histogram already keeps.
    pub fn counter_of(&self, name: &str, help: &str, labels: &[(&str, &str)], of: &Arc<Histogram>) {
        self.get_or_insert(name, help, labels, || Metric::CountOf(Arc::clone(of)));
    }

    /// The gauge `name{labels}`.
    pub fn gauge(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Arc<Gauge> {
        match self.get_or_insert(name, help, labels, || Metric::Gauge(Arc::default())) {
            Metric::Gauge(g) => g,
            _ => Arc::default(),
        }
    }

    /// The histogram `name{labels}` (the bounds count only when it is made).
    pub fn histogram(
        &self,
        name: &str,
        help: &str,
        labels: &[(&str, &str)],
        bounds: &[f64],
    ) -> Arc<Histogram> {
        match self.get_or_insert(name, help, labels, || {
            Metric::Histogram(Arc::new(Histogram::new(bounds)))
        }) {
            Metric::Histogram(h) => h,
            _ => Arc::new(Histogram::new(bounds)),
        }
    }

    /// Adds every metric's samples to `out` (a metric whose family in `out` has another
    /// type is left out).
    pub fn collect(&self, out: &mut Families) {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        for e in entries.iter() {
            let kind = e.metric.kind();
            let f = out.family(&e.name, &e.help, kind);
            if f.kind != kind {
                continue;
            }
            let labels: Vec<(&str, &str)> = e
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            match &e.metric {
                Metric::Counter(c) => f.add(&labels, c.get() as f64),
                Metric::CountOf(h) => f.add(&labels, h.count() as f64),
                Metric::Gauge(g) => f.add(&labels, g.get()),
                Metric::Histogram(h) => h.write_to(f, &labels),
            }
        }
    }

    /// The exposition of this registry alone.
    pub fn render(&self) -> String {
        let mut f = Families::new();
        self.collect(&mut f);
        f.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_blocks_add_up_across_threads_and_counts_can_be_exposed() {
        let r = Arc::new(Registry::new());
        let h = r.histogram("t_seconds", "", &[], &[0.5]);
        r.counter_of("t_total", "", &[], &h);
        let threads: Vec<_> = (0..6)
            .map(|i| {
                let h = Arc::clone(&h);
                std::thread::spawn(move || {
                    set_thread_shard(i);
                    for _ in 0..1000 {
                        h.observe(0.25);
                        h.observe(1.0);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(h.count(), 12_000);
        assert!((h.sum() - 7_500.0).abs() < 1e-6, "{}", h.sum());
        let text = r.render();
        assert!(
            text.contains("t_seconds_bucket{le=\"0.5\"} 6000\n"),
            "{text}"
        );
        assert!(
            text.contains("t_seconds_bucket{le=\"+Inf\"} 12000\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE t_total counter\nt_total 12000\n"),
            "{text}"
        );
    }

    #[test]
    fn registry_exposition() {
        let r = Registry::new();
        r.counter("jobs_total", "Jobs.", &[("result", "ok")]).add(3);
        r.counter("jobs_total", "Jobs.", &[("result", "ok")]).inc();
        r.counter("jobs_total", "Jobs.", &[("result", "error")])
            .inc();
        let g = r.gauge("queue", "", &[]);
        g.set(2.0);
        g.add(-0.5);
        // Same name + labels as another kind: detached, not exposed, no panic.
        r.gauge("jobs_total", "", &[("result", "ok")]).set(99.0);
        let h = r.histogram("lat_seconds", "Latency.", &[("op", "x")], &[1.0, 0.1, 0.1]);
        h.observe(0.05);
        h.observe(0.5);
        h.observe(5.0);
        h.observe(f64::NAN);
        assert_eq!(h.count(), 3);
        assert_eq!(
            r.render(),
            "\
# HELP jobs_total Jobs.
# TYPE jobs_total counter
jobs_total{result=\"ok\"} 4
jobs_total{result=\"error\"} 1
# TYPE queue gauge
queue 1.5
# HELP lat_seconds Latency.
# TYPE lat_seconds histogram
lat_seconds_bucket{op=\"x\",le=\"0.1\"} 1
lat_seconds_bucket{op=\"x\",le=\"1\"} 2
lat_seconds_bucket{op=\"x\",le=\"+Inf\"} 3
lat_seconds_sum{op=\"x\"} 5.55
lat_seconds_count{op=\"x\"} 3
"
        );
    }

    #[test]
    fn counts_from_threads() {
        let r = Arc::new(Registry::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let r = Arc::clone(&r);
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        r.counter("n_total", "", &[]).inc();
                        r.histogram("h", "", &[], &DURATION_BUCKETS).observe(0.01);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(r.counter("n_total", "", &[]).get(), 4000);
        assert_eq!(r.histogram("h", "", &[], &[]).count(), 4000);
    }
}
