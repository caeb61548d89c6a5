//! Prompt and query, `country`, `include` and engine-specific fields, `state`.

use super::test_support::*;

// ---- prompt / query ----------------------------------------------------------------------

#[test]
fn an_empty_or_blank_prompt_is_rejected() {
    for p in ["", "   ", "\n\t", "\u{feff}"] {
        assert_eq!(
            single(task("GEMINI", json!({"prompt": p, "country": "US"}))),
            ("payload.prompt".into(), "Prompt cannot be empty".into())
        );
    }
}

#[test]
fn a_missing_or_non_string_prompt_gets_the_prompt_message() {
    for payload in [
        json!({"country": "US"}),
        json!({"prompt": 5, "country": "US"}),
        json!({"prompt": null, "country": "US"}),
    ] {
        assert_eq!(
            single(task("PERPLEXITY", payload)),
            ("payload.prompt".into(), "Prompt cannot be empty".into())
        );
    }
}

#[test]
fn a_prompt_is_trimmed() {
    let r = ok(task(
        "GROK",
        json!({"prompt": "  hello world \n", "country": "US"}),
    ));
    assert_eq!(r.payload["prompt"], "hello world");
}

#[test]
fn a_prompt_of_10000_characters_is_accepted_and_10001_rejected() {
    let p = "a".repeat(10_000);
    assert!(parse(task("COPILOT", json!({"prompt": p, "country": "US"}))).is_ok());
    let padded = format!("  {p}  ");
    assert!(parse(task("COPILOT", json!({"prompt": padded, "country": "US"}))).is_ok());
    let p = "a".repeat(10_001);
    assert_eq!(
        single(task("COPILOT", json!({"prompt": p, "country": "US"}))),
        (
            "payload.prompt".into(),
            "Prompt is too long (max 10,000 characters)".into()
        )
    );
}

#[test]
fn prompt_length_is_counted_in_characters_not_bytes() {
    let p = "日".repeat(10_000);
    assert!(parse(task("CHATGPT", json!({"prompt": p, "country": "US"}))).is_ok());
    let p = "🦀".repeat(10_001);
    assert_eq!(
        single(task("CHATGPT", json!({"prompt": p, "country": "US"}))).1,
        "Prompt is too long (max 10,000 characters)"
    );
}

#[test]
fn query_messages_are_used_for_the_google_family() {
    assert_eq!(
        single(task("GOOGLE_NEWS", json!({"query": " ", "gl": "us"}))),
        ("payload.query".into(), "Query cannot be empty".into())
    );
    assert_eq!(
        single(task("GOOGLE_NEWS", json!({"gl": "us"}))),
        ("payload.query".into(), "Query cannot be empty".into())
    );
    assert_eq!(
        single(task(
            "GOOGLE",
            json!({"query": "q".repeat(10_001), "gl": "us"})
        )),
        (
            "payload.query".into(),
            "Query is too long (max 10,000 characters)".into()
        )
    );
    assert_eq!(
        single(task("GOOGLE", json!({"query": "", "gl": "us"}))),
        ("payload.query".into(), "Query cannot be empty".into())
    );
}

// ---- country -----------------------------------------------------------------------------

#[test]
fn a_lowercase_country_is_rejected() {
    for t in ["CHATGPT", "GEMINI", "AIMODE", "GOOGLE_NEWS"] {
        let text = if t.starts_with("GOOGLE") {
            "query"
        } else {
            "prompt"
        };
        let e = errs(task(t, json!({ text: "a", "country": "us" })));
        assert!(has(&e, "payload.country", UNKNOWN), "{t}: {e:?}");
    }
}

#[test]
fn an_unknown_country_code_is_rejected_with_the_support_message() {
    for c in ["ZZ", "USA", "", "U"] {
        assert_eq!(
            single(task("CHATGPT", json!({"prompt": "a", "country": c}))),
            ("payload.country".into(), UNKNOWN.into())
        );
    }
}

#[test]
fn a_non_string_country_is_a_type_error() {
    assert_eq!(
        single(task("CHATGPT", json!({"prompt": "a", "country": 1}))),
        (
            "payload.country".into(),
            "Invalid input: expected string, received number".into()
        )
    );
}

