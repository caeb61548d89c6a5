//! The Google family's shared fields: `gl`/`country`/`hl`, `location`/`uule`/`device`, `pages`.

use super::test_support::*;

// ---- gl / country / hl (Google family) ---------------------------------------------------

#[test]
fn gl_is_case_insensitive_and_normalised() {
    let r = ok(task(
        "AIMODE",
        json!({"prompt": "a", "gl": " Fr ", "hl": " FR-ca "}),
    ));
    assert_eq!(r.payload["gl"], "fr");
    assert_eq!(r.payload["country"], "FR");
    assert_eq!(r.payload["hl"], "fr-ca");
    assert_eq!(r.payload["device"], "desktop");
}

#[test]
fn country_is_a_deprecated_alias_of_gl() {
    let r = ok(task("GOOGLE_NEWS", json!({"query": "a", "country": "DE"})));
    assert_eq!(r.payload["gl"], "de");
    assert_eq!(r.payload["country"], "DE");
}

#[test]
fn the_google_family_needs_gl_or_country() {
    for (t, p) in [
        ("AIMODE", json!({"prompt": "a"})),
        ("GOOGLE", json!({"query": "a"})),
        ("GOOGLE_NEWS", json!({"query": "a"})),
    ] {
        assert_eq!(
            single(task(t, p)),
            (
                "payload.gl".into(),
                "Provide gl (or country, which is deprecated)".into()
            ),
            "{t}"
        );
    }
}

#[test]
fn different_country_and_gl_are_rejected() {
    assert_eq!(
        single(task("AIMODE", json!({"prompt": "a", "country": "US", "gl": "gb"}))),
        (
            "payload.gl".into(),
            "Cannot set both country and gl to different values (country: \"US\", gl: \"gb\"); country is deprecated — send gl alone".into()
        )
    );
}

#[test]
fn equal_country_and_gl_are_accepted() {
    let r = ok(task(
        "GOOGLE",
        json!({"query": "a", "country": "US", "gl": "us"}),
    ));
    assert_eq!(r.payload["gl"], "us");
}

#[test]
fn aimode_uses_its_own_country_list() {
    for gl in ["cn", "CU", "ir", "kp"] {
        assert_eq!(
            single(task("AIMODE", json!({"prompt": "a", "gl": gl}))),
            ("payload.gl".into(), BLOCKED.into()),
            "{gl}"
        );
    }
    assert_eq!(
        single(task("AIMODE", json!({"prompt": "a", "country": "CN"}))),
        ("payload.country".into(), BLOCKED.into())
    );
    assert_eq!(
        single(task("AIMODE", json!({"prompt": "a", "gl": "zz"}))),
        ("payload.gl".into(), UNKNOWN.into())
    );
    assert!(parse(task("AIMODE", json!({"prompt": "a", "gl": "ru"}))).is_ok());
}

#[test]
fn gl_and_hl_must_be_strings() {
    let e = errs(task("GOOGLE", json!({"query": "a", "gl": 1, "hl": false})));
    assert!(has(
        &e,
        "payload.gl",
        "Invalid input: expected string, received number"
    ));
    assert!(has(
        &e,
        "payload.hl",
        "Invalid input: expected string, received boolean"
    ));
    assert_eq!(e.len(), 2, "{e:?}");
}

#[test]
fn an_empty_or_overlong_hl_is_rejected() {
    assert_eq!(
        single(task(
            "GOOGLE",
            json!({"query": "a", "gl": "us", "hl": "  "})
        )),
        (
            "payload.hl".into(),
            "Too small: expected string to have >=1 characters".into()
        )
    );
    assert!(
        parse(task(
            "GOOGLE",
            json!({"query": "a", "gl": "us", "hl": "x".repeat(35)})
        ))
        .is_ok()
    );
    assert_eq!(
        single(task(
            "GOOGLE",
            json!({"query": "a", "gl": "us", "hl": "x".repeat(36)})
        )),
        (
            "payload.hl".into(),
            "Too big: expected string to have <=35 characters".into()
        )
    );
}

