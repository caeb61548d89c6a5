//! Webhook deliveries: signed, retried, durable completion notifications (reference §3,
//! SPEC decisions 10 and 11).
//!
//! How a delivery flows:
//! 1. **Outbox.** When a task created with `webhook.url` becomes COMPLETED or FAILED, the store
//!    makes its delivery pending in the same transaction as the terminal status (SQLite: in the
//!    task row itself, in the writer's group commit; PostgreSQL: a delivery row in the finish
//!    transaction). Nothing is lost on a crash.
//! 2. **Claim.** One sender loop per node ([`run_sender`], the claim loop of
//!    [`crate::worker::claim_loop`] it shares with the dispatcher) claims due deliveries
//!    ([`Store::claim_webhooks`]). SQLite keeps the due set in memory (rebuilt at start-up);
//!    PostgreSQL claims with `FOR UPDATE SKIP LOCKED`, counts the attempt and moves the row one
//!    lease ahead, so a node that dies mid-delivery leaves it due again after the lease and two
//!    nodes never send it at the same time.
//! 3. **Send.** The body is the task-status response of the finished task without its
//!    `webhook` block, serialized once; the signature covers exactly those bytes. The
//!    organization's secret is read at delivery time (rotation takes effect at once). No
//!    redirects, a time limit per attempt (10 s), connections only to vetted addresses
//!    ([`ssrf`]). Concurrency is bounded per destination host and overall; deliveries run on
//!    their own Tokio tasks and never hold a task worker or a concurrency slot.
//! 4. **Tasks first.** On these small machines a delivery costs CPU (an HTTP exchange, a read,
//!    a signature, a write). While this node's dispatcher finishes more than
//!    [`WebhookConfig::busy_tasks_per_sec`] attempts per second (its CPU is busy with the
//!    queue), the sender starts at most [`WebhookConfig::busy_deliveries_per_sec`] attempts per
//!    second; the backlog goes out at full speed once the queue has been quieter for a second
//!    (a short dip does not count; see `pace.rs`). Deliveries are delayed a little under
//!    heavy load, never lost, and task throughput stays first.
//! 5. **Record.** Any 2xx: delivered (`deliveredAt`). Anything else (non-2xx, timeout,
//!    connection error, refused address): the attempt failed; attempt `n+1` is due
//!    `base·2^(n-1)` later on average (2, 4, 8, 16 minutes with the default base), each delay
//!    drawn uniformly from half to one and a half times that, so deliveries that failed
//!    together (a receiver's outage) do not all come back at the same instant; after the fifth
//!    failed attempt the delivery is given up (`delivered: false` stays). Only the first
//!    [`MAX_REPLY_BYTES`] of a 2xx answer's body are read: the answer is an acknowledgement,
//!    and a receiver must not be able to make the sender read gigabytes.
//!
//! The store failing while an attempt is prepared (reading the task or the secret) is not the
//! receiver's fault: an outage defers the attempt (not counted, due again in a second), but a
//! permanent failure (a row that cannot be decoded) gives the delivery up at once instead of
//! deferring it every second forever. A task whose stored result is lost is not a failure: its
//! body carries the error the task answers with (`RESULT_UNAVAILABLE`).
//!
//! An attempt counts when it is claimed, before it is sent (both stores write the count in the
//! claim), so a node that dies during an attempt never sends that same attempt again: after a
//! crash the delivery comes back as the next attempt, and one claimed beyond
//! [`WEBHOOK_MAX_ATTEMPTS`] is recorded as given up without being sent.
//!
//! Log lines name a destination only through [`redact_url`] (no user name, password or query
//! values: they are often the receiver's credentials), and transport errors are logged without
//! the URL reqwest puts in them.
//!
//! The next due time and the signature's timestamp are read from [`WebhookConfig::clock`];
//! the pace, the time limits and the back-offs are durations on `tokio::time`.

mod pace;
pub(crate) mod ssrf;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::store::{Store, WEBHOOK_MAX_ATTEMPTS, WebhookJob, WebhookResult};
use crate::worker::Gate;
use crate::worker::backoff::{Doubling, backoff_ms};
use crate::worker::claim_loop::{self, LoopConfig, Source};

