//! The daemon's Prometheus metrics: the process-wide families the engine feeds (how long steps
//! take, which adapters fail and how) and the gauges read from the store at each scrape
//! ([`StoreGauges`]), rendered together as OpenMetrics text ([`render`]) for `GET /metrics`.
//!
//! What the engine observes lives in one registry for the process ([`step_finished`],
//! [`error`]); what the store knows (accounts, domains and notices by state, the job queue) is
//! not kept here at all but read when a scrape asks, so it is never stale and a second daemon on
//! the same database shows the same numbers. Label values are bounded: states, kinds and
//! classes are siirto's own names, and a value that is not one of those shapes becomes `other`;
//! no error message, user or domain ever becomes a label.

use std::sync::OnceLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// The `Content-Type` of [`render`]'s text, as an OpenMetrics scraper expects it.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every metric's name starts with `siirto_`.
const PREFIX: &str = "siirto";

/// The upper bounds (seconds) of the step duration buckets: a notice batch or a DNS write takes
/// milliseconds to seconds, a transfer poll or a mail sync up to minutes.
const STEP_BUCKETS: [f64; 14] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

/// The label set of the step duration histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    kind: String,
    outcome: String,
}

/// The label set of the error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    adapter: String,
    kind: String,
}

/// A constructor of step duration histograms (a fn pointer, so the family's type can be named).
type NewHistogram = fn() -> Histogram;

/// The families the engine feeds, registered once for the process.
struct ProcessMetrics {
    registry: Registry,
    steps: Family<StepLabels, Histogram, NewHistogram>,
    errors: Family<ErrorLabels, Counter>,
}

static PROCESS: OnceLock<ProcessMetrics> = OnceLock::new();

fn process() -> &'static ProcessMetrics {
    PROCESS.get_or_init(|| {
        let mut registry = Registry::with_prefix(PREFIX);
        let steps: Family<StepLabels, Histogram, NewHistogram> =
            Family::new_with_constructor(|| Histogram::new(STEP_BUCKETS));
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register_with_unit(
            "step_duration",
            "How long a job's step ran, by job kind and outcome",
            Unit::Seconds,
            steps.clone(),
        );
        registry.register(
            "adapter_errors",
            "Failed steps by the adapter that failed (dns, whm, smtp, webhook, ssh, store, other) \
             and a short class of the failure",
            errors.clone(),
        );
        ProcessMetrics { registry, steps, errors }
    })
}

/// Records that a job's step of `kind` (a job kind as stored, `repoint`) ended with `outcome`
/// (`ok`, `transient_error`, `permanent_error`, `lease_lost`, `cancelled`) after `seconds`.
pub fn step_finished(kind: &str, outcome: &str, seconds: f64) {
    let labels = StepLabels { kind: bounded(kind), outcome: bounded(outcome) };
    process().steps.get_or_create(&labels).observe(seconds.max(0.0));
}

/// Counts one failure of `adapter` (`dns`, `whm`, `smtp`, `webhook`, `ssh`, `store`, `other`)
/// of class `kind` (`timeout`, `refused`, `http_5xx`, `lease_lost`, `other`, …).
pub fn error(adapter: &str, kind: &str) {
    let labels = ErrorLabels { adapter: bounded(adapter), kind: bounded(kind) };
    process().errors.get_or_create(&labels).inc();
}

/// A label value as given when it has the shape of siirto's own names (lower-case letters,
/// digits, `_`, `-`, `.`; at most 64 bytes), else `other`: whatever a caller passes, the set of
/// series stays bounded and no message or remote name becomes a label.
fn bounded(value: &str) -> String {
    let ours = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-' | b'.'));
    if ours { value.to_owned() } else { "other".to_owned() }
}

/// What the store holds at one moment, as counts: read by `Store::gauges` at each scrape and
/// rendered by [`render`]. Keys are `(migration, …)` tuples of stored names.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreGauges {
    /// Accounts by (migration, state).
    pub accounts: Vec<((String, String), u64)>,
    /// Domains by (migration, state).
    pub domains: Vec<((String, String), u64)>,
    /// Notices by (migration, kind, result), the result one of `queued`, `sent`, `failed`,
    /// `bounced`, `skipped_late`.
    pub notices: Vec<((String, String, String), u64)>,
    /// Jobs due and not done (waiting or running) by (migration, job kind).
    pub jobs_due: Vec<((String, String), u64)>,
    /// How long the oldest job that is due and not done has been due, in seconds; 0 when none is.
    pub oldest_due_job_age_seconds: f64,
}

