//! CPU per answer of the Gemini adapter (issue 10: parse + normalise a typical answer with 20
//! sources under 200 µs). A measurement, not a test: run it with
//! `cargo test --release --lib engines::gemini::cpu -- --ignored --nocapture`.

use serde_json::{Value, json};

use super::normalize::{self, Options};
use crate::pages::PageLinks;

/// A typical grounded answer in the documented layout (`candidates[0].content.parts[].text`,
/// `groundingMetadata.{webSearchQueries, groundingChunks[].web, groundingSupports[].segment}`,
/// https://ai.google.dev/gemini-api/docs/google-search): ~5 KB of text with multi-byte
/// characters, 20 sources, one support per sentence (UTF-8 byte offsets), 3 queries.
pub(super) fn typical_answer() -> String {
    let mut text = String::new();
    let mut chunks = Vec::new();
    let mut supports = Vec::new();
    for i in 0..20 {
        let sentence = format!("Paragraphe {i}: la marque n°{i} est appréciée ☕ pour sa qualité.");
        let start = text.len();
        text.push_str(&sentence);
        let end = text.len();
        chunks.push(json!({"web": {
            "uri": format!("https://vertexaisearch.cloud.google.com/grounding-api-redirect/AUZIYQ{i:04}"),
            "title": format!("site{i}.example.com")}}));
        supports.push(
            json!({"segment": {"startIndex": start, "endIndex": end, "text": sentence},
                             "groundingChunkIndices": [i, (i + 1) % 20]}),
        );
        text.push_str(" Plus de détails sur les prix et la durabilité suivent dans le test. ");
        text.push_str(
            "Les propriétaires signalent peu de pannes pendant les trois premières années. ",
        );
    }
    json!({"candidates": [{"content": {"parts": [{"text": text}], "role": "model"},
        "finishReason": "STOP",
        "groundingMetadata": {"webSearchQueries": ["q one", "q two", "q three"],
            "groundingChunks": chunks, "groundingSupports": supports}}],
        "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 900, "totalTokenCount": 912},
        "modelVersion": "gemini-2.5-flash", "responseId": "r1"})
    .to_string()
}

#[test]
#[ignore = "a measurement: cargo test --release --lib engines::gemini::cpu -- --ignored --nocapture"]
fn cpu_per_task_for_a_typical_answer() {
    let body = typical_answer();
    let pages = PageLinks::fixed();
    let rounds = 2000u32;
    for (what, opts) in [
        ("no include flags", Options::default()),
        (
            "every include flag",
            Options {
                markdown: true,
                html: true,
                raw_response: true,
                search_queries: true,
            },
        ),
    ] {
        let started = std::time::Instant::now();
        for _ in 0..rounds {
            let (r, _usage) =
                normalize::normalize(body.as_bytes(), opts, &pages, "key").expect("an answer");
            assert_eq!(r["sources"].as_array().map(Vec::len), Some(20));
        }
        let per_task = started.elapsed() / rounds;
        println!(
            "gemini: parse + normalise, {} bytes, 20 sources, {what}: {per_task:?} per task",
            body.len()
        );
    }
    let v: Value = serde_json::from_str(&body).expect("json");
    assert!(v.is_object());
}
