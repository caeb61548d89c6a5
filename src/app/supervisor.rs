//! Supervision of the server's components (the dispatcher, the purger, the webhook sender, the
//! HTTP listener).
//!
//! Each component is a long-lived Tokio task that ends only when the server's cancellation
//! token fires. One that ends otherwise (it returned early, or it panicked) would leave a
//! process that looks alive but no longer runs tasks or sends webhooks. So every component is
//! spawned with a watcher: when a component ends while no shutdown was asked for, or panics at
//! any time, the watcher logs one error line naming it and how it ended, records the first such
//! [`ComponentFailure`] (which `main` turns into a non-zero exit) and cancels the token, so the
//! whole server shuts down gracefully instead of limping on.

use std::future::Future;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How a component ended on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// Its task returned while the server was running.
    Returned,
    /// Its task panicked (with the panic's message, when it had one).
    Panicked(String),
    /// Its task was cancelled by the runtime (the runtime is shutting down).
    Aborted,
}

/// A component that ended while it should still have been running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentFailure {
    /// Which component: "dispatcher", "purger", "webhook sender", "HTTP listener".
    pub component: &'static str,
    pub ended: Ended,
}

impl std::fmt::Display for ComponentFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.ended {
            Ended::Returned => write!(f, "the {} stopped on its own", self.component),
            Ended::Panicked(message) => write!(f, "the {} panicked: {message}", self.component),
            Ended::Aborted => write!(f, "the {} was aborted", self.component),
        }
    }
}

/// Spawns and watches the components of one server.
pub(crate) struct Supervisor {
    cancel: CancellationToken,
    tracker: TaskTracker,
    failure: watch::Sender<Option<ComponentFailure>>,
}

impl Supervisor {
    pub(crate) fn new(cancel: CancellationToken) -> Supervisor {
        Supervisor {
            cancel,
            tracker: TaskTracker::new(),
            failure: watch::Sender::new(None),
        }
    }

    /// Runs `component` on its own task and watches how it ends.
    pub(crate) fn spawn<F>(&self, component: &'static str, run: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let handle = self.tracker.spawn(run);
        let cancel = self.cancel.clone();
        let failure = self.failure.clone();
        self.tracker.spawn(async move {
            let ended = match handle.await {
                Ok(()) if cancel.is_cancelled() => {
                    tracing::debug!(component, "Component stopped");
                    return;
                }
                Ok(()) => Ended::Returned,
                Err(e) if e.is_panic() => Ended::Panicked(panic_message(e.into_panic())),
                Err(_) => Ended::Aborted,
            };
            let what = ComponentFailure { component, ended };
            tracing::error!(
                component,
                "Component failed: {what}; shutting the server down"
            );
            failure.send_if_modified(|first| {
                let new = first.is_none();
                if new {
                    *first = Some(what);
                }
                new
            });
            cancel.cancel();
        });
    }

    /// Asks every component to stop.
    pub(crate) fn shutdown(&self) {
        self.cancel.cancel();
    }

    /// The first component that failed, if one did.
    pub(crate) fn failure(&self) -> Option<ComponentFailure> {
        self.failure.borrow().clone()
    }

    /// Waits until a component fails (forever if none does).
    pub(crate) async fn failed(&self) -> ComponentFailure {
        let mut rx = self.failure.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(f) => f.clone().unwrap_or_else(|| unreachable!("waited for Some")),
            // The sender lives in `self`: it cannot be dropped while this waits.
            Err(_) => std::future::pending().await,
        }
    }

    /// Waits until every component and its watcher ended.
    pub(crate) async fn wait(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component that runs until the token fires.
    fn well_behaved(cancel: &CancellationToken) -> impl Future<Output = ()> + Send + 'static {
        let cancel = cancel.clone();
        async move { cancel.cancelled().await }
    }

    #[tokio::test]
    async fn a_component_that_returns_is_named_and_stops_the_others() {
        let cancel = CancellationToken::new();
        let sup = Supervisor::new(cancel.clone());
        sup.spawn("dispatcher", well_behaved(&cancel));
        sup.spawn("purger", async {});
        let failure = sup.failed().await;
        assert_eq!(
            failure,
            ComponentFailure {
                component: "purger",
                ended: Ended::Returned
            }
        );
        assert_eq!(failure.to_string(), "the purger stopped on its own");
        assert!(cancel.is_cancelled(), "everything is asked to stop");
        sup.wait().await;
        assert_eq!(sup.failure(), Some(failure), "the first failure stays");
    }

    #[tokio::test]
    async fn a_panicking_component_is_named_with_its_message() {
        let cancel = CancellationToken::new();
        let sup = Supervisor::new(cancel.clone());
        sup.spawn("HTTP listener", well_behaved(&cancel));
        let n = 7;
        sup.spawn(
            "webhook sender",
            async move { panic!("broken invariant {n}") },
        );
        let failure = sup.failed().await;
        assert_eq!(failure.component, "webhook sender");
        assert_eq!(failure.ended, Ended::Panicked("broken invariant 7".into()));
        assert_eq!(
            failure.to_string(),
            "the webhook sender panicked: broken invariant 7"
        );
        sup.wait().await;
    }

    #[tokio::test]
    async fn components_that_stop_on_shutdown_are_not_failures() {
        let cancel = CancellationToken::new();
        let sup = Supervisor::new(cancel.clone());
        sup.spawn("dispatcher", well_behaved(&cancel));
        sup.spawn("purger", well_behaved(&cancel));
        sup.shutdown();
        sup.wait().await;
        assert_eq!(sup.failure(), None);
    }
}
