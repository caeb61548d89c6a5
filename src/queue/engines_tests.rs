//! The engines' health and lanes, without a store: pure state over explicit times.

use std::time::Duration;

use async_trait::async_trait;

use super::*;
use crate::engines::{EngineOutput, EngineTask};

struct Idle;

#[async_trait]
impl Engine for Idle {
    async fn execute(&self, _: EngineTask<'_>) -> Result<EngineOutput, EngineError> {
        Err(EngineError::Retryable("idle".into()))
    }
}

fn member(name: &str, max_in_flight: Option<u32>, per_minute: Option<u32>) -> Member {
    Member::new(
        name,
        "openai-responses",
        Some("gpt-5-mini".into()),
        Arc::new(Idle),
        max_in_flight,
        per_minute,
    )
}

fn idx(t: TaskType) -> usize {
    type_index(t)
}

/// CHATGPT and GROK on `a` (no limits), the Google family on `b` (3 at once), the rest
/// unrouted.
fn routes() -> EngineRoutes {
    let mut route = [None; 8];
    route[idx(TaskType::Chatgpt)] = Some(0);
    route[idx(TaskType::Grok)] = Some(0);
    route[idx(TaskType::Google)] = Some(1);
    route[idx(TaskType::GoogleNews)] = Some(1);
    route[idx(TaskType::Aimode)] = Some(1);
    EngineRoutes::new(
        vec![member("a", None, None), member("b", Some(3), None)],
        route,
    )
}

#[test]
fn only_limited_or_shut_engines_get_a_lane_and_every_type_of_an_engine_maps_to_it() {
    let r = routes();
    let (lanes, owners) = r.lanes(100, 0);
    assert_eq!(
        owners,
        vec![1],
        "a healthy engine without limits needs no lane"
    );
    assert_eq!(lanes.lanes.len(), 1);
    assert_eq!(lanes.lanes[0].name, "b");
    assert_eq!(lanes.lanes[0].max_in_flight, Some(3));
    assert_eq!(lanes.lanes[0].starts, None);
    for t in [TaskType::Google, TaskType::GoogleNews, TaskType::Aimode] {
        assert_eq!(lanes.lane_of[idx(t)], Some(0), "{t:?}");
    }
    for t in [
        TaskType::Chatgpt,
        TaskType::Grok,
        TaskType::Gemini,
        TaskType::Copilot,
    ] {
        assert_eq!(lanes.lane_of[idx(t)], None, "{t:?}");
    }
}

#[test]
fn a_refused_key_shuts_the_engine_and_lets_one_probe_through_a_minute_later() {
    let r = routes();
    let a = &r.members()[0];
    a.record(Verdict::Refused, "Incorrect API key provided", 1_000);
    assert_eq!(a.health().label(), "failing");
    assert_eq!(a.health().message(), Some("Incorrect API key provided"));

    let shut = |now| {
        let (lanes, owners) = r.lanes(100, now);
        let l = owners.iter().position(|&o| o == 0).expect("a has a lane");
        assert_eq!(lanes.lane_of[idx(TaskType::Chatgpt)], Some(l));
        lanes.lanes[l].starts
    };
    assert_eq!(shut(1_000), Some(0));
    assert_eq!(shut(60_999), Some(0));
    assert_eq!(r.next_open_ms(), Some(61_000));
    assert_eq!(shut(61_000), Some(1), "the probe is due");

    // The probe starts: nothing else until it ends, and no second probe for a minute.
    r.started(&[1, 0], 61_000);
    assert_eq!(shut(61_001), Some(0));
    assert_eq!(
        r.next_open_ms(),
        None,
        "a running probe opens nothing by time"
    );

    // The probe is refused again: the next one a minute later.
    a.record(Verdict::Refused, "still wrong", 62_000);
    assert_eq!(shut(62_000), Some(0));
    assert_eq!(r.next_open_ms(), Some(122_000));
    assert_eq!(a.health().message(), Some("still wrong"));

    // A probe that learns nothing (a 5xx) lets the next probe come at its time.
    r.started(&[1, 0], 122_000);
    a.record(Verdict::Unknown, "502", 123_000);
    assert_eq!(shut(123_000), Some(0));
    assert_eq!(shut(182_000), Some(1));

    // The key works again: the engine is open, and without limits it needs no lane.
    r.started(&[1, 0], 182_000);
    a.record(Verdict::KeyWorks, "", 183_000);
    assert_eq!(a.health(), Health::Ok);
    let (lanes, owners) = r.lanes(100, 183_000);
    assert_eq!(owners, vec![1]);
    assert_eq!(lanes.lane_of[idx(TaskType::Chatgpt)], None);
}

