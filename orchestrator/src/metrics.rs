//! Prometheus metrics at `GET /metrics` (OpenMetrics text): queue depth by
//! state (read from the database at each scrape, so every replica reports
//! the same queue), and this orchestrator's own claims, dispatch round
//! trips and attempt outcomes (counted in this process since it started).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::storage::runs::Counts;

/// A run state, as a label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

/// How an attempt ended, as labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
    reason: String,
}

/// The orchestrator's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    runs: Family<StateLabel, Gauge>,
    claims: Counter,
    dispatch_seconds: Histogram,
    dispatch_failures: Counter,
    attempts: Family<OutcomeLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Empty metrics, registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("pipeweave");
        let runs = Family::<StateLabel, Gauge>::default();
        registry.register(
            "runs",
            "Task runs by state (pending: queued and due; waiting: queued for later)",
            runs.clone(),
        );
        let claims = Counter::default();
        registry.register(
            "claims",
            "Attempts claimed by this orchestrator",
            claims.clone(),
        );
        // 0.5 ms … about 16 s.
        let dispatch_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "dispatch_duration_seconds",
            "Dispatch round trip to a host or worker, until it accepts the request (one attempt, or a host's batch)",
            dispatch_seconds.clone(),
        );
        let dispatch_failures = Counter::default();
        registry.register(
            "dispatch_failures",
            "Attempts whose dispatch was refused, timed out or unreachable",
            dispatch_failures.clone(),
        );
        let attempts = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "attempts",
            "Attempts ended through this orchestrator, by outcome and failure reason",
            attempts.clone(),
        );
        Self {
            registry,
            runs,
            claims,
            dispatch_seconds,
            dispatch_failures,
            attempts,
        }
    }

    /// `n` attempts were claimed.
    pub fn claimed(&self, n: usize) {
        self.claims.inc_by(n as u64);
    }

    /// A dispatch request of `attempts` got its answer after `seconds`:
    /// accepted or not.
    pub fn dispatched(&self, seconds: f64, attempts: usize, accepted: bool) {
        self.dispatch_seconds.observe(seconds);
        if !accepted {
            self.dispatch_failures.inc_by(attempts as u64);
        }
    }

    /// An attempt ended: `outcome` is `succeeded`, `failed` or
    /// `cancelled`; `reason` the failure reason (empty otherwise).
    pub fn attempt_ended(&self, outcome: &'static str, reason: &str) {
        self.attempts
            .get_or_create(&OutcomeLabels {
                outcome,
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// The text exposition, with the queue depth `counts` read just now.
    pub fn render(&self, counts: &Counts) -> Result<String, std::fmt::Error> {
        for (state, value) in [
            ("pending", counts.pending),
            ("waiting", counts.waiting),
            ("running", counts.running),
            ("awaiting_retry", counts.awaiting_retry),
            ("succeeded", counts.succeeded),
            ("dead", counts.dead),
            ("cancelled", counts.cancelled),
        ] {
            self.runs.get_or_create(&StateLabel { state }).set(value);
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}