/// Sender settings.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Delay before the second attempt; doubles for each further attempt.
    pub retry_base_ms: u64,
    /// Longest one attempt may take (connect, send, answer).
    pub timeout: Duration,
    /// Let deliveries reach loopback and private addresses.
    pub allow_private: bool,
    /// Attempts in flight to one destination host at once.
    pub per_host: usize,
    /// Attempts in flight at once over all destinations.
    pub total: usize,
    /// Above this many finished task attempts per second on this node, the queue has the CPU.
    pub busy_tasks_per_sec: u64,
    /// Attempts started per second while the queue has the CPU.
    pub busy_deliveries_per_sec: u64,
    /// The wall clock due times and signature timestamps are read from.
    pub clock: Clock,
    /// Where delivery outcomes are counted (`GET /metrics`).
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            retry_base_ms: 120_000,
            timeout: Duration::from_secs(10),
            allow_private: false,
            per_host: 8,
            total: 512,
            busy_tasks_per_sec: 2_000,
            busy_deliveries_per_sec: 200,
            clock: Clock::system(),
            metrics: Default::default(),
        }
    }
}

impl WebhookConfig {
    /// How long a claimed delivery stays this node's (cluster mode): longer than an attempt
    /// can take, waiting for its host's turn included.
    fn lease_ms(&self) -> i64 {
        (self.timeout.as_millis() as i64).saturating_mul(3) + 2_000
    }

    /// How long an attempt may wait for its turn (its host's and the node's limits) before it
    /// is put back, not counted.
    fn host_wait(&self) -> Duration {
        self.timeout
    }
}

/// Delay before attempt `attempt + 1` after attempt `attempt` (1-based) failed.
pub(crate) fn retry_delay_ms(base: u64, attempt: u32) -> i64 {
    backoff_ms(base, attempt).min(i64::MAX as u64) as i64
}

/// The delay actually waited before attempt `attempt + 1`: [`retry_delay_ms`] times a factor
/// drawn uniformly from [0.5, 1.5), so the documented schedule is the mean. Without it, every
/// delivery that failed during one receiver outage (or one outage of this node) would be
/// retried at the same instant, and the receiver that just came back would get the whole
/// backlog at once, at every step of the schedule.
pub(crate) fn jittered_retry_delay_ms(base: u64, attempt: u32, rng: &mut impl rand::Rng) -> i64 {
    let mean = retry_delay_ms(base, attempt);
    let factor: f64 = rng.random_range(0.5..1.5);
    // `as` saturates: a huge mean stays at most i64::MAX.
    (mean as f64 * factor) as i64
}

/// `v1=` + lowercase hex HMAC-SHA256, key = the secret as-is (`whsec_...` included), message =
/// `<timestamp>.<raw body>` (SPEC decision 10).
pub(crate) fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// A fresh signing secret: `whsec_` and 32 random bytes in hex.
pub fn new_secret() -> String {
    format!("whsec_{}", hex::encode(rand::random::<[u8; 32]>()))
}

