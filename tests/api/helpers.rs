#![allow(dead_code)]
//! `spawn_app`: a real server on 127.0.0.1:<random port> over a fresh database, and typed
//! helpers that return `(StatusCode, serde_json::Value)`.
//!
//! The store is SQLite unless `CLORO_TEST_STORE=postgres`, which runs the same tests against
//! the cluster store on a fresh PostgreSQL database (needs `CLORO_TEST_PG`, see
//! `cloro::testing`).

use std::sync::Arc;
use std::time::Duration;

use cloro::app::{self, ServeOptions, Server};
use cloro::engines::{LatencyRange, SimulatedEngine};
use cloro::queue::{self, QueueConfig};
use cloro::store::{CreatedOrg, Database, OrgSpec, Store};
use cloro::store::{Directory, admin};
use cloro::testing::TestDb;
use reqwest::StatusCode;
use serde_json::{Value, json};

pub struct TestApp {
    pub base: String,
    pub key: String,
    pub org_id: String,
    pub server: Option<Server>,
    pub client: reqwest::Client,
    pub db: TestDb,
    /// The server's configured engines (what `Builder::engines` gave, or none).
    pub engines: Arc<cloro::queue::EngineRoutes>,
}

/// Runs an administrative action on `db` from a thread of its own (tests call it from sync
/// code, whatever runtime they are in).
fn admin<T: Send + 'static>(
    db: &Database,
    act: impl FnOnce(Box<dyn Directory>) -> std::pin::Pin<Box<dyn std::future::Future<Output = T>>>
    + Send
    + 'static,
) -> T {
    let db = db.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let a = admin::open(&db).await.expect("admin connection");
            act(a).await
        })
    })
    .join()
    .expect("admin thread")
}

fn create(db: &Database, spec: OrgSpec) -> CreatedOrg {
    admin(db, move |a| {
        Box::pin(async move { a.create_org(&spec).await.expect("org created") })
    })
}

/// The database of the tests: SQLite, or PostgreSQL with `CLORO_TEST_STORE=postgres`.
async fn test_db() -> TestDb {
    if std::env::var("CLORO_TEST_STORE").as_deref() == Ok("postgres") {
        let url = cloro::testing::pg_admin_url()
            .expect("CLORO_TEST_STORE=postgres needs CLORO_TEST_PG=postgres://…");
        TestDb::postgres(&url).await.expect("test database")
    } else {
        TestDb::sqlite().expect("test database")
    }
}

pub struct Builder {
    plan: String,
    concurrency: Option<u32>,
    credits: Option<i64>,
    queue_limit: Option<i64>,
    latency_ms: u64,
    failure_rate: f64,
    workers: usize,
    retry_base_ms: u64,
    retention_ms: Option<i64>,
    max_body_bytes: usize,
    paused: bool,
    rate_limit: Option<u32>,
    engines: Option<cloro::queue::EngineRoutes>,
    engine: Option<Arc<dyn cloro::engines::Engine>>,
    sync_budget: Option<Duration>,
    edge: cloro::api::edge::EdgeConfig,
    webhooks: cloro::webhooks::WebhookConfig,
    pages: cloro::pages::PagesConfig,
    goto: cloro::api::goto::GotoConfig,
    data_dir: Option<std::path::PathBuf>,
    operator: cloro::api::admin::OperatorConfig,
}

impl TestApp {
    pub fn builder() -> Builder {
        Builder {
            plan: "business".into(),
            concurrency: None,
            credits: None,
            queue_limit: None,
            latency_ms: 0,
            failure_rate: 0.0,
            workers: 64,
            retry_base_ms: 1,
            retention_ms: None,
            max_body_bytes: 10 * 1024 * 1024,
            paused: false,
            rate_limit: None,
            engines: None,
            engine: None,
            sync_budget: None,
            edge: Default::default(),
            webhooks: cloro::webhooks::WebhookConfig {
                retry_base_ms: 50,
                timeout: Duration::from_secs(2),
                allow_private: false,
                ..Default::default()
            },
            pages: Default::default(),
            goto: Default::default(),
            data_dir: None,
            operator: Default::default(),
        }
    }

