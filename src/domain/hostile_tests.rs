//! Hostile input: properties of the request parser and validators over arbitrary JSON, and
//! over generated valid requests.
//!
//! * Nothing panics, whatever the JSON (deep nesting, huge numbers, odd Unicode, wrong types).
//! * A refused object request names every problem at a path (never the empty root path, which
//!   is kept for a body that is not an object, except for an unknown key `""`), with a message.
//! * Every generated valid request is accepted, its normalised form is a fixed point, and it
//!   reads back from its stored form as the same typed payload.
//!
//! The cargo-fuzz targets in `fuzz/` drive the same functions with coverage guidance.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::apikey::ApiKey;
use super::google_url::parse_google_search_url;
use super::request::{parse_task_request, validate_payload};
use super::types::TaskType;

/// Any JSON value, biased towards the shapes and names the parser looks at.
fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("taskType".to_owned()),
        Just("payload".to_owned()),
        Just("priority".to_owned()),
        Just("idempotencyKey".to_owned()),
        Just("webhook".to_owned()),
        Just("url".to_owned()),
        Just("prompt".to_owned()),
        Just("query".to_owned()),
        Just("country".to_owned()),
        Just("gl".to_owned()),
        Just("hl".to_owned()),
        Just("state".to_owned()),
        Just("include".to_owned()),
        Just("pages".to_owned()),
        Just("device".to_owned()),
        Just("location".to_owned()),
        Just("uule".to_owned()),
        ".{0,12}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        (0..12i64).prop_map(Value::from),
        prop_oneof![
            Just("CHATGPT"),
            Just("GOOGLE"),
            Just("GOOGLE_NEWS"),
            Just("AIMODE"),
            Just("GEMINI"),
            Just("COPILOT"),
            Just("PERPLEXITY"),
            Just("GROK"),
            Just("US"),
            Just("us"),
            Just("GB"),
            Just("CA"),
            Just("https://www.google.com/search?q=x&gl=us"),
            Just("http://h/"),
            Just(""),
            Just("  "),
            Just("mobile"),
            Just("desktop")
        ]
        .prop_map(|s| Value::String(s.to_owned())),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn task_type() -> impl Strategy<Value = TaskType> {
    prop::sample::select(TaskType::ALL.to_vec())
}

/// A valid request: a prompt engine (ChatGPT, Gemini, Copilot, Perplexity, Grok) with a prompt
/// of 1..=200 characters in the US, or a Google query.
fn valid_request() -> impl Strategy<Value = Value> {
    let text = "[a-zA-Z0-9 ,.?é漢]{0,199}[a-z]";
    (
        prop::sample::select(vec![
            "CHATGPT",
            "GEMINI",
            "COPILOT",
            "PERPLEXITY",
            "GROK",
            "GOOGLE",
        ]),
        text,
        prop::option::of(1..=10u8),
        prop::option::of("[a-zA-Z0-9_-]{1,64}"),
        prop::option::of(prop::sample::select(vec![
            "https://example.com/hook",
            "http://h.example/x?y=1",
        ])),
    )
        .prop_map(|(tt, text, priority, key, hook)| {
            let payload = if tt == "GOOGLE" {
                json!({ "query": text, "gl": "us" })
            } else {
                json!({ "prompt": text, "country": "US" })
            };
            let mut v = json!({ "taskType": tt, "payload": payload });
            if let Some(p) = priority {
                v["priority"] = json!(p);
            }
            if let Some(k) = key {
                v["idempotencyKey"] = json!(k);
            }
            if let Some(h) = hook {
                v["webhook"] = json!({ "url": h });
            }
            v
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_json_never_panics_and_every_error_has_a_path(v in json_value()) {
        match parse_task_request(&v) {
            Ok(req) => {
                prop_assert!((1..=10).contains(&req.priority));
                prop_assert!(req.credits_to_charge > 0);
                super::fuzz_checks::stored_round_trip(req.task_type, &req.payload);
            }
            Err(errors) => {
                prop_assert!(!errors.is_empty());
                for e in &errors {
                    prop_assert!(!e.message.is_empty());
                    // The root path is only for a body that is not an object (or for an unknown
                    // key that is itself the empty string, whose own path is "").
                    if v.is_object() && e.field.is_empty() {
                        prop_assert!(e.message.contains("Unrecognized key \"\""), "empty path for {:?} in {}", e, v);
                    }
                }
            }
        }
    }

    #[test]
    fn arbitrary_payloads_never_panic(tt in task_type(), v in json_value()) {
        if let Err(errors) = validate_payload(tt, &v, "payload") {
            prop_assert!(!errors.is_empty());
            for e in &errors {
                prop_assert!(e.field.starts_with("payload"), "{:?}", e);
            }
        }
    }

    #[test]
    fn arbitrary_objects_as_task_requests_never_panic(
        tt in task_type(),
        payload in json_value(),
        priority in json_value(),
    ) {
        let v = json!({ "taskType": tt.as_str(), "payload": payload, "priority": priority });
        let _ = parse_task_request(&v);
    }

    #[test]
    fn arbitrary_strings_never_panic_the_url_and_key_parsers(s in ".{0,200}") {
        let _ = parse_google_search_url(&s);
        let _ = parse_google_search_url(&format!("https://www.google.com/search?q={s}"));
        let _ = ApiKey::parse(&s);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_body_parser(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(v) = serde_json::from_slice::<Value>(&bytes) {
            let _ = parse_task_request(&v);
        }
    }

    #[test]
    fn generated_valid_requests_are_accepted_and_normalising_is_idempotent(v in valid_request()) {
        let req = parse_task_request(&v);
        prop_assert!(req.is_ok(), "{} refused: {:?}", v, req);
        let Ok(req) = req else { unreachable!() };
        let again = validate_payload(req.task_type, &req.payload, "payload")
            .map(|(p, c)| (p.into_stored(), c));
        prop_assert_eq!(again, Ok((req.payload.clone(), req.credits_to_charge)));
        super::fuzz_checks::stored_round_trip(req.task_type, &req.payload);
    }
}