/// The label set of a count by migration and state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    migration: String,
    state: String,
}

/// The label set of the notice counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NoticeLabels {
    migration: String,
    kind: String,
    result: String,
}

/// The label set of the job queue's depth.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    migration: String,
    kind: String,
}

/// A count as a gauge's value (an `i64`; counts never come near its limit).
fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// The OpenMetrics text of the process-wide families and of `gauges`, ending with `# EOF`. A
/// family without a series (no step has run yet, no job is due) is left out, as the Go client
/// does; the oldest due job's age is always there.
pub fn render(gauges: &StoreGauges) -> String {
    // The store's numbers go into a registry of their own, made for this scrape: a series for
    // a state nobody is in any more is gone, not stuck at its last value.
    let mut scrape = Registry::with_prefix(PREFIX);
    let accounts = Family::<StateLabels, Gauge>::default();
    for ((migration, state), n) in &gauges.accounts {
        let labels = StateLabels { migration: bounded(migration), state: bounded(state) };
        accounts.get_or_create(&labels).inc_by(count(*n));
    }
    scrape.register("accounts", "Accounts by migration and state", accounts);
    let domains = Family::<StateLabels, Gauge>::default();
    for ((migration, state), n) in &gauges.domains {
        let labels = StateLabels { migration: bounded(migration), state: bounded(state) };
        domains.get_or_create(&labels).inc_by(count(*n));
    }
    scrape.register("domains", "Domains by migration and state", domains);
    let notices = Family::<NoticeLabels, Gauge>::default();
    for ((migration, kind, result), n) in &gauges.notices {
        let labels =
            NoticeLabels { migration: bounded(migration), kind: bounded(kind), result: bounded(result) };
        notices.get_or_create(&labels).inc_by(count(*n));
    }
    scrape.register(
        "notices",
        "Notices in the outbox by migration, kind and result (queued, sent, failed, bounced, skipped_late)",
        notices,
    );
    let jobs = Family::<JobLabels, Gauge>::default();
    for ((migration, kind), n) in &gauges.jobs_due {
        let labels = JobLabels { migration: bounded(migration), kind: bounded(kind) };
        jobs.get_or_create(&labels).inc_by(count(*n));
    }
    scrape.register("jobs_due", "Jobs due and not done (waiting or running) by migration and job kind", jobs);
    let oldest = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    oldest.set(gauges.oldest_due_job_age_seconds.max(0.0));
    scrape.register_with_unit(
        "oldest_due_job_age",
        "How long the oldest job due and not done has been due (0: none is)",
        Unit::Seconds,
        oldest,
    );

    let mut text = String::new();
    // Writing into a String cannot fail, and the encoder fails only when its writer does.
    let written = encode_registry(&mut text, &process().registry)
        .and_then(|()| encode_registry(&mut text, &scrape))
        .and_then(|()| encode_eof(&mut text));
    debug_assert!(written.is_ok(), "encoding metrics into a String failed");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> StoreGauges {
        let pair = |m: &str, s: &str, n| ((m.to_owned(), s.to_owned()), n);
        StoreGauges {
            accounts: vec![pair("m1", "done", 7), pair("m1", "held", 1), pair("m2", "planned", 3)],
            domains: vec![pair("m1", "serving_target", 12)],
            notices: vec![
                (("m1".into(), "completion".into(), "sent".into()), 7),
                (("m1".into(), "advance".into(), "bounced".into()), 2),
            ],
            jobs_due: vec![pair("m1", "repoint", 4)],
            oldest_due_job_age_seconds: 12.5,
        }
    }

    /// The sample lines (names, labels in order, values) are in the text, whatever the order of
    /// the series within a family.
    #[test]
    fn renders_the_store_gauges_as_exposition_lines() {
        let text = render(&sample());
        let lines: Vec<&str> = text.lines().collect();
        for expected in [
            "# TYPE siirto_accounts gauge",
            "siirto_accounts{migration=\"m1\",state=\"done\"} 7",
            "siirto_accounts{migration=\"m1\",state=\"held\"} 1",
            "siirto_accounts{migration=\"m2\",state=\"planned\"} 3",
            "siirto_domains{migration=\"m1\",state=\"serving_target\"} 12",
            "# TYPE siirto_notices gauge",
            "siirto_notices{migration=\"m1\",kind=\"completion\",result=\"sent\"} 7",
            "siirto_notices{migration=\"m1\",kind=\"advance\",result=\"bounced\"} 2",
            "siirto_jobs_due{migration=\"m1\",kind=\"repoint\"} 4",
            "# TYPE siirto_oldest_due_job_age_seconds gauge",
            "# UNIT siirto_oldest_due_job_age_seconds seconds",
            "siirto_oldest_due_job_age_seconds 12.5",
        ] {
            assert!(lines.contains(&expected), "missing {expected:?} in:\n{text}");
        }
        assert_eq!(lines.last(), Some(&"# EOF"), "{text}");
        assert_eq!(lines.iter().filter(|l| l.starts_with("# EOF")).count(), 1, "{text}");
        assert_exposition(&text);
    }

    #[test]
    fn the_engine_families_count_what_they_are_told() {
        step_finished("metrics_unit_test", "ok", 0.3);
        step_finished("metrics_unit_test", "ok", 2.0);
        error("dns", "metrics_unit_test");
        let text = render(&StoreGauges::default());
        let lines: Vec<&str> = text.lines().collect();
        for expected in [
            "# TYPE siirto_step_duration_seconds histogram",
            "# UNIT siirto_step_duration_seconds seconds",
            "# TYPE siirto_adapter_errors counter",
            "siirto_step_duration_seconds_count{kind=\"metrics_unit_test\",outcome=\"ok\"} 2",
            "siirto_step_duration_seconds_sum{kind=\"metrics_unit_test\",outcome=\"ok\"} 2.3",
            "siirto_step_duration_seconds_bucket{le=\"0.5\",kind=\"metrics_unit_test\",outcome=\"ok\"} 1",
            "siirto_step_duration_seconds_bucket{le=\"+Inf\",kind=\"metrics_unit_test\",outcome=\"ok\"} 2",
            "siirto_adapter_errors_total{adapter=\"dns\",kind=\"metrics_unit_test\"} 1",
            "siirto_oldest_due_job_age_seconds 0.0",
        ] {
            assert!(lines.contains(&expected), "missing {expected:?} in:\n{text}");
        }
        assert_exposition(&text);
    }

    #[test]
    fn label_values_stay_bounded() {
        assert_eq!(bounded("send_notice"), "send_notice");
        assert_eq!(bounded("it-migration.2"), "it-migration.2");
        for foreign in ["", "Connection refused", "a\"b", "x\ny", &"a".repeat(65), "kukka@example.org"] {
            assert_eq!(bounded(foreign), "other", "{foreign:?}");
        }
        let gauges = StoreGauges {
            accounts: vec![(("m1".into(), "Weird State\"".into()), 1)],
            ..StoreGauges::default()
        };
        let text = render(&gauges);
        assert!(text.lines().any(|l| l == "siirto_accounts{migration=\"m1\",state=\"other\"} 1"), "{text}");
        assert_exposition(&text);
    }

    /// Checks that `text` has the shape of the exposition format: comment lines are `# HELP`,
    /// `# TYPE`, `# UNIT` or the final `# EOF`; every other line is `name{labels} value` (or
    /// `name value`) with a metric name, `key="value"` labels and a number.
    fn assert_exposition(text: &str) {
        assert!(text.ends_with("# EOF\n"), "{text}");
        for line in text.lines() {
            if let Some(comment) = line.strip_prefix("# ") {
                let (keyword, rest) = comment.split_once(' ').unwrap_or((comment, ""));
                match keyword {
                    "HELP" | "UNIT" => assert!(is_name(rest.split(' ').next().unwrap()), "{line}"),
                    "TYPE" => {
                        let (name, kind) = rest.split_once(' ').unwrap();
                        assert!(is_name(name), "{line}");
                        assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                    }
                    "EOF" => assert!(rest.is_empty(), "{line}"),
                    _ => panic!("unexpected comment {line:?}"),
                }
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line:?}"));
            assert!(value == "+Inf" || value.parse::<f64>().is_ok(), "value of {line:?}");
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => {
                    (name, labels.strip_suffix('}').unwrap_or_else(|| panic!("{line:?}")))
                }
                None => (series, ""),
            };
            assert!(is_name(name), "name of {line:?}");
            for label in labels.split(',').filter(|l| !l.is_empty()) {
                let (key, value) = label.split_once('=').unwrap_or_else(|| panic!("label of {line:?}"));
                assert!(is_name(key), "label key of {line:?}");
                assert!(value.len() >= 2 && value.starts_with('"') && value.ends_with('"'), "{line:?}");
                assert!(!value[1..value.len() - 1].contains('"'), "{line:?}");
            }
        }
    }

    fn is_name(name: &str) -> bool {
        let mut bytes = name.bytes();
        bytes.next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
            && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
    }
}
