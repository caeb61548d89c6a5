//! The request envelope: top-level fields, `validate_payload`, normalisation, robustness.

use super::test_support::*;

// ---- top level ---------------------------------------------------------------------------

#[test]
fn a_minimal_chatgpt_request_is_accepted_with_defaults() {
    let r = ok(task("CHATGPT", json!({"prompt": "hi", "country": "US"})));
    assert_eq!(r.task_type, TaskType::Chatgpt);
    assert_eq!(r.priority, 1);
    assert_eq!(r.idempotency_key, None);
    assert_eq!(r.webhook_url, None);
    assert_eq!(r.credits_to_charge, 5);
    assert_eq!(r.payload, json!({"prompt": "hi", "country": "US"}));
}

#[test]
fn all_optional_top_level_fields_are_kept() {
    let r = ok(json!({
        "taskType": "GEMINI",
        "payload": {"prompt": "hi", "country": "DE"},
        "priority": 7,
        "idempotencyKey": "key-1",
        "webhook": {"url": "https://example.com/hook"}
    }));
    assert_eq!(r.priority, 7);
    assert_eq!(r.idempotency_key.as_deref(), Some("key-1"));
    assert_eq!(r.webhook_url.as_deref(), Some("https://example.com/hook"));
    assert_eq!(r.credits_to_charge, 4);
}

#[test]
fn a_body_that_is_not_an_object_is_rejected_at_the_root() {
    for body in [json!([]), json!("x"), json!(1), json!(null), json!(true)] {
        let (field, message) = single(body.clone());
        assert_eq!(field, "");
        assert!(message.starts_with("Invalid input: expected object, received"));
    }
    assert_eq!(
        single(json!([1])).1,
        "Invalid input: expected object, received array"
    );
}

#[test]
fn unknown_top_level_fields_are_rejected_one_error_each() {
    let mut body = task("CHATGPT", json!({"prompt": "hi", "country": "US"}));
    body["foo"] = json!(1);
    body["bar"] = json!(null);
    let e = errs(body);
    assert_eq!(e.len(), 2);
    assert!(has(&e, "foo", "Unrecognized key \"foo\""));
    assert!(has(&e, "bar", "Unrecognized key \"bar\""));
}

#[test]
fn a_missing_task_type_lists_the_allowed_values() {
    let (field, message) = single(json!({"payload": {}}));
    assert_eq!(field, "taskType");
    assert_eq!(
        message,
        "Invalid option: expected one of \"AIMODE\"|\"GOOGLE\"|\"GOOGLE_NEWS\"|\"GEMINI\"|\"CHATGPT\"|\"COPILOT\"|\"PERPLEXITY\"|\"GROK\""
    );
}

#[test]
fn an_unknown_or_lowercase_task_type_is_rejected() {
    for t in [
        json!("chatgpt"),
        json!("BING"),
        json!(3),
        json!(null),
        json!(""),
    ] {
        let (field, _) = single(json!({"taskType": t, "payload": {}}));
        assert_eq!(field, "taskType");
    }
}

#[test]
fn every_task_type_is_accepted() {
    for (t, p) in [
        ("CHATGPT", json!({"prompt": "a", "country": "US"})),
        ("GEMINI", json!({"prompt": "a", "country": "US"})),
        ("GROK", json!({"prompt": "a", "country": "US"})),
        ("COPILOT", json!({"prompt": "a", "country": "US"})),
        ("PERPLEXITY", json!({"prompt": "a", "country": "US"})),
        ("AIMODE", json!({"prompt": "a", "gl": "us"})),
        ("GOOGLE", json!({"query": "a", "gl": "us"})),
        ("GOOGLE_NEWS", json!({"query": "a", "gl": "us"})),
    ] {
        assert_eq!(ok(task(t, p)).task_type.as_str(), t);
    }
}

