//! The whole result, byte for byte, of every fixture and of a set of malformed or unusual
//! answers, pinned in `fixtures/golden.txt` (one case per line: `name<TAB>output`). The file was
//! written by the `Value`-tree reader before the typed one replaced it; any change of a result,
//! an error kind or an error message shows here. To rewrite it after a deliberate change:
//! `CLORO_WRITE_GOLDEN=1 cargo test --lib engines::responses::golden`.

use serde_json::json;

use super::Chat;
use super::normalize::{self, Shape};
use crate::domain::request::Payload;
use crate::domain::types::TaskType;
use crate::pages::PageLinks;

const KEY: &str = "sk-test-SECRET-0123456789";
const GOLDEN: &str = "src/engines/responses/fixtures/golden.txt";

/// What `ResponsesEngine::execute` makes of a 200 answer's body (the golden file was written
/// with today's code: `read_reply`, then `normalize::parse` on the `Value`, then `shape`).
fn engine_path(body: &[u8], shape: Shape, chat: &Chat<'_>) -> String {
    let out = normalize::answer(body, shape, chat, &PageLinks::fixed(), KEY);
    match out {
        Ok((result, usage)) => format!(
            "ok {usage:?} {}",
            serde_json::to_string(&result).expect("a result serialises")
        ),
        Err(e) => format!("err {e:?}"),
    }
}