    pub async fn spawn() -> TestApp {
        TestApp::builder().spawn().await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn store(&self) -> Arc<dyn Store> {
        let s: Arc<dyn Store> = self.server.as_ref().expect("running").store.clone();
        s
    }

    /// Creates another organization on the running server's database (like `cloro org create`).
    pub fn create_org(
        &self,
        plan: &str,
        credits: Option<i64>,
        concurrency: Option<u32>,
        queue_limit: Option<i64>,
    ) -> (String, String) {
        let spec = OrgSpec {
            name: "other".into(),
            plan: plan.into(),
            concurrency,
            credits,
            queue_limit,
            rate_limit: None,
        };
        let c = create(&self.db.database, spec);
        (c.org.public_id, c.api_key.expose().to_owned())
    }

    /// A new key of the test's organization: `(key_id, key)`.
    pub fn create_key(&self) -> (String, String) {
        let org = self.org_id.clone();
        admin(&self.db.database, move |a| {
            Box::pin(async move {
                let (id, key) = a.create_key(&org).await.expect("key created");
                (id, key.expose().to_owned())
            })
        })
    }

    /// Creates or rotates (`Some`) or removes (`None`) the organization's signing secret, like
    /// `cloro org webhook-secret`.
    pub fn set_webhook_secret(&self, secret: Option<String>) {
        let org = self.org_id.clone();
        admin(&self.db.database, move |a| {
            Box::pin(async move {
                a.set_webhook_secret(&org, secret.as_deref())
                    .await
                    .expect("secret set")
            })
        })
    }

    pub fn revoke_key(&self, key_id: &str) {
        let key_id = key_id.to_owned();
        admin(&self.db.database, move |a| {
            Box::pin(async move { a.revoke_key(&key_id).await.expect("key revoked") })
        })
    }

    pub async fn send(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let text = resp.text().await.expect("body read");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    pub async fn post_json(&self, path: &str, key: &str, body: &Value) -> (StatusCode, Value) {
        self.send(self.client.post(self.url(path)).bearer_auth(key).json(body))
            .await
    }

    pub async fn get_as(&self, path: &str, key: &str) -> (StatusCode, Value) {
        self.send(self.client.get(self.url(path)).bearer_auth(key))
            .await
    }

    /// GETs `path` with `token` as the bearer (or none), and its status and raw body: the admin
    /// surfaces (`/metrics`, `/dashboard/data`) that the admin token guards.
    pub async fn get_with_token(&self, path: &str, token: Option<&str>) -> (StatusCode, String) {
        let mut req = self.client.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("request sent");
        (resp.status(), resp.text().await.expect("body read"))
    }

    /// Submits `n` tasks of each `(task_type, priority, n)` with [`priority_task`], one request
    /// each, and checks that every one was accepted.
    pub async fn submit_mix(&self, mix: &[(&str, u8, usize)]) {
        for &(task_type, priority, n) in mix {
            for _ in 0..n {
                let (s, b) = self.create_task(&priority_task(task_type, priority)).await;
                assert_eq!(s, StatusCode::OK, "{b}");
            }
        }
    }

    pub async fn create_task(&self, body: &Value) -> (StatusCode, Value) {
        self.post_json("/v1/async/task", &self.key, body).await
    }

    pub async fn batch(&self, body: &Value) -> (StatusCode, Value) {
        self.post_json("/v1/async/task/batch", &self.key, body)
            .await
    }

    pub async fn get_task(&self, id: &str) -> (StatusCode, Value) {
        self.get_as(&format!("/v1/async/task/{id}"), &self.key)
            .await
    }

    pub async fn status(&self) -> Value {
        let (s, b) = self.get_as("/v1/async/status", &self.key).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b
    }

    pub async fn credits(&self) -> i64 {
        let (s, b) = self.get_as("/v1/credits", &self.key).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        b["remaining"].as_i64().expect("remaining")
    }

    /// Waits until nothing is queued or running (driven by the store's change signal).
    pub async fn drain(&self) {
        let store = self.store();
        tokio::time::timeout(Duration::from_secs(30), queue::wait_idle(&*store))
            .await
            .expect("queue drained within 30 s");
    }

    pub fn resume(&self) {
        self.server.as_ref().expect("running").gate.resume();
    }

    pub fn pause(&self) {
        self.server.as_ref().expect("running").gate.pause();
    }

    pub async fn stop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
            s.stopped(Duration::from_secs(10)).await;
        }
    }
}