#[test]
fn a_missing_payload_is_rejected_as_undefined() {
    let (field, message) = single(json!({"taskType": "CHATGPT"}));
    assert_eq!(field, "payload");
    assert_eq!(
        message,
        "Invalid input: expected object, received undefined"
    );
}

#[test]
fn a_payload_that_is_not_an_object_is_rejected() {
    for (p, got) in [
        (json!([]), "array"),
        (json!("x"), "string"),
        (json!(null), "null"),
        (json!(2), "number"),
    ] {
        let (field, message) = single(task("CHATGPT", p));
        assert_eq!(field, "payload");
        assert_eq!(
            message,
            format!("Invalid input: expected object, received {got}")
        );
    }
}

#[test]
fn with_an_invalid_task_type_the_payload_is_only_checked_for_being_an_object() {
    let e = errs(json!({"taskType": "NOPE", "payload": {"anything": 1}}));
    assert_eq!(fields(&e), ["taskType"]);
    let e = errs(json!({"taskType": "NOPE", "payload": 1}));
    assert_eq!(fields(&e), ["taskType", "payload"]);
}

#[test]
fn priority_accepts_integers_from_1_to_10() {
    for p in 1..=10u8 {
        let mut body = task("CHATGPT", json!({"prompt": "a", "country": "US"}));
        body["priority"] = json!(p);
        assert_eq!(ok(body).priority, p);
    }
}

#[test]
fn an_integral_float_priority_counts_as_an_integer() {
    let mut body = task("CHATGPT", json!({"prompt": "a", "country": "US"}));
    body["priority"] = json!(5.0);
    assert_eq!(ok(body).priority, 5);
}

#[test]
fn priority_out_of_range_fractional_string_or_null_is_rejected() {
    for (p, message) in [
        (json!(0), "Too small: expected number to be >=1"),
        (json!(-3), "Too small: expected number to be >=1"),
        (json!(11), "Too big: expected number to be <=10"),
        (json!(u64::MAX), "Too big: expected number to be <=10"),
        (json!(1e300), "Too big: expected number to be <=10"),
        (json!(-1e300), "Too small: expected number to be >=1"),
        (json!(1.5), "Invalid input: expected int, received number"),
        (
            json!("5"),
            "Invalid input: expected number, received string",
        ),
        (json!(null), "Invalid input: expected number, received null"),
        (
            json!(true),
            "Invalid input: expected number, received boolean",
        ),
    ] {
        let mut body = task("CHATGPT", json!({"prompt": "a", "country": "US"}));
        body["priority"] = p.clone();
        assert_eq!(single(body), ("priority".into(), message.into()), "{p}");
    }
}

#[test]
fn an_empty_idempotency_key_is_rejected() {
    let mut body = task("CHATGPT", json!({"prompt": "a", "country": "US"}));
    body["idempotencyKey"] = json!("");
    assert_eq!(
        single(body),
        (
            "idempotencyKey".into(),
            "Too small: expected string to have >=1 characters".into()
        )
    );
}

#[test]
fn an_idempotency_key_longer_than_256_characters_is_rejected() {
    let mut body = task("CHATGPT", json!({"prompt": "a", "country": "US"}));
    body["idempotencyKey"] = json!("k".repeat(256));
    assert_eq!(ok(body.clone()).idempotency_key.map(|k| k.len()), Some(256));
    body["idempotencyKey"] = json!("k".repeat(257));
    assert_eq!(
        single(body),
        (
            "idempotencyKey".into(),
            "Too big: expected string to have <=256 characters".into()
        )
    );
}

#[test]
fn idempotency_key_length_is_counted_in_characters_not_bytes() {
    let mut body = task("CHATGPT", json!({"prompt": "a", "country": "US"}));
    body["idempotencyKey"] = json!("é".repeat(256));
    assert!(parse(body.clone()).is_ok());
    body["idempotencyKey"] = json!("🦀".repeat(257));
    assert_eq!(errs(body).len(), 1);
}