#[test]
fn a_country_blocked_for_the_engine_is_not_available() {
    for (t, c) in [
        ("CHATGPT", "RU"),
        ("CHATGPT", "CN"),
        ("CHATGPT", "HK"),
        ("CHATGPT", "IR"),
        ("CHATGPT", "MO"),
        ("CHATGPT", "VE"),
        ("PERPLEXITY", "CN"),
        ("COPILOT", "SY"),
        ("COPILOT", "BY"),
        ("GEMINI", "BY"),
        ("GROK", "HK"),
    ] {
        assert_eq!(
            single(task(t, json!({"prompt": "a", "country": c}))),
            ("payload.country".into(), BLOCKED.into()),
            "{t} {c}"
        );
    }
}

#[test]
fn countries_blocked_elsewhere_are_allowed_where_not_blocked() {
    assert!(parse(task("CHATGPT", json!({"prompt": "a", "country": "CZ"}))).is_ok());
    assert!(parse(task("PERPLEXITY", json!({"prompt": "a", "country": "RU"}))).is_ok());
    assert!(parse(task("GEMINI", json!({"prompt": "a", "country": "HK"}))).is_ok());
    assert!(parse(task("CHATGPT", json!({"prompt": "a", "country": "XK"}))).is_ok());
    assert!(parse(task("GOOGLE", json!({"query": "a", "gl": "cn"}))).is_ok());
    assert!(parse(task("GOOGLE_NEWS", json!({"query": "a", "country": "KP"}))).is_ok());
}

// ---- include / engine-specific fields ----------------------------------------------------

#[test]
fn unknown_payload_fields_are_rejected_for_every_engine() {
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
        let mut p = p;
        p["model"] = json!("gpt-4");
        assert_eq!(
            single(task(t, p)),
            ("payload.model".into(), "Unrecognized key \"model\"".into()),
            "{t}"
        );
    }
}

#[test]
fn unknown_include_flags_are_rejected_for_every_engine() {
    for (t, p) in [
        ("CHATGPT", json!({"prompt": "a", "country": "US"})),
        ("GEMINI", json!({"prompt": "a", "country": "US"})),
        ("AIMODE", json!({"prompt": "a", "gl": "us"})),
        ("GOOGLE", json!({"query": "a", "gl": "us"})),
        ("GOOGLE_NEWS", json!({"query": "a", "gl": "us"})),
    ] {
        let mut p = p;
        p["include"] = json!({"html": true, "screenshot": true});
        assert_eq!(
            single(task(t, p)),
            (
                "payload.include.screenshot".into(),
                "Unrecognized key \"screenshot\"".into()
            ),
            "{t}"
        );
    }
}

#[test]
fn engine_specific_flags_are_unknown_on_other_engines() {
    let e = errs(task(
        "GEMINI",
        json!({"prompt": "a", "country": "US", "include": {"ads": true}, "legacy": true}),
    ));
    assert!(has(&e, "payload.include.ads", "Unrecognized key \"ads\""));
    assert!(has(&e, "payload.legacy", "Unrecognized key \"legacy\""));
    let e = errs(task(
        "GOOGLE_NEWS",
        json!({"query": "a", "gl": "us", "include": {"googleGoto": true}, "location": "Paris"}),
    ));
    assert!(has(
        &e,
        "payload.include.googleGoto",
        "Unrecognized key \"googleGoto\""
    ));
    assert!(has(&e, "payload.location", "Unrecognized key \"location\""));
    let e = errs(task(
        "CHATGPT",
        json!({"prompt": "a", "country": "US", "gl": "us"}),
    ));
    assert_eq!(fields(&e), ["payload.gl"]);
}

#[test]
fn include_flags_must_be_booleans() {
    for v in [json!("true"), json!(1), json!(null), json!({})] {
        let e = errs(task(
            "CHATGPT",
            json!({"prompt": "a", "country": "US", "include": {"html": v}}),
        ));
        assert_eq!(fields(&e), ["payload.include.html"]);
        assert!(
            e[0].message
                .starts_with("Invalid input: expected boolean, received")
        );
    }
}

