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