#[test]
fn a_non_string_idempotency_key_is_rejected() {
    for k in [json!(12), json!(null), json!(["a"])] {
        let mut body = task("CHATGPT", json!({"prompt": "a", "country": "US"}));
        body["idempotencyKey"] = k;
        assert_eq!(single(body).0, "idempotencyKey");
    }
}

#[test]
fn a_webhook_needs_an_object_with_a_url() {
    let mut body = task("CHATGPT", json!({"prompt": "a", "country": "US"}));
    body["webhook"] = json!({});
    assert_eq!(
        single(body.clone()),
        ("webhook.url".into(), UNDEFINED_STRING.into())
    );
    body["webhook"] = json!("https://example.com");
    assert_eq!(
        single(body.clone()),
        (
            "webhook".into(),
            "Invalid input: expected object, received string".into()
        )
    );
    body["webhook"] = json!(null);
    assert_eq!(single(body).0, "webhook");
}

#[test]
fn unknown_webhook_fields_are_rejected() {
    let mut body = task("CHATGPT", json!({"prompt": "a", "country": "US"}));
    body["webhook"] = json!({"url": "https://example.com", "secret": "x"});
    assert_eq!(
        single(body),
        (
            "webhook.secret".into(),
            "Unrecognized key \"secret\"".into()
        )
    );
}

#[test]
fn a_webhook_url_must_be_an_absolute_http_or_https_url() {
    for url in [
        "ftp://example.com/x",
        "/relative/path",
        "example.com",
        "mailto:a@example.com",
        "http://",
        "",
        "https://exa mple.com",
    ] {
        let mut body = task("CHATGPT", json!({"prompt": "a", "country": "US"}));
        body["webhook"] = json!({ "url": url });
        assert_eq!(
            single(body),
            (
                "webhook.url".into(),
                "url must be a valid absolute http(s) URL".into()
            ),
            "{url}"
        );
    }
    for url in [
        "http://example.com",
        "https://hooks.example.com:8443/a?b=c",
        "http://10.0.0.1/x",
    ] {
        let mut body = task("CHATGPT", json!({"prompt": "a", "country": "US"}));
        body["webhook"] = json!({ "url": url });
        assert_eq!(ok(body).webhook_url.as_deref(), Some(url));
    }
}

#[test]
fn a_webhook_url_is_trimmed_and_limited_to_2048_characters() {
    let mut body = task("CHATGPT", json!({"prompt": "a", "country": "US"}));
    body["webhook"] = json!({"url": "  https://example.com/x  "});
    assert_eq!(
        ok(body.clone()).webhook_url.as_deref(),
        Some("https://example.com/x")
    );
    let base = "https://example.com/";
    body["webhook"] = json!({ "url": format!("{base}{}", "a".repeat(2048 - base.len())) });
    assert!(parse(body.clone()).is_ok());
    body["webhook"] = json!({ "url": format!("{base}{}", "a".repeat(2049 - base.len())) });
    assert_eq!(
        single(body),
        (
            "webhook.url".into(),
            "Too big: expected string to have <=2048 characters".into()
        )
    );
}

#[test]
fn every_invalid_field_is_reported_at_once() {
    let e = errs(json!({
        "taskType": "CHATGPT",
        "payload": {"prompt": " ", "country": "us", "include": {"ads": "yes"}, "extra": 1},
        "priority": 0,
        "idempotencyKey": "",
        "webhook": {"url": "nope"},
        "other": true
    }));
    for (field, message) in [
        ("other", "Unrecognized key \"other\""),
        ("payload.extra", "Unrecognized key \"extra\""),
        ("payload.prompt", "Prompt cannot be empty"),
        ("payload.country", UNKNOWN),
        (
            "payload.include.ads",
            "Invalid input: expected boolean, received string",
        ),
        ("priority", "Too small: expected number to be >=1"),
        (
            "idempotencyKey",
            "Too small: expected string to have >=1 characters",
        ),
        ("webhook.url", "url must be a valid absolute http(s) URL"),
    ] {
        assert!(has(&e, field, message), "missing {field}: {e:?}");
    }
    assert_eq!(e.len(), 8, "{e:?}");
}