#[test]
fn include_must_be_an_object() {
    assert_eq!(
        single(task(
            "GEMINI",
            json!({"prompt": "a", "country": "US", "include": ["html"]})
        )),
        (
            "payload.include".into(),
            "Invalid input: expected object, received array".into()
        )
    );
}

#[test]
fn chatgpt_legacy_and_disable_web_search_are_booleans() {
    let r = ok(task(
        "CHATGPT",
        json!({"prompt": "a", "country": "US", "legacy": true, "disableWebSearch": false}),
    ));
    assert_eq!(r.payload["legacy"], true);
    assert_eq!(r.payload["disableWebSearch"], false);
    let e = errs(task(
        "CHATGPT",
        json!({"prompt": "a", "country": "US", "legacy": "yes", "disableWebSearch": 0}),
    ));
    assert_eq!(fields(&e), ["payload.legacy", "payload.disableWebSearch"]);
}

#[test]
fn all_chatgpt_include_flags_are_accepted() {
    let r = ok(task(
        "CHATGPT",
        json!({"prompt": "a", "country": "US", "include": {
            "html": true, "markdown": true, "rawResponse": false,
            "searchQueries": false, "ads": false, "shopping": false}}),
    ));
    assert_eq!(r.payload["include"]["html"], true);
    assert_eq!(r.credits_to_charge, 5);
}

// ---- state -------------------------------------------------------------------------------

#[test]
fn a_us_state_costs_two_more_credits() {
    let r = ok(task(
        "CHATGPT",
        json!({"prompt": "a", "country": "US", "state": "CA"}),
    ));
    assert_eq!(r.credits_to_charge, 7);
    assert_eq!(r.payload["state"], "CA");
    assert_eq!(
        price(
            "GEMINI",
            json!({"prompt": "a", "country": "US", "state": "DC"})
        ),
        6
    );
    assert_eq!(
        price(
            "CHATGPT",
            json!({"prompt": "a", "country": "US", "state": "NY", "include": {"ads": true}})
        ),
        9
    );
}

#[test]
fn a_state_code_is_matched_case_insensitively_and_stored_uppercase() {
    let r = ok(task(
        "PERPLEXITY",
        json!({"prompt": "a", "country": "US", "state": "tx"}),
    ));
    assert_eq!(r.payload["state"], "TX");
}

#[test]
fn a_state_with_a_non_us_country_is_rejected() {
    assert_eq!(
        single(task(
            "CHATGPT",
            json!({"prompt": "a", "country": "GB", "state": "CA"})
        )),
        (
            "payload.state".into(),
            "`state` is not supported for country GB.".into()
        )
    );
}

#[test]
fn a_state_without_a_country_names_none() {
    let e = errs(task("CHATGPT", json!({"prompt": "a", "state": "CA"})));
    assert!(has(
        &e,
        "payload.state",
        "`state` is not supported for country (none)."
    ));
    assert!(has(&e, "payload.country", UNDEFINED_STRING));
}

#[test]
fn an_unknown_us_state_is_rejected() {
    for s in ["XX", "", "PR", "California"] {
        assert_eq!(
            single(task(
                "GROK",
                json!({"prompt": "a", "country": "US", "state": s})
            )),
            (
                "payload.state".into(),
                "Invalid `state` for US. Use a code from `GET /v1/states?country=US`.".into()
            ),
            "{s}"
        );
    }
}

#[test]
fn a_non_string_state_is_a_type_error() {
    assert_eq!(
        single(task(
            "COPILOT",
            json!({"prompt": "a", "country": "US", "state": null})
        )),
        (
            "payload.state".into(),
            "Invalid input: expected string, received null".into()
        )
    );
}

#[test]
fn state_is_not_a_field_of_the_google_family() {
    for (t, p) in [
        ("AIMODE", json!({"prompt": "a", "gl": "us", "state": "CA"})),
        ("GOOGLE", json!({"query": "a", "gl": "us", "state": "CA"})),
        (
            "GOOGLE_NEWS",
            json!({"query": "a", "gl": "us", "state": "CA"}),
        ),
    ] {
        assert_eq!(
            single(task(t, p)),
            ("payload.state".into(), "Unrecognized key \"state\"".into())
        );
    }
}