#[test]
fn a_429_pauses_new_calls_until_the_announced_reset_then_the_engine_is_ok() {
    let r = routes();
    let b = &r.members()[1];
    b.record(
        Verdict::RateLimited(Some(Duration::from_millis(7_500))),
        "Rate limit reached",
        10_000,
    );
    assert_eq!(b.health().label(), "rate-limited");
    assert_eq!(r.next_open_ms(), Some(17_500));
    let starts = |now| r.lanes(100, now).0.lanes[0].starts;
    assert_eq!(starts(10_000), Some(0));
    assert_eq!(starts(17_499), Some(0));
    assert_eq!(starts(17_500), None, "the pause is over");
    assert_eq!(b.health(), Health::Ok);
    assert_eq!(r.next_open_ms(), None);
}

#[test]
fn a_429_without_a_reset_pauses_for_the_default_and_a_huge_one_is_capped() {
    let r = routes();
    let b = &r.members()[1];
    b.record(Verdict::RateLimited(None), "429", 0);
    assert_eq!(
        r.next_open_ms(),
        Some(DEFAULT_RATE_PAUSE.as_millis() as i64)
    );
    b.record(Verdict::KeyWorks, "", 1);
    b.record(
        Verdict::RateLimited(Some(Duration::from_secs(86_400))),
        "429",
        0,
    );
    assert_eq!(r.next_open_ms(), Some(MAX_RATE_PAUSE.as_millis() as i64));
}

#[test]
fn a_shorter_429_does_not_cut_a_longer_pause_and_a_failing_engine_stays_failing() {
    let r = routes();
    let b = &r.members()[1];
    b.record(
        Verdict::RateLimited(Some(Duration::from_secs(30))),
        "429",
        0,
    );
    b.record(
        Verdict::RateLimited(Some(Duration::from_secs(1))),
        "429",
        100,
    );
    assert_eq!(r.next_open_ms(), Some(30_000));

    let a = &r.members()[0];
    a.record(Verdict::Refused, "bad key", 0);
    a.record(
        Verdict::RateLimited(Some(Duration::from_secs(1))),
        "429",
        10,
    );
    assert_eq!(a.health().label(), "failing");
}

#[test]
fn starts_are_counted_per_engine_and_the_routes_table_names_each_type() {
    let r = routes();
    let started = r.count_started(&[
        TaskType::Chatgpt,
        TaskType::Google,
        TaskType::Aimode,
        TaskType::Gemini,
    ]);
    assert_eq!(started, vec![1, 2]);
    let table = r.table();
    assert_eq!(table.len(), 8);
    assert!(table.contains(&(TaskType::Grok, Some("a"))));
    assert!(table.contains(&(TaskType::GoogleNews, Some("b"))));
    assert!(table.contains(&(TaskType::Copilot, None)));
}

#[test]
fn verdicts_follow_the_engine_errors() {
    use crate::engines::EngineError as E;
    assert_eq!(
        Verdict::of(&Err(E::Fatal {
            code: "X".into(),
            message: "bad request".into()
        })),
        Verdict::KeyWorks
    );
    assert_eq!(
        Verdict::of(&Err(E::Retryable("x".into()))),
        Verdict::Unknown
    );
    assert_eq!(
        Verdict::of(&Err(E::Unauthorized {
            message: "x".into()
        })),
        Verdict::Refused
    );
    assert_eq!(
        Verdict::of(&Err(E::RateLimited {
            retry_after: Some(Duration::from_secs(2)),
            message: "x".into()
        })),
        Verdict::RateLimited(Some(Duration::from_secs(2)))
    );
}