#[test]
fn hl_is_not_a_field_of_the_llm_engines() {
    assert_eq!(
        single(task(
            "CHATGPT",
            json!({"prompt": "a", "country": "US", "hl": "en"})
        ))
        .0,
        "payload.hl"
    );
}

// ---- location / uule / device ------------------------------------------------------------

#[test]
fn location_and_uule_together_are_rejected_at_uule() {
    for t in ["AIMODE", "GOOGLE"] {
        let text = if t == "AIMODE" { "prompt" } else { "query" };
        assert_eq!(
            single(task(
                t,
                json!({ text: "a", "gl": "us", "location": "Austin,Texas,United States", "uule": "w+CAIQICI" })
            )),
            (
                "payload.uule".into(),
                "Cannot set both location and uule; provide only one".into()
            )
        );
    }
}

#[test]
fn location_or_uule_alone_is_accepted_and_trimmed() {
    let r = ok(task(
        "AIMODE",
        json!({"prompt": "a", "gl": "us", "location": " Austin,Texas,United States "}),
    ));
    assert_eq!(r.payload["location"], "Austin,Texas,United States");
    let r = ok(task(
        "GOOGLE",
        json!({"query": "a", "gl": "us", "uule": "w+CAIQICI"}),
    ));
    assert_eq!(r.payload["uule"], "w+CAIQICI");
}

#[test]
fn an_empty_location_or_a_non_string_uule_is_rejected() {
    let e = errs(task(
        "GOOGLE",
        json!({"query": "a", "gl": "us", "location": " ", "uule": 3}),
    ));
    assert!(has(
        &e,
        "payload.location",
        "Too small: expected string to have >=1 characters"
    ));
    assert!(has(
        &e,
        "payload.uule",
        "Invalid input: expected string, received number"
    ));
    assert_eq!(e.len(), 2);
}

#[test]
fn device_values_depend_on_the_engine() {
    for d in ["desktop", "mobile"] {
        assert_eq!(
            ok(task(
                "AIMODE",
                json!({"prompt": "a", "gl": "us", "device": d})
            ))
            .payload["device"],
            d
        );
    }
    assert_eq!(
        single(task(
            "AIMODE",
            json!({"prompt": "a", "gl": "us", "device": "ios"})
        )),
        (
            "payload.device".into(),
            "Invalid option: expected one of \"desktop\"|\"mobile\"".into()
        )
    );
    for d in ["desktop", "mobile", "ios", "android"] {
        assert!(
            parse(task(
                "GOOGLE",
                json!({"query": "a", "gl": "us", "device": d})
            ))
            .is_ok()
        );
        assert!(
            parse(task(
                "GOOGLE_NEWS",
                json!({"query": "a", "gl": "us", "device": d})
            ))
            .is_ok()
        );
    }
    for d in [json!("tablet"), json!("DESKTOP"), json!(1), json!(null)] {
        assert_eq!(
            single(task(
                "GOOGLE",
                json!({"query": "a", "gl": "us", "device": d})
            )),
            (
                "payload.device".into(),
                "Invalid option: expected one of \"desktop\"|\"mobile\"|\"ios\"|\"android\"".into()
            )
        );
    }
    assert_eq!(
        single(task(
            "CHATGPT",
            json!({"prompt": "a", "country": "US", "device": "mobile"})
        ))
        .0,
        "payload.device"
    );
}

#[test]
fn google_goto_is_accepted_and_ignored() {
    let r = ok(task(
        "AIMODE",
        json!({"prompt": "a", "gl": "us", "include": {"googleGoto": true, "html": true}}),
    ));
    assert_eq!(r.payload["include"], json!({"html": true}));
    let r = ok(task(
        "GOOGLE",
        json!({"query": "a", "gl": "us", "include": {"googleGoto": false}}),
    ));
    assert_eq!(r.payload["include"], json!({}));
    assert_eq!(
        single(task(
            "GOOGLE",
            json!({"query": "a", "gl": "us", "include": {"googleGoto": "yes"}})
        ))
        .0,
        "payload.include.googleGoto"
    );
}

// ---- pages -------------------------------------------------------------------------------