#[test]
fn a_missing_country_is_reported_like_the_batch_example() {
    assert_eq!(
        single(task("CHATGPT", json!({"prompt": "a"}))),
        ("payload.country".into(), UNDEFINED_STRING.into())
    );
}

// ---- validate_payload --------------------------------------------------------------------

#[test]
fn validate_payload_uses_the_given_prefix() {
    let e = validate(TaskType::Chatgpt, &json!({"prompt": ""}), "")
        .err()
        .unwrap_or_default();
    assert_eq!(fields(&e), ["prompt", "country"]);
    let e = validate(TaskType::Chatgpt, &json!({"include": {"x": true}}), "item")
        .err()
        .unwrap_or_default();
    assert!(has(&e, "item.include.x", "Unrecognized key \"x\""));
    let e = validate(TaskType::Google, &json!(7), "")
        .err()
        .unwrap_or_default();
    assert_eq!(
        e,
        [FieldError::new(
            "",
            "Invalid input: expected object, received number"
        )]
    );
}

#[test]
fn validate_payload_returns_the_normalised_payload_and_price() {
    let (payload, credits) = validate(
        TaskType::Google,
        &json!({"query": " shoes ", "gl": "GB", "hl": "EN-gb", "pages": 2}),
        "",
    )
    .unwrap_or_default();
    assert_eq!(
        payload,
        json!({"query": "shoes", "gl": "gb", "country": "GB", "hl": "en-gb",
               "device": "desktop", "pages": 2})
    );
    assert_eq!(credits, 5);
}

// ---- normalisation -----------------------------------------------------------------------

#[test]
fn a_normalised_payload_validates_to_itself() {
    for (t, p) in [
        (
            TaskType::Chatgpt,
            json!({"prompt": " a ", "country": "US", "state": "ca", "legacy": true,
                   "include": {"ads": true}}),
        ),
        (TaskType::Gemini, json!({"prompt": "a", "country": "DE"})),
        (
            TaskType::Aimode,
            json!({"prompt": "a", "country": "US", "gl": "us", "hl": "EN",
                   "uule": "x", "include": {"googleGoto": true, "expandProducts": true}}),
        ),
        (
            TaskType::Google,
            json!({"query": "a", "gl": "us", "pages": 4, "location": "Austin,Texas,United States",
                   "include": {"aioverview": {"markdown": true}, "paaAioverview": true}}),
        ),
        (
            TaskType::Google,
            json!({"url": "https://google.com/search?q=x&gl=us&hl=en&num=50&uule=w+A"}),
        ),
        (
            TaskType::GoogleNews,
            json!({"query": "a", "country": "GB", "device": "ios"}),
        ),
    ] {
        let first = validate(t, &p, "payload");
        let Ok((normal, credits)) = first else {
            panic!("{p} rejected: {first:?}");
        };
        assert_eq!(
            validate(t, &normal, "payload"),
            Ok((normal.clone(), credits)),
            "{p}"
        );
    }
}

// ---- robustness --------------------------------------------------------------------------

fn nested(depth: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..depth {
        v = json!({ "a": [v] });
    }
    v
}

