//! CPU per answer of the SerpApi adapter (issue 10: parse + normalise a typical answer with 20
//! sources under 200 µs). A measurement, not a test: run it with
//! `cargo test --release --lib engines::serpapi::cpu -- --ignored --nocapture`.

use serde_json::{Value, json};

use super::normalize::{self, Flags};

/// A typical Google AI Mode answer in SerpApi's documented layout
/// (https://serpapi.com/google-ai-mode-api: `text_blocks[]{type, snippet, reference_indexes,
/// list}`, `references[]{title, link, snippet, source, index}`): 20 paragraphs citing 20
/// references, multi-byte text.
fn typical_aimode() -> String {
    let mut blocks = Vec::new();
    let mut refs = Vec::new();
    for i in 0..20 {
        blocks.push(json!({"type": "paragraph",
            "snippet": format!("Paragraphe {i}: la marque n°{i} est appréciée ☕ pour sa qualité et ses prix."),
            "reference_indexes": [i, (i + 1) % 20]}));
        refs.push(json!({"title": format!("Article {i}"),
            "link": format!("https://site{i}.example.com/article-{i}"),
            "snippet": "Plus de détails sur les prix et la durabilité.", "source": format!("Site {i}"),
            "index": i}));
    }
    json!({"search_metadata": {"id": "x", "status": "Success", "total_time_taken": 3.1},
        "search_parameters": {"engine": "google_ai_mode", "q": "q", "gl": "fr", "hl": "fr"},
        "text_blocks": blocks, "references": refs})
    .to_string()
}

/// A typical Google results page in SerpApi's documented layout
/// (https://serpapi.com/organic-results, /related-questions, /related-searches): 20 organic
/// results (two pages of 10), 4 questions, 8 related searches.
fn typical_google_pages() -> [String; 2] {
    let page = |p: usize| {
        let organic: Vec<Value> = (0..10)
            .map(|i| {
                let n = p * 10 + i;
                json!({"position": i + 1, "title": format!("Résultat {n} ☕"),
                       "link": format!("https://site{n}.example.com/page"),
                       "displayed_link": format!("site{n}.example.com › page"),
                       "snippet": "Un extrait de la page, avec ses mots en gras et quelques détails.",
                       "source": format!("Site {n}")})
            })
            .collect();
        json!({"search_metadata": {"id": "x", "status": "Success"},
            "organic_results": organic,
            "related_questions": (0..4).map(|i| json!({"question": format!("Question {i} ?"),
                "snippet": "Une réponse courte.", "title": "Titre", "link": "https://q.example.com/"})).collect::<Vec<_>>(),
            "related_searches": (0..8).map(|i| json!({"query": format!("recherche {i}"),
                "link": "https://www.google.com/search?q=x"})).collect::<Vec<_>>()})
        .to_string()
    };
    [page(0), page(1)]
}

#[test]
#[ignore = "a measurement: cargo test --release --lib engines::serpapi::cpu -- --ignored --nocapture"]
fn cpu_per_task_for_typical_answers() {
    let rounds = 2000u32;
    let aimode = typical_aimode();
    let started = std::time::Instant::now();
    for _ in 0..rounds {
        let v: Value = serde_json::from_str(&aimode).expect("json");
        let m = normalize::aimode(
            &v,
            Flags {
                markdown: true,
                ..Flags::default()
            },
        );
        assert_eq!(m["sources"].as_array().map(Vec::len), Some(20));
    }
    println!(
        "serpapi AIMODE: parse + normalise, {} bytes, 20 sources, markdown: {:?} per task",
        aimode.len(),
        started.elapsed() / rounds
    );
    let pages = typical_google_pages();
    let bytes: usize = pages.iter().map(String::len).sum();
    let started = std::time::Instant::now();
    for _ in 0..rounds {
        let parsed: Vec<Value> = pages
            .iter()
            .map(|p| serde_json::from_str(p).expect("json"))
            .collect();
        let m = normalize::google(&parsed, None, Flags::default());
        assert_eq!(m["organicResults"].as_array().map(Vec::len), Some(20));
    }
    println!(
        "serpapi GOOGLE: parse + normalise, 2 pages, {bytes} bytes, 20 organic results: {:?} per task",
        started.elapsed() / rounds
    );
}
