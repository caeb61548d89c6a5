//! Prices (reference §5.9).

use super::test_support::*;

// ---- prices ------------------------------------------------------------------------------

#[test]
fn base_prices_match_the_credit_table() {
    let llm = json!({"prompt": "a", "country": "US"});
    assert_eq!(price("CHATGPT", llm.clone()), 5);
    assert_eq!(price("GEMINI", llm.clone()), 4);
    assert_eq!(price("GROK", llm.clone()), 4);
    assert_eq!(price("COPILOT", llm.clone()), 5);
    assert_eq!(price("PERPLEXITY", llm), 4);
    assert_eq!(price("AIMODE", json!({"prompt": "a", "gl": "us"})), 4);
    assert_eq!(price("GOOGLE", json!({"query": "a", "gl": "us"})), 3);
    assert_eq!(price("GOOGLE_NEWS", json!({"query": "a", "gl": "us"})), 3);
}

#[test]
fn chatgpt_with_include_ads_costs_7() {
    assert_eq!(
        price(
            "CHATGPT",
            json!({"prompt": "a", "country": "US", "include": {"ads": true}})
        ),
        7
    );
}

#[test]
fn chatgpt_full_response_add_ons_cost_one_flat_two() {
    for flag in ["rawResponse", "searchQueries", "ads", "shopping"] {
        assert_eq!(
            price(
                "CHATGPT",
                json!({"prompt": "a", "country": "US", "include": { flag: true }})
            ),
            7,
            "{flag}"
        );
    }
    assert_eq!(
        price(
            "CHATGPT",
            json!({"prompt": "a", "country": "US", "include": {
                "rawResponse": true, "searchQueries": true, "ads": true, "shopping": true}})
        ),
        7
    );
    assert_eq!(
        price(
            "CHATGPT",
            json!({"prompt": "a", "country": "US", "include": {"html": true, "markdown": true, "ads": false}})
        ),
        5
    );
}

#[test]
fn html_markdown_and_raw_response_are_free_for_the_other_llms() {
    for (t, base) in [
        ("GEMINI", 4),
        ("GROK", 4),
        ("COPILOT", 5),
        ("PERPLEXITY", 4),
    ] {
        assert_eq!(
            price(
                t,
                json!({"prompt": "a", "country": "US", "include": {
                    "html": true, "markdown": true, "rawResponse": true}})
            ),
            base
        );
    }
}

#[test]
fn ai_mode_expand_products_does_not_change_the_upfront_price() {
    assert_eq!(
        price(
            "AIMODE",
            json!({"prompt": "a", "gl": "us", "include": {"expandProducts": true}})
        ),
        4
    );
}

#[test]
fn google_3_pages_with_aioverview_costs_9() {
    assert_eq!(
        price(
            "GOOGLE",
            json!({"query": "a", "gl": "us", "pages": 3, "include": {"aioverview": true}})
        ),
        9
    );
}

#[test]
fn google_10_pages_with_aioverview_costs_23() {
    assert_eq!(
        price(
            "GOOGLE",
            json!({"query": "a", "gl": "us", "pages": 10, "include": {"aioverview": {"markdown": true}}})
        ),
        23
    );
}

#[test]
fn google_aioverview_and_paa_aioverview_cost_one_flat_two() {
    let p = |include: Value| {
        price(
            "GOOGLE",
            json!({"query": "a", "gl": "us", "include": include}),
        )
    };
    assert_eq!(p(json!({"aioverview": true})), 5);
    assert_eq!(p(json!({"paaAioverview": true})), 5);
    assert_eq!(p(json!({"aioverview": true, "paaAioverview": true})), 5);
    assert_eq!(p(json!({"aioverview": {}})), 5);
    assert_eq!(p(json!({"aioverview": false, "paaAioverview": false})), 3);
    assert_eq!(p(json!({"html": true})), 3);
}

#[test]
fn google_news_costs_two_per_extra_page() {
    for pages in 1..=10u32 {
        assert_eq!(
            price(
                "GOOGLE_NEWS",
                json!({"query": "a", "gl": "us", "pages": pages})
            ),
            3 + 2 * (pages - 1)
        );
    }
}

// ---- add-ons billed after the run --------------------------------------------------------

/// The most each payload may add after the run, from the typed payload, its stored JSON and
/// its stored text (the three must agree: the stores reserve from the stored forms).
fn max_add_ons(task_type: &str, payload: Value) -> (u32, i64, i64) {
    let t = TaskType::parse(task_type).expect("task type");
    let (typed, _) = validate_payload(t, &payload, "").expect("valid");
    let stored = typed.clone().into_stored();
    let text = stored.to_string();
    (
        typed.max_add_ons(),
        super::max_add_ons_stored(t, &stored),
        super::max_add_ons_text(t, Some(&text)),
    )
}

#[test]
fn ai_mode_expand_products_may_add_at_most_six_credits_and_nothing_else_adds_any() {
    let six = i64::from(super::MAX_PRODUCT_CLUSTERS);
    assert_eq!(super::MAX_PRODUCT_CLUSTERS, 6);
    assert_eq!(
        max_add_ons(
            "AIMODE",
            json!({"prompt": "a", "gl": "us", "include": {"expandProducts": true}})
        ),
        (6, six, six)
    );
    for payload in [
        json!({"prompt": "a", "gl": "us"}),
        json!({"prompt": "a", "gl": "us", "include": {"expandProducts": false}}),
        json!({"prompt": "a", "gl": "us", "include": {"html": true}}),
    ] {
        assert_eq!(max_add_ons("AIMODE", payload), (0, 0, 0));
    }
    let chat = json!({"prompt": "a", "country": "US", "include": {"rawResponse": true}});
    assert_eq!(max_add_ons("CHATGPT", chat), (0, 0, 0));
    let google = json!({"query": "a", "gl": "us", "include": {"aioverview": true}});
    assert_eq!(max_add_ons("GOOGLE", google), (0, 0, 0));
    // A row whose text cannot be read, or that was not read, reserves nothing more.
    assert_eq!(super::max_add_ons_text(TaskType::Aimode, Some("{")), 0);
    assert_eq!(super::max_add_ons_text(TaskType::Aimode, None), 0);
}