impl Builder {
    pub fn plan(mut self, p: &str) -> Self {
        self.plan = p.into();
        self
    }
    pub fn concurrency(mut self, c: u32) -> Self {
        self.concurrency = Some(c);
        self
    }
    pub fn credits(mut self, c: i64) -> Self {
        self.credits = Some(c);
        self
    }
    pub fn queue_limit(mut self, q: i64) -> Self {
        self.queue_limit = Some(q);
        self
    }
    pub fn latency_ms(mut self, l: u64) -> Self {
        self.latency_ms = l;
        self
    }
    pub fn failure_rate(mut self, f: f64) -> Self {
        self.failure_rate = f;
        self
    }
    pub fn workers(mut self, w: usize) -> Self {
        self.workers = w;
        self
    }
    /// Starts with the dispatcher paused: submitted tasks stay QUEUED until `resume()`.
    pub fn paused(mut self) -> Self {
        self.paused = true;
        self
    }
    /// Webhook sender settings (retry base, time limit, private destinations).
    pub fn webhooks(mut self, f: impl FnOnce(&mut cloro::webhooks::WebhookConfig)) -> Self {
        f(&mut self.webhooks);
        self
    }
    /// How long terminal tasks are kept (`serve --retention-secs`, in ms).
    pub fn retention_ms(mut self, ms: i64) -> Self {
        self.retention_ms = Some(ms);
        self
    }
    /// Result page settings (`serve --public-url`, `--page-rate-limit`).
    pub fn pages(mut self, f: impl FnOnce(&mut cloro::pages::PagesConfig)) -> Self {
        f(&mut self.pages);
        self
    }
    /// The goto resolver's settings (Google's time limit, a stand-in for Google).
    /// Serves the operator endpoints to this admin token (and how metrics label organizations).
    pub fn admin_token(mut self, token: &str, org_labels: bool) -> Self {
        self.operator.admin_token = cloro::api::admin::AdminToken::new(token);
        self.operator.metrics_org_labels = org_labels;
        self
    }

    pub fn goto(mut self, f: impl FnOnce(&mut cloro::api::goto::GotoConfig)) -> Self {
        f(&mut self.goto);
        self
    }
    pub fn max_body_bytes(mut self, b: usize) -> Self {
        self.max_body_bytes = b;
        self
    }

    /// The test organization's own rate limit (`org create --rate-limit`).
    pub fn rate_limit(mut self, r: u32) -> Self {
        self.rate_limit = Some(r);
        self
    }
    /// The server's edge settings (`serve --rate-limit`, timeouts, connection bound).
    pub fn edge(mut self, e: cloro::api::edge::EdgeConfig) -> Self {
        self.edge = e;
        self
    }

    /// The default engine (instead of the simulator with `latency_ms` and `failure_rate`).
    pub fn engine(mut self, engine: Arc<dyn cloro::engines::Engine>) -> Self {
        self.engine = Some(engine);
        self
    }

    /// The sync calls' budget (5 minutes by default).
    pub fn sync_budget(mut self, budget: Duration) -> Self {
        self.sync_budget = Some(budget);
        self
    }