#[test]
fn pages_must_be_an_integer_from_1_to_10() {
    for (p, message) in [
        (json!(0), "Too small: expected number to be >=1"),
        (json!(11), "Too big: expected number to be <=10"),
        (json!(1.5), "Invalid input: expected int, received number"),
        (
            json!("2"),
            "Invalid input: expected number, received string",
        ),
        (json!(null), "Invalid input: expected number, received null"),
    ] {
        for t in ["GOOGLE", "GOOGLE_NEWS"] {
            assert_eq!(
                single(task(t, json!({"query": "a", "gl": "us", "pages": p}))),
                ("payload.pages".into(), message.into()),
                "{t} {p}"
            );
        }
    }
}

#[test]
fn pages_defaults_to_one() {
    let r = ok(task("GOOGLE_NEWS", json!({"query": "a", "gl": "us"})));
    assert_eq!(r.payload["pages"], 1);
    assert_eq!(r.payload["device"], "desktop");
    assert_eq!(r.credits_to_charge, 3);
}

#[test]
fn pages_is_not_a_field_of_ai_mode() {
    assert_eq!(
        single(task(
            "AIMODE",
            json!({"prompt": "a", "gl": "us", "pages": 2})
        ))
        .0,
        "payload.pages"
    );
}

// ---- NUL characters (every family, every text field) -------------------------------------

const NUL: &str = "Must not contain NUL characters (U+0000)";

#[test]
fn a_nul_in_any_text_field_is_rejected_at_its_path() {
    for (t, p, field) in [
        (
            "CHATGPT",
            json!({"prompt": "a\u{0}b", "country": "US"}),
            "payload.prompt",
        ),
        (
            "GOOGLE",
            json!({"query": "\u{0}", "gl": "us"}),
            "payload.query",
        ),
        (
            "GOOGLE",
            json!({"query": "q", "gl": "us", "hl": "en\u{0}"}),
            "payload.hl",
        ),
        (
            "GOOGLE",
            json!({"query": "q", "gl": "us", "location": "Berlin\u{0}"}),
            "payload.location",
        ),
        (
            "AIMODE",
            json!({"prompt": "a", "gl": "us", "uule": "w+\u{0}"}),
            "payload.uule",
        ),
        (
            "GOOGLE",
            json!({"url": "https://www.google.com/search?q=a\u{0}&gl=us"}),
            "payload.url",
        ),
        (
            "GOOGLE_NEWS",
            json!({"query": "a\u{0}", "gl": "us"}),
            "payload.query",
        ),
    ] {
        assert_eq!(
            single(task(t, p)),
            (field.to_owned(), NUL.to_owned()),
            "{t}"
        );
    }
}

#[test]
fn a_nul_in_the_idempotency_key_or_the_webhook_url_is_rejected() {
    let mut body = task("CHATGPT", json!({"prompt": "a", "country": "US"}));
    body["idempotencyKey"] = json!("k\u{0}");
    assert_eq!(single(body), ("idempotencyKey".to_owned(), NUL.to_owned()));
    let mut body = task("CHATGPT", json!({"prompt": "a", "country": "US"}));
    body["webhook"] = json!({"url": "https://example.com/\u{0}"});
    assert_eq!(single(body), ("webhook.url".to_owned(), NUL.to_owned()));
}

#[test]
fn a_sync_body_with_a_nul_is_rejected_without_a_prefix() {
    let e = validate(
        TaskType::Chatgpt,
        &json!({"prompt": "\u{0}", "country": "US"}),
        "",
    )
    .expect_err("refused");
    assert_eq!(fields(&e), ["prompt"]);
    assert_eq!(e[0].message, NUL);
}

#[test]
fn a_field_refused_for_another_reason_keeps_its_own_message() {
    // An unknown key and a wrong option are reported as such, not as a NUL.
    let e = errs(task(
        "GOOGLE",
        json!({"query": "q", "gl": "us", "device": "desk\u{0}", "x": "\u{0}"}),
    ));
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(e.iter().all(|x| x.message != NUL), "{e:?}");
}