fn bodies() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = [
        ("openai_answer", include_str!("fixtures/openai_answer.json")),
        (
            "openai_no_citations",
            include_str!("fixtures/openai_no_citations.json"),
        ),
        ("xai_answer", include_str!("fixtures/xai_answer.json")),
        ("xai_empty", include_str!("fixtures/xai_empty.json")),
        (
            "perplexity_answer",
            include_str!("fixtures/perplexity_answer.json"),
        ),
        (
            "perplexity_failed",
            include_str!("fixtures/perplexity_failed.json"),
        ),
        ("azure_answer", include_str!("fixtures/azure_answer.json")),
    ]
    .into_iter()
    .map(|(n, b)| (n.to_owned(), b.to_owned()))
    .collect();
    out.push(("typical".into(), super::tests::typical_answer()));
    let nested = format!("{{\"x\":{}1{}}}", "[".repeat(200), "]".repeat(200));
    let odd: &[(&str, &str)] = &[
        ("empty_body", ""),
        ("not_json", "not json"),
        ("array", "[]"),
        ("null", "null"),
        ("string", "\"str\""),
        ("empty_object", "{}"),
        ("trailing", r#"{"output":[]} x"#),
        (
            "failed",
            r#"{"status":"failed","error":{"message":"boom sk-test-SECRET-0123456789"},"usage":{"input_tokens":3}}"#,
        ),
        (
            "cancelled_string_error",
            r#"{"status":"cancelled","error":"why"}"#,
        ),
        (
            "in_progress",
            r#"{"status":"in_progress","output":[{"type":"search_results"}]}"#,
        ),
        (
            "failed_error_null",
            r#"{"status":"failed","error":null,"usage":[]}"#,
        ),
        ("status_number", r#"{"status":5,"output":"x","model":"  "}"#),
        (
            "odd_items",
            r#"{"status":"incomplete","output":[1,"a",null,{"type":7},{"type":"message","content":{"x":1}},{"type":"message","content":[{"type":"output_text","text":5,"annotations":"no"},{"type":"output_text","text":"second"},"x",{"type":"refusal","refusal":"no"}]}]}"#,
        ),
        (
            "odd_annotations",
            r#"{"output":[{"type":"message","content":[{"type":"output_text","text":"héllo wörld ☕ x","annotations":[{"type":"url_citation","url":" https://a.example/x?utm_source=openai ","start_index":"1","end_index":3},{"type":"url_citation","url_citation":{"url":"https://b.example","title":"B","start_index":0,"end_index":5}},{"type":"url_citation","url_citation":"str","url":"https://c.example","start_index":-1,"end_index":2.0},{"type":"file_citation","url":"https://d.example"},{"type":"url_citation","url":"   "},{"type":"url_citation","url":"https://e.example","title":"  E  ","start_index":4,"end_index":2},{"type":"url_citation","url":"https://f.example","start_index":12,"end_index":14},{"type":"url_citation","url":"https://g.example","start_index":0,"end_index":99},null,7]}]}]}"#,
        ),
        (
            "duplicate_keys",
            r#"{"model":"a","model":"b","output":[{"type":"message","type":"message","content":[{"type":"output_text","text":"x","text":"y"}]}]}"#,
        ),
        (
            "escapes",
            r#"{"model":"m\u00e9\n","output":[{"type":"message","content":[{"type":"output_text","text":"a\"b\\c\u2603\ud83d\ude00 end","annotations":[{"type":"url_citation","url":"https:\/\/e.example\/p","title":"T\u00e9","start_index":0,"end_index":3}]}]}]}"#,
        ),
        (
            "search_calls",
            r#"{"output":[{"type":"web_search_call","action":"str"},{"type":"web_search_call","action":null},{"type":"web_search_call","action":{"type":"open_page","url":"https://o.example"}},{"type":"web_search_call","action":{"query":" q1 ","sources":"no"}},{"type":"web_search_call","action":{"type":"search","queries":[1,null," q2 ","q1",""],"query":"q3","sources":[{"url":"https://s.example","title":"S"},{"url":5},"x",{"url":" https://t.example?utm_source=chatgpt.com#f ","title":null}]}},{"type":"web_search_call","arguments":"{\"query\":\"xq\",\"queries\":[\"xq\",\"xq2\",3]}"},{"type":"web_search_call","arguments":"not json"},{"type":"web_search_call","arguments":"[1]"},{"type":"web_search_call","arguments":7},{"type":"search_results","results":[{"url":"https://s.example","title":"S2","snippet":"snip"},{"url":"https://u.example","snippet":"  "},3],"queries":["pq","q1",{"a":1}]},{"type":"search_results","results":{"url":"x"},"queries":"q"},{"type":"message","content":[{"type":"output_text","text":"cites s","annotations":[{"type":"url_citation","url":"https://s.example?utm_source=openai","start_index":0,"end_index":7}]}]}],"usage":{"input_tokens":-1,"output_tokens":1.5}}"#,
        ),
        ("usage_array", r#"{"usage":[1],"output":[]}"#),
        (
            "output_object",
            r#"{"output":{"a":1},"usage":{"input_tokens":2,"output_tokens":18446744073709551616}}"#,
        ),
        ("usage_only", r#"{"usage":{}}"#),
        (
            "secret_inside",
            r#"{"model":"gpt","output":[{"type":"message","content":[{"type":"output_text","text":"key sk-test-SECRET-0123456789 here"}]}],"sk-test-SECRET-0123456789":1}"#,
        ),
        (
            "secret_in_key_only",
            r#"{"output":[],"meta":{"sk-test-SECRET-0123456789\"":true}}"#,
        ),
        (
            "markdown_links",
            r#"{"output":[{"type":"message","content":[{"type":"output_text","text":"See [A](https://a.example?utm_source=openai) and B.","annotations":[{"type":"url_citation","url":"https://a.example?utm_source=openai","start_index":4,"end_index":44},{"type":"url_citation","url":"https://b.example","start_index":49,"end_index":50},{"type":"url_citation","url":"https://b.example","start_index":49,"end_index":50},{"type":"url_citation","url":"https://c.example"},{"type":"url_citation","url":"https://c.example"}]},{"type":"output_text","text":"","annotations":[]},{"type":"output_text","text":"Two ☕","annotations":[{"type":"url_citation","url":"https://[::1]:8080/p","start_index":4,"end_index":5},{"type":"url_citation","url":"mailto:x","start_index":0,"end_index":3}]}]}]}"#,
        ),
    ];
    out.extend(odd.iter().map(|(n, b)| ((*n).to_owned(), (*b).to_owned())));
    out.push(("deep_nesting".into(), nested));
    out
}

fn payloads(task_type: TaskType) -> Vec<(&'static str, Payload)> {
    let p = |include: serde_json::Value| {
        Payload::from_stored(
            task_type,
            &json!({"prompt": "q", "country": "FR", "include": include}),
        )
        .expect("a stored payload reads back")
    };
    let full = if task_type == TaskType::Chatgpt {
        json!({"markdown": true, "html": true, "rawResponse": true, "searchQueries": true,
               "shopping": true, "ads": true})
    } else {
        json!({"markdown": true, "html": true, "rawResponse": true})
    };
    vec![
        ("none", p(json!({}))),
        ("markdown", p(json!({"markdown": true}))),
        ("full", p(full)),
    ]
}

fn render() -> String {
    let mut out = String::new();
    for (name, body) in bodies() {
        for (shape, task_type) in [
            (Shape::Chatgpt, TaskType::Chatgpt),
            (Shape::Grok, TaskType::Grok),
            (Shape::Copilot, TaskType::Copilot),
            (Shape::Perplexity, TaskType::Perplexity),
        ] {
            for (flags, p) in payloads(task_type) {
                let (_, chat) = Chat::of(&p).expect("a chat payload");
                let got = engine_path(body.as_bytes(), shape, &chat);
                out.push_str(&format!("{name}/{}/{flags}\t{got}\n", task_type.as_str()));
            }
        }
    }
    out
}

#[test]
fn every_result_is_the_pinned_one_byte_for_byte() {
    let got = render();
    if std::env::var_os("CLORO_WRITE_GOLDEN").is_some() {
        std::fs::write(GOLDEN, &got).expect("write the golden file");
        return;
    }
    let want = std::fs::read_to_string(GOLDEN).expect("the golden file");
    for (g, w) in got.lines().zip(want.lines()) {
        assert_eq!(g, w, "a result differs from the pinned one");
    }
    assert_eq!(got.lines().count(), want.lines().count());
}