#[test]
fn odd_values_never_panic() {
    let oddities = [
        json!(null),
        json!(true),
        json!(0),
        json!(-1),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(1e308),
        json!(-0.0),
        json!(""),
        json!(" "),
        json!("\u{0}"),
        json!("ÿ€🦀\u{202e}"),
        json!("%"),
        json!("https://www.google.com/search?q=%ZZ&uule=%E0%A4%A&gl=us"),
        json!("https://www.google.com/search?q=a&uule=%F0%9F%A6%80&gl=us"),
        json!("x".repeat(20_000)),
        json!([]),
        json!({}),
        json!({"markdown": {"deep": [1, 2]}}),
        nested(50),
    ];
    let keys = [
        "prompt",
        "query",
        "url",
        "country",
        "gl",
        "hl",
        "location",
        "uule",
        "device",
        "pages",
        "state",
        "include",
        "legacy",
        "disableWebSearch",
        "🦀",
        "",
    ];
    for t in TaskType::ALL {
        for key in keys {
            for odd in &oddities {
                let base = if matches!(t, TaskType::Google | TaskType::GoogleNews) {
                    json!({"query": "a", "gl": "us"})
                } else {
                    json!({"prompt": "a", "country": "US", "gl": "us"})
                };
                let mut payload = base.clone();
                payload[key] = odd.clone();
                let _ = validate(t, &payload, "payload");
                let mut payload = base;
                payload["include"] = json!({ key: odd.clone(), "aioverview": odd.clone() });
                let _ = validate(t, &payload, "payload");
            }
        }
    }
    for key in [
        "taskType",
        "payload",
        "priority",
        "idempotencyKey",
        "webhook",
        "x",
    ] {
        for odd in &oddities {
            let mut body = task("GOOGLE", json!({"query": "a", "gl": "us"}));
            body[key] = odd.clone();
            let _ = parse(body.clone());
            body["webhook"] = json!({ "url": odd.clone() });
            let _ = parse(body);
        }
    }
    let _ = parse(nested(100));
}

// ---- the typed payload -------------------------------------------------------------------

#[test]
fn every_accepted_payload_round_trips_through_its_stored_form() {
    for (t, p) in [
        (
            TaskType::Chatgpt,
            json!({"prompt": "a", "country": "US", "state": "ny", "legacy": false,
                   "disableWebSearch": true, "include": {"shopping": true, "html": false,
                   "markdown": true, "rawResponse": true, "searchQueries": false, "ads": true}}),
        ),
        (
            TaskType::Perplexity,
            json!({"prompt": "a", "country": "DE", "include": {}}),
        ),
        (
            TaskType::Aimode,
            json!({"prompt": "a", "gl": "gb", "location": "London", "device": "mobile",
                   "include": {"expandProducts": true, "googleGoto": false}}),
        ),
        (
            TaskType::Google,
            json!({"query": "a", "country": "US", "hl": "en", "uule": "w+x", "device": "ios",
                   "include": {"aioverview": {}, "html": true}}),
        ),
        (
            TaskType::Google,
            json!({"url": "https://www.google.co.uk/search?q=a&gl=gb&num=20", "hl": "en",
                   "include": {"aioverview": false, "paaAioverview": true}}),
        ),
        (
            TaskType::GoogleNews,
            json!({"query": "a", "gl": "us", "pages": 3, "include": {"html": true}}),
        ),
    ] {
        let (typed, _) =
            validate_payload(t, &p, "payload").unwrap_or_else(|e| panic!("{p} rejected: {e:?}"));
        assert_eq!(typed.task_type(), t);
        let stored = typed.clone().into_stored();
        assert_eq!(
            serde_json::to_value(&typed).ok(),
            Some(stored.clone()),
            "{p}"
        );
        assert_eq!(
            super::Payload::from_stored(t, &stored).ok(),
            Some(typed),
            "{p}"
        );
    }
}

#[test]
fn a_stored_payload_of_another_task_type_does_not_read_back() {
    let chat = json!({"prompt": "a", "country": "US"});
    let e = super::Payload::from_stored(TaskType::Google, &chat).err();
    assert_eq!(
        e.map(|e| e.to_string()),
        Some("the stored GOOGLE payload cannot be read: missing field `query`".into())
    );
    assert!(super::Payload::from_stored(TaskType::Gemini, &json!(null)).is_err());
}
