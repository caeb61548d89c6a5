//! Prometheus metrics (`GET /metrics`, issue 13): what operators alert on.
//!
//! Two kinds of numbers:
//! * **this node's work**, counted as it happens: HTTP requests, task outcomes, retries, queue
//!   wait and execution times, engine calls, webhook deliveries, store errors. Each node counts
//!   its own; a cluster's total is the sum over nodes (`sum by (…)` in PromQL).
//! * **the queue as the store sees it**, read at scrape time ([`Overview`]): tasks queued per
//!   organization and priority, PROCESSING per organization against its limit, the webhook
//!   backlog. In cluster mode every node reads the same database, so every node reports the
//!   same queue (take `max`, not `sum`, over nodes).
//!
//! The registry is a value of the server ([`Metrics`]), not a process-wide recorder, so two
//! servers in one process (the tests) count apart and a test can check exact numbers.
//!
//! Label sets stay bounded: task types, outcomes, route templates (never a raw path), engines
//! and, unless `--metrics-org-labels=false`, organizations; never a task id.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::store::Overview;

/// `route`, `method`, `status` of an answered request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct HttpLabels {
    pub(crate) route: String,
    pub(crate) method: String,
    pub(crate) status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeTypeLabels {
    outcome: &'static str,
    task_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabels {
    task_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EngineOutcomeLabels {
    engine: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EngineLabels {
    engine: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OrgPriorityLabels {
    org: String,
    priority: u8,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PriorityLabels {
    priority: u8,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OrgLabels {
    org: String,
}

/// How an attempt ended, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TaskEnd {
    Completed,
    Failed,
    /// Failed, with an attempt left: back to QUEUED after the backoff.
    Retried,
    /// Did not count (the engine paused): back to QUEUED at once.
    Requeued,
}

/// How an engine call ended, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallEnd {
    Ok,
    Error,
    RateLimited,
    Unauthorized,
    Timeout,
    Panic,
}

impl CallEnd {
    fn as_str(self) -> &'static str {
        match self {
            CallEnd::Ok => "ok",
            CallEnd::Error => "error",
            CallEnd::RateLimited => "rate_limited",
            CallEnd::Unauthorized => "unauthorized",
            CallEnd::Timeout => "timeout",
            CallEnd::Panic => "panic",
        }
    }
}

/// Seconds buckets from 1 ms to about 9 minutes (×2 each).
fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

/// The node's metrics (see the module docs).
pub struct Metrics {
    org_labels: bool,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    tasks_finished: Family<OutcomeTypeLabels, Counter>,
    task_retries: Family<TypeLabels, Counter>,
    task_requeues: Family<TypeLabels, Counter>,
    queue_wait: Family<TypeLabels, Histogram, fn() -> Histogram>,
    execution: Family<TypeLabels, Histogram, fn() -> Histogram>,
    engine_calls: Family<EngineOutcomeLabels, Counter>,
    engine_in_flight: Family<EngineLabels, Gauge>,
    webhook_deliveries: Family<OutcomeLabels, Counter>,
    store_errors: Family<OpLabels, Counter>,
    /// Scrapes whose read of the store failed (the scrape still answers, without the queue).
    overview_errors: AtomicU64,
    /// What the dashboard shows of this node's recent work (`GET /dashboard/data`).
    activity: crate::api::dashboard::Activity,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(true)
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// `org_labels`: queue numbers per organization (else summed over organizations).
    pub fn new(org_labels: bool) -> Metrics {
        Metrics {
            org_labels,
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(seconds),
            tasks_finished: Family::default(),
            task_retries: Family::default(),
            task_requeues: Family::default(),
            queue_wait: Family::new_with_constructor(seconds),
            execution: Family::new_with_constructor(seconds),
            engine_calls: Family::default(),
            engine_in_flight: Family::default(),
            webhook_deliveries: Family::default(),
            store_errors: Family::default(),
            overview_errors: AtomicU64::new(0),
            activity: crate::api::dashboard::Activity::default(),
        }
    }

    /// The same metrics, keeping the dashboard's `activity` (its clock and worker count).
    pub fn with_activity(mut self, activity: crate::api::dashboard::Activity) -> Metrics {
        self.activity = activity;
        self
    }

    /// This node's recent work, for the dashboard.
    pub(crate) fn activity(&self) -> &crate::api::dashboard::Activity {
        &self.activity
    }

    /// An answered HTTP request; `route` is its template (`/v1/async/task/{taskId}`), or
    /// `other` for what matched no route.
    pub(crate) fn http(&self, route: &str, method: &str, status: u16, took: Duration) {
        self.http_requests
            .get_or_create(&HttpLabels {
                route: route.to_owned(),
                method: method.to_owned(),
                status,
            })
            .inc();
        self.http_duration
            .get_or_create(&RouteLabels {
                route: route.to_owned(),
            })
            .observe(took.as_secs_f64());
    }

    /// An attempt started `waited` after its task was submitted (first attempts only: a
    /// retry's wait is its backoff).
    pub(crate) fn started(&self, task_type: &'static str, waited: Duration) {
        self.queue_wait
            .get_or_create(&TypeLabels { task_type })
            .observe(waited.as_secs_f64());
    }

    /// An attempt's outcome was recorded, `took` after it started.
    pub(crate) fn finished(&self, task_type: &'static str, end: TaskEnd, took: Duration) {
        self.execution
            .get_or_create(&TypeLabels { task_type })
            .observe(took.as_secs_f64());
        let outcome = match end {
            TaskEnd::Completed => "completed",
            TaskEnd::Failed => "failed",
            TaskEnd::Retried => {
                self.task_retries
                    .get_or_create(&TypeLabels { task_type })
                    .inc();
                return;
            }
            TaskEnd::Requeued => {
                self.task_requeues
                    .get_or_create(&TypeLabels { task_type })
                    .inc();
                return;
            }
        };
        self.tasks_finished
            .get_or_create(&OutcomeTypeLabels { outcome, task_type })
            .inc();
    }

    /// An engine call starts; the guard counts it in flight until dropped.
    pub(crate) fn engine_call(&self, engine: &str) -> InFlight<'_> {
        let gauge = self.engine_in_flight.get_or_create_owned(&EngineLabels {
            engine: engine.to_owned(),
        });
        gauge.inc();
        InFlight {
            metrics: self,
            engine: engine.to_owned(),
            gauge,
        }
    }

    /// A webhook delivery attempt ended: `delivered`, `retry` or `failed` (no attempt left, or
    /// refused for good).
    pub(crate) fn webhook(&self, outcome: &'static str) {
        self.webhook_deliveries
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// A store operation failed (`claim`, `finish`, `webhook`, …).
    pub(crate) fn store_error(&self, op: &'static str) {
        self.store_errors.get_or_create(&OpLabels { op }).inc();
    }

    /// The exposition (OpenMetrics text, which Prometheus reads): this node's counters, then
    /// the queue of `overview` (`None`: the store could not be read; counted).
    pub(crate) fn render(&self, overview: Option<&Overview>) -> String {
        let mut registry = Registry::with_prefix("cloro");
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template, method and status",
            self.http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route template",
            self.http_duration.clone(),
        );
        registry.register(
            "tasks_finished",
            "Tasks that reached a terminal state on this node, by outcome and task type",
            self.tasks_finished.clone(),
        );
        registry.register(
            "task_retries",
            "Failed attempts that will be retried after the backoff, by task type",
            self.task_retries.clone(),
        );
        registry.register(
            "task_requeues",
            "Attempts that did not count (the engine paused) and went back to the queue",
            self.task_requeues.clone(),
        );
        registry.register(
            "task_queue_wait_seconds",
            "Submission to the start of the first attempt, by task type",
            self.queue_wait.clone(),
        );
        registry.register(
            "task_execution_seconds",
            "Start of an attempt to its recorded outcome, by task type",
            self.execution.clone(),
        );
        registry.register(
            "engine_calls",
            "Engine calls of tasks, by engine and outcome",
            self.engine_calls.clone(),
        );
        registry.register(
            "engine_in_flight",
            "Engine calls of tasks in flight, by engine",
            self.engine_in_flight.clone(),
        );
        registry.register(
            "webhook_deliveries",
            "Webhook delivery attempts, by outcome (delivered, retry, failed)",
            self.webhook_deliveries.clone(),
        );
        registry.register(
            "store_errors",
            "Store operations that failed, by operation",
            self.store_errors.clone(),
        );
        let scrape_errors = Counter::<u64>::default();
        scrape_errors.inc_by(self.overview_errors.load(Ordering::Relaxed));
        registry.register(
            "metrics_store_read_errors",
            "Scrapes that could not read the queue from the store",
            scrape_errors,
        );
        if let Some(o) = overview {
            self.register_queue(&mut registry, o);
        }
        let mut out = String::with_capacity(16 * 1024);
        // Writing to a String cannot fail.
        let _ = encode_registry(&mut out, &registry);
        let _ = encode_eof(&mut out);
        out
    }

    /// Counts a scrape whose read of the store failed.
    pub(crate) fn overview_failed(&self) {
        self.overview_errors.fetch_add(1, Ordering::Relaxed);
    }

    fn register_queue(&self, registry: &mut Registry, o: &Overview) {
        let backlog = Gauge::<i64>::default();
        backlog.set(o.webhook_backlog as i64);
        registry.register(
            "webhook_backlog",
            "Webhook deliveries not yet delivered or given up (the store's, every node's)",
            backlog,
        );
        if self.org_labels {
            let queued = Family::<OrgPriorityLabels, Gauge>::default();
            let processing = Family::<OrgLabels, Gauge>::default();
            let used = Family::<OrgLabels, Gauge>::default();
            let limit = Family::<OrgLabels, Gauge>::default();
            for org in &o.orgs {
                let label = OrgLabels {
                    org: org.org_id.clone(),
                };
                for &(priority, n) in &org.status.by_priority {
                    queued
                        .get_or_create(&OrgPriorityLabels {
                            org: org.org_id.clone(),
                            priority,
                        })
                        .set(n as i64);
                }
                processing
                    .get_or_create(&label)
                    .set(org.status.processing as i64);
                used.get_or_create(&label)
                    .set(org.status.concurrency_used as i64);
                limit
                    .get_or_create(&label)
                    .set(org.status.concurrency_max as i64);
            }
            registry.register(
                "queued_tasks",
                "QUEUED tasks (waiting retries included), by organization and priority",
                queued,
            );
            registry.register(
                "processing_tasks",
                "PROCESSING tasks, by organization",
                processing,
            );
            registry.register(
                "concurrency_used",
                "Slots in use (PROCESSING tasks and sync calls), by organization",
                used,
            );
            registry.register(
                "concurrency_limit",
                "The organization's concurrency limit",
                limit,
            );
        } else {
            let queued = Family::<PriorityLabels, Gauge>::default();
            let (mut processing, mut used) = (0i64, 0i64);
            for org in &o.orgs {
                for &(priority, n) in &org.status.by_priority {
                    queued
                        .get_or_create(&PriorityLabels { priority })
                        .inc_by(n as i64);
                }
                processing += org.status.processing as i64;
                used += org.status.concurrency_used as i64;
            }
            registry.register(
                "queued_tasks",
                "QUEUED tasks (waiting retries included), by priority",
                queued,
            );
            let g = Gauge::<i64>::default();
            g.set(processing);
            registry.register("processing_tasks", "PROCESSING tasks", g);
            let g = Gauge::<i64>::default();
            g.set(used);
            registry.register(
                "concurrency_used",
                "Slots in use (PROCESSING tasks and sync calls)",
                g,
            );
        }
    }
}

/// An engine call in flight ([`Metrics::engine_call`]); [`InFlight::end`] counts how it ended.
pub(crate) struct InFlight<'a> {
    metrics: &'a Metrics,
    engine: String,
    gauge: Gauge,
}

impl InFlight<'_> {
    /// Counts the call's end (dropping the guard without it counts nothing but the gauge).
    pub(crate) fn end(self, end: CallEnd) {
        self.metrics
            .engine_calls
            .get_or_create(&EngineOutcomeLabels {
                engine: self.engine.clone(),
                outcome: end.as_str(),
            })
            .inc();
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Reads one sample from an exposition: the value of `name` with exactly these labels (tests,
/// and the dashboard's checks).
pub fn sample(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut wanted = String::new();
    if !labels.is_empty() {
        wanted.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                wanted.push(',');
            }
            let _ = write!(wanted, "{k}=\"{v}\"");
        }
        wanted.push('}');
    }
    let head = format!("{name}{wanted} ");
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(head.as_str()))
        .and_then(|v| v.split(' ').next())
        .and_then(|v| v.parse().ok())
}