    /// Configured engines (an engines file loaded with `EngineRoutes::load`).
    pub fn engines(mut self, routes: cloro::queue::EngineRoutes) -> Self {
        self.engines = Some(routes);
        self
    }

    /// An SQLite database in `dir` (an existing directory, e.g. a small tmpfs) instead of a
    /// fresh temporary one.
    pub fn data_dir(mut self, dir: &std::path::Path) -> Self {
        self.data_dir = Some(dir.to_owned());
        self
    }

    pub async fn spawn(self) -> TestApp {
        let db = match &self.data_dir {
            Some(dir) => TestDb::sqlite_in(dir),
            None => test_db().await,
        };
        // The test's organization exists before the server starts, so `default` is not made.
        let spec = OrgSpec {
            name: "test".into(),
            plan: self.plan.clone(),
            concurrency: self.concurrency,
            credits: self.credits,
            queue_limit: self.queue_limit,
            rate_limit: self.rate_limit,
        };
        let created = create(&db.database, spec);
        let engines = Arc::new(self.engines.unwrap_or_default());
        let opts = ServeOptions {
            listen: "127.0.0.1:0".parse().expect("addr"),
            database: db.database.clone(),
            cluster: cloro::store::postgres::PgConfig {
                poll_ms: 50,
                ..Default::default()
            },
            queue: QueueConfig {
                workers: self.workers,
                retry_base_ms: self.retry_base_ms,
                retention_ms: self
                    .retention_ms
                    .unwrap_or(QueueConfig::default().retention_ms),
                sync_budget: self
                    .sync_budget
                    .unwrap_or(QueueConfig::default().sync_budget),
                ..QueueConfig::default()
            },
            engine: self.engine.unwrap_or_else(|| {
                Arc::new(SimulatedEngine {
                    latency: LatencyRange {
                        min_ms: self.latency_ms,
                        max_ms: self.latency_ms,
                    },
                    failure_rate: self.failure_rate,
                })
            }),
            engines: engines.clone(),
            max_body_bytes: self.max_body_bytes,
            default_plan: "free".into(),
            edge: self.edge.clone(),
            webhooks: self.webhooks,
            pages: self.pages,
            goto: self.goto,
            operator: self.operator,
            clock: cloro::clock::Clock::system(),
        };
        let server = app::start(opts).await.expect("server starts");
        if self.paused {
            server.gate.pause();
        }
        assert!(server.created_default.is_none());
        TestApp {
            base: format!("http://{}", server.addr),
            key: created.api_key.expose().to_owned(),
            org_id: created.org.public_id,
            server: Some(server),
            client: reqwest::Client::new(),
            db,
            engines,
        }
    }
}

/// A valid ChatGPT task.
pub fn chatgpt(prompt: &str) -> Value {
    json!({ "taskType": "CHATGPT", "payload": { "prompt": prompt, "country": "US" } })
}

/// A valid task of `task_type` (`GOOGLE` takes a query, the others a prompt) at `priority`.
pub fn priority_task(task_type: &str, priority: u8) -> Value {
    let payload = match task_type {
        "GOOGLE" => json!({"query": "espresso", "country": "US"}),
        _ => json!({"prompt": "espresso", "country": "US"}),
    };
    json!({"taskType": task_type, "payload": payload, "priority": priority})
}

pub fn with(mut v: Value, key: &str, value: Value) -> Value {
    v[key] = value;
    v
}

/// Posts `body` to `path` with the app's key on a task of its own (a call the test lets run,
/// or abandons, while it does other things), through `client`.
pub fn spawn_post(
    app: &TestApp,
    client: reqwest::Client,
    path: &str,
    body: Value,
) -> tokio::task::JoinHandle<reqwest::Result<reqwest::Response>> {
    let (url, key) = (app.url(path), app.key.clone());
    tokio::spawn(async move { client.post(url).bearer_auth(key).json(&body).send().await })
}