/// The HTTP client for deliveries: no redirects, no proxies from the environment (they would
/// bypass the address checks), addresses filtered at resolution.
pub(crate) fn client(cfg: &WebhookConfig) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(cfg.timeout)
        .connect_timeout(cfg.timeout.min(Duration::from_secs(5)))
        .pool_max_idle_per_host(cfg.per_host)
        .dns_resolver(Arc::new(ssrf::FilteringResolver {
            allow_private: cfg.allow_private,
        }))
        .user_agent(concat!("cloro-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Bounded concurrency per destination host.
#[derive(Default)]
struct Hosts {
    by_host: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Hosts {
    fn semaphore(&self, host: &str, permits: usize) -> Arc<Semaphore> {
        let mut map = self.by_host.lock().unwrap_or_else(|e| e.into_inner());
        // Forget idle hosts now and then so the map does not grow without bound.
        if map.len() > 10_000 {
            map.retain(|_, s| s.available_permits() < permits);
        }
        map.entry(host.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(permits)))
            .clone()
    }
}

/// Wait after a failed claim: 200 ms, doubling per consecutive failure up to 3.2 s.
const CLAIM_BACKOFF: Doubling = Doubling {
    first: Duration::from_millis(200),
    max: Duration::from_millis(3_200),
};

/// Wait while an attempt's outcome cannot be recorded: 50 ms, doubling up to 5 s.
const RECORD_RETRY: Doubling = Doubling {
    first: Duration::from_millis(50),
    max: Duration::from_secs(5),
};

/// Most deliveries claimed at once.
const MAX_CLAIM_BATCH: usize = 256;

/// Claimed deliveries per connection allowed ([`WebhookConfig::total`]) that may wait for their
/// host or a connection.
const CLAIMED_PER_CONNECTION: usize = 4;

/// Most bytes of a 2xx answer's body read before the connection is dropped: enough for any
/// acknowledgement, small next to [`WebhookConfig::total`] attempts at once.
pub(crate) const MAX_REPLY_BYTES: usize = 64 * 1024;

/// When a deferred delivery (not attempted) is due again.
const DEFERRED_DELAY_MS: i64 = 1_000;

struct Sender {
    store: Arc<dyn Store>,
    cfg: WebhookConfig,
    client: reqwest::Client,
    hosts: Hosts,
    total: Semaphore,
    cancel: CancellationToken,
}

impl Source for Sender {
    type Item = WebhookJob;
    type Error = crate::store::Error;

    fn wake(&self) -> &Notify {
        self.store.webhook_notify()
    }

    async fn claim(&self, n: usize) -> crate::store::Result<Vec<WebhookJob>> {
        self.store.claim_webhooks(n, self.cfg.lease_ms()).await
    }

    async fn run(&self, job: WebhookJob) {
        self.deliver(job).await
    }

    fn next_due_ms(&self) -> Option<i64> {
        self.store.next_webhook_ms()
    }

    fn claim_failed(&self, error: &crate::store::Error, failures: u32) {
        if failures == 1 {
            tracing::warn!(%error, "Cannot claim webhook deliveries");
        }
    }
}

/// Runs the webhook sender of this node until `cancel` fires; attempts in flight end first.
/// Returns early only if its HTTP client cannot be built.
pub(crate) async fn run_sender(
    store: Arc<dyn Store>,
    cfg: WebhookConfig,
    gate: Arc<Gate>,
    cancel: CancellationToken,
) {
    let client = match client(&cfg) {
        Ok(c) => c,
        Err(error) => {
            tracing::error!(%error, "Cannot build the webhook HTTP client");
            return;
        }
    };
    let limits = LoopConfig {
        max_in_flight: cfg.total.saturating_mul(CLAIMED_PER_CONNECTION),
        claim_backoff: CLAIM_BACKOFF,
        clock: cfg.clock.clone(),
    };
    let pacer = pace::SenderPacer::new(&cfg, gate, MAX_CLAIM_BATCH);
    let sender = Arc::new(Sender {
        store,
        total: Semaphore::new(cfg.total),
        cfg,
        client,
        hosts: Hosts::default(),
        cancel: cancel.clone(),
    });
    claim_loop::run(sender, pacer, limits, cancel).await;
}

/// How one attempt went.
enum Attempted {
    Acked,
    Failed(String),
    /// Not attempted (its host was busy for too long, or the store could not answer): put
    /// back, not counted.
    Deferred,
    /// Not attempted and never will be: the store failed in a way a retry does not change (a
    /// row it cannot decode). The delivery is given up at once.
    Ended(String),
}

/// How a store failure during an attempt's preparation ends it: an outage ([`Error::Unavailable`](
/// crate::store::Error::Unavailable)) defers the attempt; any other failure would fail every
/// retry the same way, so the delivery ends.
fn store_failure(e: crate::store::Error) -> Attempted {
    match e {
        crate::store::Error::Unavailable(_) => Attempted::Deferred,
        other => Attempted::Ended(format!("the store cannot read the task: {other}")),
    }
}

impl Sender {
    async fn deliver(&self, job: WebhookJob) {
        let result = self.attempt(&job).await;
        let record = match &result {
            Attempted::Acked => WebhookResult::Delivered,
            Attempted::Deferred => WebhookResult::Deferred {
                delay_ms: DEFERRED_DELAY_MS,
            },
            Attempted::Ended(_) => WebhookResult::GaveUp,
            Attempted::Failed(_) if job.attempt >= WEBHOOK_MAX_ATTEMPTS => WebhookResult::GaveUp,
            Attempted::Failed(_) => WebhookResult::Retry {
                delay_ms: jittered_retry_delay_ms(
                    self.cfg.retry_base_ms,
                    job.attempt,
                    &mut rand::rng(),
                ),
            },
        };
        match &result {
            Attempted::Acked => {
                tracing::debug!(task = %job.task_id, attempt = job.attempt, "Webhook delivered")
            }
            Attempted::Failed(error) => tracing::info!(
                task = %job.task_id,
                attempt = job.attempt,
                url = %redact_url(&job.url),
                %error,
                given_up = matches!(record, WebhookResult::GaveUp),
                "Webhook attempt failed"
            ),
            Attempted::Ended(error) => tracing::error!(
                task = %job.task_id,
                attempt = job.attempt,
                %error,
                "Webhook delivery given up: its task cannot be read"
            ),
            Attempted::Deferred => {}
        }
        match record {
            WebhookResult::Delivered => self.cfg.metrics.webhook("delivered"),
            WebhookResult::Retry { .. } => self.cfg.metrics.webhook("retry"),
            WebhookResult::GaveUp => self.cfg.metrics.webhook("failed"),
            WebhookResult::Deferred { .. } => {}
        }
        self.record(&job, record).await;
    }

    /// Records the outcome, retrying until the store takes it or the node stops (the attempt
    /// stays claimed meanwhile; after a crash or a stop it is simply due again).
    async fn record(&self, job: &WebhookJob, result: WebhookResult) {
        let mut failures = 0;
        loop {
            match self.store.record_webhook(job, result).await {
                Ok(()) => return,
                Err(error) => {
                    self.cfg.metrics.store_error("record_webhook");
                    tracing::warn!(%error, task = %job.task_id, "Cannot record a webhook attempt")
                }
            }
            failures += 1;
            tokio::select! {
                _ = tokio::time::sleep(RECORD_RETRY.after(failures)) => {}
                _ = self.cancel.cancelled() => return,
            }
        }
    }

    async fn attempt(&self, job: &WebhookJob) -> Attempted {
        if job.attempt > WEBHOOK_MAX_ATTEMPTS {
            // A node died during the last attempt: that attempt counted.
            return Attempted::Failed("no attempts left".into());
        }
        // A store that cannot answer is not the receiver's fault: the attempt is not counted.
        let task = match self.store.get_task(job.org, job.task_id).await {
            Ok(Some(t)) => t,
            Ok(None) => return Attempted::Failed("the task no longer exists".into()),
            Err(e) => return store_failure(e),
        };
        let body = match serde_json::to_vec(&crate::wire::GetTaskResponse::webhook_body(task)) {
            Ok(b) => b,
            Err(e) => return Attempted::Failed(format!("cannot serialize the body: {e}")),
        };
        let secret = match self.store.webhook_secret(job.org).await {
            Ok(s) => s,
            Err(e) => return store_failure(e),
        };
        let url = match reqwest::Url::parse(&job.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => u,
            _ => return Attempted::Failed("not an http(s) URL".into()),
        };
        // Names are vetted by the resolver; literal addresses never reach it.
        if !self.cfg.allow_private && ssrf::is_refused_address_literal(&url) {
            return Attempted::Failed("refused destination (loopback, private, link-local)".into());
        }
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let per_host = self.hosts.semaphore(&host, self.cfg.per_host);
        // Both turns within one bounded wait, so the attempt ends well inside its lease.
        let turns = async {
            let host = per_host.acquire_owned().await.ok()?;
            let all = self.total.acquire().await.ok()?;
            Some((host, all))
        };
        let Ok(Some(_permits)) = tokio::time::timeout(self.cfg.host_wait(), turns).await else {
            return Attempted::Deferred;
        };
        let mut req = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some(secret) = secret {
            let ts = self.cfg.clock.now_ms().div_euclid(1_000);
            req = req
                .header("X-Cloro-Timestamp", ts.to_string())
                .header("X-Cloro-Signature", signature(&secret, ts, &body))
                .header(
                    "X-Cloro-Webhook-Id",
                    format!("{}-{}", job.task_id, job.attempt),
                );
        }
        match req.body(body).send().await {
            Ok(resp) if resp.status().is_success() => {
                drain_reply(resp).await;
                Attempted::Acked
            }
            Ok(resp) => Attempted::Failed(format!("answered {}", resp.status())),
            Err(e) if e.is_timeout() => Attempted::Failed("timed out".into()),
            // reqwest's text names the URL, credentials and query included.
            Err(e) => Attempted::Failed(error_chain(&e.without_url())),
        }
    }
}

/// Reads (and drops) at most [`MAX_REPLY_BYTES`] of a 2xx answer's body: a short answer is
/// read to its end so the connection can be reused; a longer one is dropped with its
/// connection (the 2xx already said delivered, whatever follows). A body that fails midway
/// changes nothing either.
async fn drain_reply(mut resp: reqwest::Response) {
    let mut read = 0usize;
    while let Ok(Some(chunk)) = resp.chunk().await {
        read = read.saturating_add(chunk.len());
        if read > MAX_REPLY_BYTES {
            // Dropping an unfinished response closes its connection.
            return;
        }
    }
}

/// `url` as it may be logged: a user name or password becomes `***`, every query value
/// becomes `***` (names are kept, they help to tell receivers apart), and a fragment goes.
/// Anything that does not parse as a URL is not shown at all.
pub(crate) fn redact_url(url: &str) -> String {
    let Ok(mut u) = reqwest::Url::parse(url) else {
        return "(not a URL)".into();
    };
    if !u.username().is_empty() || u.password().is_some() {
        // Cannot fail for http(s) URLs with a host; other schemes keep what they have.
        let _ = u.set_username("***");
        let _ = u.set_password(None);
    }
    if u.query().is_some() {
        let names: Vec<String> = u.query_pairs().map(|(k, _)| k.into_owned()).collect();
        let redacted: Vec<String> = names.iter().map(|k| format!("{k}=***")).collect();
        u.set_query(Some(&redacted.join("&")));
    }
    u.set_fragment(None);
    u.to_string()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_v1_and_lowercase_hex_hmac_over_timestamp_dot_body() {
        let s = signature("key", 0, b"x");
        assert!(s.starts_with("v1="));
        assert_eq!(s.len(), 3 + 64);
        assert!(
            s[3..]
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        );
        assert_eq!(signature("k", 1, b"body"), signature("k", 1, b"body"));
        assert_ne!(signature("k", 1, b"body"), signature("k", 2, b"body"));
        assert_ne!(signature("k", 1, b"body"), signature("k2", 1, b"body"));
    }

    #[test]
    fn the_signature_matches_python_and_openssl() {
        // python3: hmac.new(b"whsec_abc", b'1748419200.{"a":1}', hashlib.sha256).hexdigest(),
        // and the README's openssl line give the same.
        assert_eq!(
            signature("whsec_abc", 1_748_419_200, br#"{"a":1}"#),
            "v1=c98ad8c88facbbf772a572b85abd277fdd4e07e091b331436c184d8da6ef9b8f"
        );
    }

    #[test]
    fn the_signature_matches_a_known_hmac_vector() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        // Split as "<ts>.<body>" this is impossible, so sign the equivalent message directly.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(b"Jefe").expect("key");
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn retries_are_two_four_eight_and_sixteen_minutes_apart_by_default() {
        let d: Vec<i64> = (1..=4).map(|a| retry_delay_ms(120_000, a)).collect();
        assert_eq!(d, [120_000, 240_000, 480_000, 960_000]);
    }

    #[test]
    fn retry_delays_are_jittered_with_the_documented_schedule_as_their_mean() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for attempt in 1..=4 {
            let mean = retry_delay_ms(120_000, attempt);
            let samples: Vec<i64> = (0..10_000)
                .map(|_| jittered_retry_delay_ms(120_000, attempt, &mut rng))
                .collect();
            assert!(
                samples.iter().all(|&d| d >= mean / 2 && d < mean * 3 / 2),
                "attempt {attempt}: within [0.5, 1.5) of {mean}"
            );
            let avg = samples.iter().sum::<i64>() as f64 / samples.len() as f64;
            assert!(
                (avg / mean as f64 - 1.0).abs() < 0.02,
                "attempt {attempt}: mean {avg} vs {mean}"
            );
            let distinct: std::collections::HashSet<i64> = samples.iter().copied().collect();
            assert!(distinct.len() > 5_000, "spread out, not a few instants");
        }
        // Tiny and huge bases stay in range (no overflow, never negative).
        assert_eq!(jittered_retry_delay_ms(0, 1, &mut rng), 0);
        assert!(jittered_retry_delay_ms(u64::MAX, 4, &mut rng) > 0);
    }

    #[test]
    fn logged_urls_show_no_credentials_query_values_or_fragment() {
        assert_eq!(
            redact_url("http://user:secret@127.0.0.1:1/hook?token=abc&x=1#frag"),
            "http://***@127.0.0.1:1/hook?token=***&x=***"
        );
        assert_eq!(
            redact_url("https://:pw@example.com/h?k"),
            "https://***@example.com/h?k=***"
        );
        assert_eq!(
            redact_url("https://example.com/a/b"),
            "https://example.com/a/b"
        );
        assert_eq!(redact_url("not a url secret"), "(not a URL)");
    }

    #[test]
    fn secrets_have_the_whsec_prefix() {
        let s = new_secret();
        assert!(s.starts_with("whsec_") && s.len() == 6 + 64);
    }
}
