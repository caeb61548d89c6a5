//! The whole result, byte for byte, of every fixture and of a set of malformed or unusual
//! answers, pinned in `fixtures/golden.txt` (one case per line: `name<TAB>output`). The file was
//! written by the reader that went through a `Value` tree before the borrowing one replaced
//! it; any change of a result, an error kind or an error message shows here. To rewrite it
//! after a deliberate change: `CLORO_WRITE_GOLDEN=1 cargo test --lib engines::gemini::golden`.

use super::normalize::{self, Options};
use crate::pages::PageLinks;

const KEY: &str = "AIzaTest-SECRET-key-0123456789";
const GOLDEN: &str = "src/engines/gemini/fixtures/golden.txt";

fn bodies() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = [
        ("grounded", include_str!("fixtures/grounded.json")),
        ("no_citations", include_str!("fixtures/no_citations.json")),
        ("empty", include_str!("fixtures/empty.json")),
        (
            "blocked_prompt",
            include_str!("fixtures/blocked_prompt.json"),
        ),
        (
            "safety_candidate",
            include_str!("fixtures/safety_candidate.json"),
        ),
        ("multibyte", include_str!("fixtures/multibyte.json")),
        ("error_429", include_str!("fixtures/error_429.json")),
    ]
    .into_iter()
    .map(|(n, b)| (n.to_owned(), b.to_owned()))
    .collect();
    out.push(("typical".into(), super::cpu_tests::typical_answer()));
    let nested = format!(
        "{{\"candidates\":[{{\"content\":{{\"parts\":[{{\"text\":\"a\"}}]}}}}],\"x\":{}1{}}}",
        "[".repeat(200),
        "]".repeat(200)
    );
    let odd: &[(&str, &str)] = &[
        ("empty_body", ""),
        ("not_json", "nope"),
        ("array", "[]"),
        ("array_of_one", "[[]]"),
        ("null", "null"),
        ("empty_object", "{}"),
        ("trailing", r#"{"candidates":[]} x"#),
        ("no_candidate", r#"{"candidates":[]}"#),
        (
            "blocked",
            r#"{"candidates":[],"promptFeedback":{"blockReason":"SAFETY"}}"#,
        ),
        ("candidates_string", r#"{"candidates":"x"}"#),
        (
            "candidates_null",
            r#"{"candidates":null,"promptFeedback":null}"#,
        ),
        (
            "text_number",
            r#"{"candidates":[{"content":{"parts":[{"text":5}]}}]}"#,
        ),
        (
            "part_null",
            r#"{"candidates":[{"content":{"parts":[null]}}]}"#,
        ),
        (
            "usage_odd",
            r#"{"candidates":[{"content":{"parts":[{"text":"a"}]}}],"usageMetadata":{"promptTokenCount":"5","candidatesTokenCount":3,"thoughtsTokenCount":-2,"toolUsePromptTokenCount":1.0}}"#,
        ),
        (
            "usage_array",
            r#"{"candidates":[{"content":{"parts":[{"text":"a"}]}}],"usageMetadata":[1,2]}"#,
        ),
        (
            "usage_full",
            r#"{"candidates":[{"content":{"parts":[{"text":"a"}]},"groundingMetadata":{"webSearchQueries":[]}}],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":3,"thoughtsTokenCount":2,"toolUsePromptTokenCount":1,"promptTokenCount":6}}"#,
        ),
        (
            "duplicate_keys",
            r#"{"modelVersion":"a","modelVersion":"b","candidates":[{"content":{"parts":[{"text":"x"}]}}]}"#,
        ),
        (
            "queries_null",
            r#"{"candidates":[{"content":{"parts":[{"text":"x"}]},"groundingMetadata":{"webSearchQueries":null}}]}"#,
        ),
        (
            "queries_absent",
            r#"{"candidates":[{"content":{"parts":[{"text":"x"}]},"groundingMetadata":{"groundingChunks":[]}}]}"#,
        ),
        (
            "grounding_null",
            r#"{"candidates":[{"content":{"parts":[{"text":"x"}]},"groundingMetadata":null}]}"#,
        ),
        (
            "escapes",
            r#"{"modelVersion":"g\u00e9\n","candidates":[{"content":{"parts":[{"text":"a\"b\\c\u2603\ud83d\ude00 end"},{"text":"two","thought":true},{"text":" three"}]},"groundingMetadata":{"webSearchQueries":["q\u00e9"],"groundingChunks":[{"web":{"uri":"https:\/\/e.example\/p (x)","title":"T\u00e9 site"}},{"web":{"uri":"  "}},{},{"web":{"uri":"https://f.example/","title":"f.example","domain":" vx.example "}}],"groundingSupports":[{"segment":{"startIndex":0,"endIndex":3,"text":"a\"b"},"groundingChunkIndices":[0,1,2,3,-1,99]},{"segment":{"partIndex":2,"startIndex":1,"endIndex":6},"groundingChunkIndices":[3]},{"segment":{"text":"end"},"groundingChunkIndices":[0]},{"segment":{"startIndex":1,"endIndex":2},"groundingChunkIndices":[0]},{"groundingChunkIndices":[0]},{"segment":{"text":"missing"},"groundingChunkIndices":[0]}]}}]}"#,
        ),
        (
            "secret_inside",
            r#"{"modelVersion":"m","candidates":[{"content":{"parts":[{"text":"key AIzaTest-SECRET-key-0123456789 here"}]}}]}"#,
        ),
        (
            "secret_breaks_json",
            r#"{"candidates":[{"content":{"parts":[{"text":"x"}]}}],"k":"AIzaTest-SECRET-key-0123456789\""}"#,
        ),
        (
            "stopped_other",
            r#"{"candidates":[{"content":{"parts":[]},"finishReason":"RECITATION"}]}"#,
        ),
        (
            "stopped_max",
            r#"{"candidates":[{"finishReason":"MAX_TOKENS"}],"modelVersion":null}"#,
        ),
        (
            "index_float",
            r#"{"candidates":[{"content":{"parts":[{"text":"x"}]},"groundingMetadata":{"groundingSupports":[{"segment":{"startIndex":1.0},"groundingChunkIndices":[0]}]}}]}"#,
        ),
    ];
    out.extend(odd.iter().map(|(n, b)| ((*n).to_owned(), (*b).to_owned())));
    out.push(("deep_nesting".into(), nested));
    out
}

fn render() -> String {
    let mut out = String::new();
    let all = Options {
        markdown: true,
        html: true,
        raw_response: true,
        search_queries: true,
    };
    let md = Options {
        markdown: true,
        ..Options::default()
    };
    for (name, body) in bodies() {
        for (flags, opts) in [
            ("none", Options::default()),
            ("markdown", md),
            ("full", all),
        ] {
            let got = match normalize::normalize(body.as_bytes(), opts, &PageLinks::fixed(), KEY) {
                Ok((result, usage)) => format!(
                    "ok {usage:?} {}",
                    serde_json::to_string(&result).expect("a result serialises")
                ),
                Err(e) => format!("err {e:?}"),
            };
            out.push_str(&format!("{name}/{flags}\t{got}\n"));
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
