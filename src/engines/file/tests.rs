//! The engines file: a full valid file, the example file, and every error with its message
//! and line.

use super::*;

const KEYS: &[(&str, &str)] = &[
    ("OPENAI_API_KEY", "sk-openai-secret"),
    ("XAI_API_KEY", "xai-secret"),
    ("PERPLEXITY_API_KEY", "pplx-secret"),
    ("AZURE_OPENAI_API_KEY", "azure-secret"),
    ("GEMINI_API_KEY", "gemini-secret"),
    ("SERPAPI_KEY", "serp-secret"),
    ("EMPTY_KEY", "  "),
];

fn env(name: &str) -> Option<String> {
    KEYS.iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| (*v).to_owned())
}

fn ok(text: &str) -> EngineSet {
    match parse("engines.toml", text, &env) {
        Ok(set) => set,
        Err(e) => panic!("expected a valid file, got: {e}"),
    }
}

fn err(text: &str) -> String {
    match parse("engines.toml", text, &env) {
        Ok(set) => panic!("expected an error, got {set:?}"),
        Err(e) => {
            for (_, secret) in KEYS.iter().filter(|(_, v)| !v.trim().is_empty()) {
                assert!(!e.contains(secret), "a key leaked into {e:?}");
            }
            e
        }
    }
}

fn route(set: &EngineSet, t: TaskType) -> Option<&str> {
    set.engine_for(t).map(|e| e.name.as_str())
}

const FULL: &str = r#"
[engines.openai]
kind = "openai-responses"
base_url = "https://api.openai.com/v1"
api_key_env = "OPENAI_API_KEY"
model = "gpt-5-mini"
max_in_flight = 50
requests_per_minute = 500
timeout_ms = 60000
user_location = true
include_sources = true
web_search_tool = "web_search"

[engines.grok]
kind = "openai-responses"
base_url = "https://api.x.ai/v1/"
api_key_env = "XAI_API_KEY"
model = "grok-4"

[engines.pplx]
kind = "openai-responses"
provider = "perplexity"
api_key_env = "PERPLEXITY_API_KEY"
model = "perplexity/sonar"

[engines.copilot]
kind = "openai-responses"
base_url = "https://my-resource.openai.azure.com/openai/v1"
api_key_env = "AZURE_OPENAI_API_KEY"
model = "gpt-4.1-web"
web_search_tool = "web_search_preview"

[engines.gemini]
kind = "gemini"
api_key_env = "GEMINI_API_KEY"
model = "gemini-2.5-flash"

[engines.serp]
kind = "serpapi"
api_key_env = "SERPAPI_KEY"
max_in_flight = 10

[engines.slow-sim]
kind = "simulated"
latency_ms = "5..10"
failure_rate = 0.25
max_in_flight = 2

[task_types]
CHATGPT = "openai"
GROK = "grok"
PERPLEXITY = "pplx"
COPILOT = "copilot"
GEMINI = "gemini"
GOOGLE = "serp"
GOOGLE_NEWS = "serp"
AIMODE = "slow-sim"
"#;

#[test]
fn a_full_valid_file_routes_every_task_type_with_its_settings() {
    let set = ok(FULL);
    assert!(set.warnings.is_empty(), "{:?}", set.warnings);
    let names: Vec<&str> = set.engines.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "openai", "grok", "pplx", "copilot", "gemini", "serp", "slow-sim"
        ],
        "in the order of the file"
    );
    assert_eq!(route(&set, TaskType::Chatgpt), Some("openai"));
    assert_eq!(route(&set, TaskType::Grok), Some("grok"));
    assert_eq!(route(&set, TaskType::Perplexity), Some("pplx"));
    assert_eq!(route(&set, TaskType::Copilot), Some("copilot"));
    assert_eq!(route(&set, TaskType::Gemini), Some("gemini"));
    assert_eq!(route(&set, TaskType::Google), Some("serp"));
    assert_eq!(route(&set, TaskType::GoogleNews), Some("serp"));
    assert_eq!(route(&set, TaskType::Aimode), Some("slow-sim"));

    let openai = &set.engines[0];
    assert_eq!(openai.kind, Kind::OpenAiResponses);
    assert_eq!(openai.kind.to_string(), "openai-responses");
    assert_eq!(openai.model.as_deref(), Some("gpt-5-mini"));
    assert_eq!(
        openai.base_url.as_deref(),
        Some("https://api.openai.com/v1")
    );
    assert_eq!(openai.api_key_env.as_deref(), Some("OPENAI_API_KEY"));
    assert_eq!(openai.max_in_flight, Some(50));
    assert_eq!(openai.requests_per_minute, Some(500));
    assert_eq!(openai.timeout, Duration::from_secs(60));

    let grok = &set.engines[1];
    assert_eq!(
        grok.base_url.as_deref(),
        Some("https://api.x.ai/v1"),
        "trailing slash dropped"
    );
    assert_eq!(grok.timeout, DEFAULT_TIMEOUT);
    assert_eq!(grok.max_in_flight, None);

    let pplx = &set.engines[2];
    assert_eq!(
        pplx.base_url.as_deref(),
        Some("https://api.perplexity.ai/v1"),
        "the provider's documented base"
    );
    let gemini = &set.engines[4];
    assert_eq!(gemini.base_url.as_deref(), Some(GEMINI_DEFAULT_BASE));
    let serp = &set.engines[5];
    assert_eq!(serp.base_url.as_deref(), Some("https://serpapi.com"));
    assert_eq!(serp.model, None);
    let sim = &set.engines[6];
    assert_eq!(sim.kind, Kind::Simulated);
    assert_eq!(sim.base_url, None);
    assert_eq!(sim.api_key_env, None);
    assert_eq!(sim.max_in_flight, Some(2));

    let debug = format!("{set:?}");
    for (_, secret) in KEYS {
        if !secret.trim().is_empty() {
            assert!(!debug.contains(secret), "{debug}");
        }
    }
}

#[test]
fn an_empty_file_and_a_file_without_task_types_run_everything_on_the_simulator() {
    let set = ok("");
    assert!(set.engines.is_empty());
    assert_eq!(set.route, [None; 8]);
    let set = ok("# nothing yet\n[task_types]\n");
    assert_eq!(set.route, [None; 8]);
}

#[test]
fn task_types_not_listed_fall_back_to_the_simulator() {
    let set = ok(
        "[engines.serp]\nkind = \"serpapi\"\napi_key_env = \"SERPAPI_KEY\"\n\n[task_types]\nGOOGLE = \"serp\"\n",
    );
    assert_eq!(route(&set, TaskType::Google), Some("serp"));
    for t in TaskType::ALL.into_iter().filter(|t| *t != TaskType::Google) {
        assert_eq!(route(&set, t), None, "{t:?}");
    }
}

#[test]
fn the_example_file_loads_and_uses_every_kind() {
    let text = include_str!("../../../engines.example.toml");
    let set = match parse("engines.example.toml", text, &env) {
        Ok(set) => set,
        Err(e) => panic!("the example file does not load: {e}"),
    };
    for kind in Kind::ALL {
        assert!(
            set.engines.iter().any(|e| e.kind == kind),
            "no {kind} engine in the example"
        );
    }
    for t in TaskType::ALL {
        assert!(set.engine_for(t).is_some(), "{t:?} is not routed");
    }
    assert_eq!(
        set.warnings.len(),
        1,
        "only the simulator shown for its keys is unused: {:?}",
        set.warnings
    );
    assert!(set.warnings[0].contains("engine \"sim\" is not used"));
}

#[test]
fn an_unknown_key_names_the_file_the_line_and_the_table() {
    let e = err(r#"[engines.openai]
kind = "openai-responses"
base_url = "https://api.openai.com/v1"
api_key_env = "OPENAI_API_KEY"
model = "gpt-5-mini"

modle = "gpt-5"
"#);
    assert!(
        e.starts_with(r#"engines.toml:7: unknown key "modle" in [engines.openai]; kind "openai-responses" takes kind, base_url"#),
        "{e}"
    );
}

#[test]
fn a_key_of_another_kind_is_refused() {
    let e = err(
        "[engines.g]\nkind = \"gemini\"\napi_key_env = \"GEMINI_API_KEY\"\nmodel = \"m\"\nlatency_ms = 5\n",
    );
    assert!(
        e.starts_with(r#"engines.toml:5: key "latency_ms" does not apply to kind "gemini" in [engines.g]; it takes kind, base_url, api_key_env, model"#),
        "{e}"
    );
    let e = err("[engines.s]\nkind = \"serpapi\"\napi_key_env = \"SERPAPI_KEY\"\nmodel = \"x\"\n");
    assert!(
        e.starts_with(
            r#"engines.toml:4: key "model" does not apply to kind "serpapi" in [engines.s]"#
        ),
        "{e}"
    );
    let e = err("[engines.s]\nkind = \"simulated\"\napi_key_env = \"SERPAPI_KEY\"\n");
    assert!(
        e.starts_with(r#"engines.toml:3: key "api_key_env" does not apply to kind "simulated""#),
        "{e}"
    );
}

#[test]
fn an_unknown_section_and_a_syntax_error_have_their_line() {
    let e = err("[engines.s]\nkind = \"simulated\"\n\n[task_type]\nGOOGLE = \"s\"\n");
    assert_eq!(
        e,
        r#"engines.toml:4: unknown key "task_type" at the top level: expected [engines.NAME] tables and [task_types]"#
    );
    let e = err("[engines.s]\nkind = \"simulated\"\nmax_in_flight = = 3\n");
    assert!(e.starts_with("engines.toml:3: "), "{e}");
    let e = err("engines = 3\n");
    assert!(e.starts_with("engines.toml:1: "), "{e}");
}

#[test]
fn a_missing_or_unknown_kind_is_refused() {
    let e = err("\n[engines.x]\nmodel = \"m\"\n");
    assert_eq!(
        e,
        "engines.toml:2: [engines.x] has no kind: expected one of openai-responses, gemini, serpapi, simulated"
    );
    let e = err("[engines.x]\n\nkind = \"openai\"\n");
    assert_eq!(
        e,
        r#"engines.toml:3: unknown kind "openai" in [engines.x]: expected one of openai-responses, gemini, serpapi, simulated"#
    );
    let e = err("[engines.x]\nkind = 3\n");
    assert_eq!(e, "engines.toml:2: kind in [engines.x] must be a string");
}

#[test]
fn an_unknown_task_type_lists_the_valid_ones() {
    let e =
        err("[engines.s]\nkind = \"simulated\"\n[task_types]\nGOOGLE = \"s\"\nCHATGTP = \"s\"\n");
    assert_eq!(
        e,
        r#"engines.toml:5: unknown task type "CHATGTP" in [task_types]: expected one of AIMODE, GOOGLE, GOOGLE_NEWS, GEMINI, CHATGPT, COPILOT, PERPLEXITY, GROK"#
    );
    let e = err("[engines.s]\nkind = \"simulated\"\n[task_types]\nchatgpt = \"s\"\n");
    assert!(
        e.starts_with(r#"engines.toml:4: unknown task type "chatgpt" in [task_types] (task types are upper case: CHATGPT): expected one of AIMODE"#),
        "{e}"
    );
}

#[test]
fn a_task_type_naming_an_undefined_engine_is_refused() {
    let e = err(
        "[engines.serp]\nkind = \"serpapi\"\napi_key_env = \"SERPAPI_KEY\"\n[engines.sim]\nkind = \"simulated\"\n[task_types]\nGOOGLE = \"serp\"\nGOOGLE_NEWS = \"sim\"\nAIMODE = \"srep\"\n",
    );
    assert_eq!(
        e,
        r#"engines.toml:9: AIMODE in [task_types] names engine "srep", which is not defined (defined: serp, sim)"#
    );
    let e = err("[task_types]\nGOOGLE = \"serp\"\n");
    assert_eq!(
        e,
        r#"engines.toml:2: GOOGLE in [task_types] names engine "serp", which is not defined (no engine is defined)"#
    );
    let e = err("[engines.s]\nkind = \"simulated\"\n[task_types]\nGOOGLE = 1\n");
    assert_eq!(
        e,
        "engines.toml:4: GOOGLE in [task_types] must name an engine (a string)"
    );
}

#[test]
fn a_task_type_its_engine_cannot_serve_is_refused() {
    let e = err(
        "[engines.serp]\nkind = \"serpapi\"\napi_key_env = \"SERPAPI_KEY\"\n[task_types]\nGOOGLE = \"serp\"\nCHATGPT = \"serp\"\n",
    );
    assert_eq!(
        e,
        r#"engines.toml:6: CHATGPT in [task_types]: engine "serp" (kind serpapi) cannot serve CHATGPT; serpapi serves GOOGLE, GOOGLE_NEWS, AIMODE"#
    );
    let e = err(
        "[engines.g]\nkind = \"gemini\"\napi_key_env = \"GEMINI_API_KEY\"\nmodel = \"m\"\n[task_types]\nGROK = \"g\"\n",
    );
    assert!(e.contains("cannot serve GROK; gemini serves GEMINI"), "{e}");
    let e = err(
        "[engines.o]\nkind = \"openai-responses\"\napi_key_env = \"OPENAI_API_KEY\"\nmodel = \"m\"\n[task_types]\nGEMINI = \"o\"\n",
    );
    assert!(
        e.contains("openai-responses serves CHATGPT, GROK, PERPLEXITY, COPILOT"),
        "{e}"
    );
}

#[test]
fn a_missing_or_empty_key_variable_names_the_variable_never_a_value() {
    let e = err(
        "[engines.o]\nkind = \"openai-responses\"\napi_key_env = \"NOPE_KEY\"\nmodel = \"m\"\n",
    );
    assert_eq!(
        e,
        "engines.toml:3: the environment variable NOPE_KEY (api_key_env in [engines.o]) is not set"
    );
    let e = err("[engines.o]\nkind = \"serpapi\"\n\napi_key_env = \"EMPTY_KEY\"\n");
    assert_eq!(
        e,
        "engines.toml:4: the environment variable EMPTY_KEY (api_key_env in [engines.o]) is empty"
    );
    let e = err("[engines.o]\nkind = \"gemini\"\nmodel = \"m\"\n");
    assert_eq!(
        e,
        "engines.toml:1: [engines.o] needs api_key_env, the name of the environment variable holding the key"
    );
}

#[test]
fn bad_urls_are_refused_with_their_line() {
    let base = |url: &str| {
        err(&format!(
            "[engines.s]\nkind = \"serpapi\"\napi_key_env = \"SERPAPI_KEY\"\nbase_url = \"{url}\"\n"
        ))
    };
    assert_eq!(
        base("ftp://serpapi.com"),
        r#"engines.toml:4: bad base_url "ftp://serpapi.com" in [engines.s]: expected an http:// or https:// URL"#
    );
    assert!(
        base("serpapi.com").starts_with("engines.toml:4: bad base_url in [engines.s]: "),
        "{}",
        base("serpapi.com")
    );
    assert_eq!(
        base("https://serpapi.com/?x=1"),
        r#"engines.toml:4: bad base_url "https://serpapi.com/?x=1" in [engines.s]: no query or fragment allowed"#
    );
    let e = base("https://user:hunter2@serpapi.com");
    assert_eq!(
        e,
        "engines.toml:4: bad base_url in [engines.s]: credentials do not belong in the URL (use api_key_env)"
    );
    assert!(!e.contains("hunter2"));
}

#[test]
fn zero_and_malformed_limits_are_refused() {
    for key in ["max_in_flight", "requests_per_minute", "timeout_ms"] {
        let e = err(&format!("[engines.s]\nkind = \"simulated\"\n{key} = 0\n"));
        assert_eq!(
            e,
            format!("engines.toml:3: {key} in [engines.s] must be at least 1")
        );
        let e = err(&format!(
            "[engines.s]\nkind = \"simulated\"\n{key} = \"10\"\n"
        ));
        assert_eq!(
            e,
            format!("engines.toml:3: {key} in [engines.s] must be a whole number")
        );
    }
    let e = err("[engines.s]\nkind = \"simulated\"\nmax_in_flight = 5000000000\n");
    assert_eq!(
        e,
        "engines.toml:3: max_in_flight in [engines.s] is too large (at most 4294967295)"
    );
}

#[test]
fn an_engine_no_task_type_uses_is_a_warning() {
    let set = ok(
        "[engines.a]\nkind = \"simulated\"\n\n[engines.b]\nkind = \"simulated\"\n[task_types]\nGOOGLE = \"a\"\n",
    );
    assert_eq!(
        set.warnings,
        [r#"engines.toml:4: engine "b" is not used by any task type in [task_types]"#]
    );
}

#[test]
fn the_responses_provider_is_inferred_from_the_host_or_required() {
    let file = |extra: &str| {
        format!(
            "[engines.o]\nkind = \"openai-responses\"\napi_key_env = \"OPENAI_API_KEY\"\nmodel = \"m\"\n{extra}"
        )
    };
    // No base_url, no provider: OpenAI.
    let set = ok(&file(""));
    assert_eq!(
        set.engines[0].base_url.as_deref(),
        Some("https://api.openai.com/v1")
    );
    // Provider alone: its documented base.
    let set = ok(&file("provider = \"xai\"\n"));
    assert_eq!(
        set.engines[0].base_url.as_deref(),
        Some("https://api.x.ai/v1")
    );
    // An unknown host needs the provider.
    let e = err(&file("base_url = \"http://127.0.0.1:9/v1\"\n"));
    assert_eq!(
        e,
        r#"engines.toml:5: [engines.o]: cannot tell the provider from base_url "http://127.0.0.1:9/v1"; add provider = "openai", "xai", "perplexity" or "azure""#
    );
    ok(&file(
        "base_url = \"http://127.0.0.1:9/v1\"\nprovider = \"openai\"\n",
    ));
    // Azure has no default base.
    let e = err(&file("provider = \"azure\"\n"));
    assert_eq!(
        e,
        "engines.toml:1: [engines.o] needs base_url for provider \"azure\" (https://RESOURCE.openai.azure.com/openai/v1)"
    );
    let e = err(&file("provider = \"bing\"\n"));
    assert!(
        e.starts_with(r#"engines.toml:5: unknown Responses provider "bing""#),
        "{e}"
    );
}

#[test]
fn model_is_required_where_the_adapter_sends_one() {
    let e = err("[engines.o]\nkind = \"openai-responses\"\napi_key_env = \"OPENAI_API_KEY\"\n");
    assert_eq!(
        e,
        r#"engines.toml:1: [engines.o] needs model (e.g. model = "gpt-5-mini")"#
    );
    let e =
        err("[engines.g]\nkind = \"gemini\"\napi_key_env = \"GEMINI_API_KEY\"\nmodel = \" \"\n");
    assert_eq!(e, "engines.toml:4: model in [engines.g] is empty");
    let e =
        err("[engines.g]\nkind = \"gemini\"\napi_key_env = \"GEMINI_API_KEY\"\nmodel = \"a b\"\n");
    assert!(
        e.starts_with("engines.toml:1: engine \"g\": gemini: model must be a plain model id"),
        "{e}"
    );
}

#[test]
fn simulated_latency_and_failure_rate_are_checked() {
    ok("[engines.s]\nkind = \"simulated\"\nlatency_ms = 5\nfailure_rate = 1\n");
    ok("[engines.s]\nkind = \"simulated\"\nlatency_ms = \"1..20\"\nfailure_rate = 0.0\n");
    let e = err("[engines.s]\nkind = \"simulated\"\nlatency_ms = \"20..1\"\n");
    assert_eq!(
        e,
        r#"engines.toml:3: latency_ms in [engines.s]: invalid latency "20..1": MIN is above MAX"#
    );
    let e = err("[engines.s]\nkind = \"simulated\"\nlatency_ms = -1\n");
    assert!(
        e.starts_with("engines.toml:3: latency_ms in [engines.s]"),
        "{e}"
    );
    let e = err("[engines.s]\nkind = \"simulated\"\nfailure_rate = 1.5\n");
    assert_eq!(
        e,
        "engines.toml:3: failure_rate in [engines.s] must be a number from 0 to 1"
    );
}

#[test]
fn wrong_value_types_are_refused() {
    let e = err(
        "[engines.o]\nkind = \"openai-responses\"\napi_key_env = \"OPENAI_API_KEY\"\nmodel = \"m\"\nuser_location = \"yes\"\n",
    );
    assert_eq!(
        e,
        "engines.toml:5: user_location in [engines.o] must be true or false"
    );
    let e = err("[engines.o]\nkind = \"serpapi\"\napi_key_env = 3\n");
    assert_eq!(
        e,
        "engines.toml:3: api_key_env in [engines.o] must be a string"
    );
}

#[test]
fn engine_names_are_plain_words() {
    let e = err("[engines.\"a b\"]\nkind = \"simulated\"\n");
    assert_eq!(
        e,
        r#"engines.toml:1: engine name "a b" in [engines.a b]: use letters, digits, '-' and '_'"#
    );
}

#[test]
fn every_error_is_reported_and_a_bad_engine_is_not_reported_twice() {
    let e = err(
        "[engines.a]\nkind = \"nope\"\n[engines.b]\nkind = \"simulated\"\nfailure_rate = 3\n[task_types]\nGOOGLE = \"a\"\nPLANE = \"b\"\n",
    );
    let lines: Vec<&str> = e.lines().collect();
    assert_eq!(lines.len(), 3, "{e}");
    assert!(lines[0].starts_with("engines.toml:2: unknown kind"), "{e}");
    assert!(lines[1].starts_with("engines.toml:5: failure_rate"), "{e}");
    assert!(
        lines[2].starts_with("engines.toml:8: unknown task type \"PLANE\""),
        "{e}"
    );
}

#[test]
fn a_missing_file_is_named() {
    let e = load(Path::new("/nonexistent/engines.toml"), &env)
        .err()
        .unwrap_or_default();
    assert!(
        e.starts_with("cannot read the engines file /nonexistent/engines.toml: "),
        "{e}"
    );
}

#[test]
fn inline_tables_work_too() {
    let set = ok("engines.s = { kind = \"simulated\" }\ntask_types = { GOOGLE = \"s\" }\n");
    assert_eq!(route(&set, TaskType::Google), Some("s"));
}

#[test]
fn the_list_shows_all_task_types_with_the_default_simulator() {
    let rows = cli::list_rows(&EngineSet::empty());
    assert_eq!(rows.len(), 8);
    assert!(
        rows.iter()
            .all(|r| r.engine.is_none() && r.kind == Kind::Simulated)
    );
    let table = cli::list_table(&rows);
    assert!(table.starts_with("TASK TYPE"), "{table}");
    assert_eq!(table.lines().count(), 9);
    assert!(
        table.contains("AIMODE       simulated (default)  simulated"),
        "{table}"
    );

    let set = ok(FULL);
    let rows = cli::list_rows(&set);
    let json: serde_json::Value = serde_json::from_str(&cli::list_json(&rows)).expect("json");
    let chatgpt = json
        .as_array()
        .and_then(|a| a.iter().find(|r| r["taskType"] == "CHATGPT"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        chatgpt,
        serde_json::json!({
            "taskType": "CHATGPT", "engine": "openai", "kind": "openai-responses",
            "model": "gpt-5-mini", "baseUrl": "https://api.openai.com/v1",
            "maxInFlight": 50, "requestsPerMinute": 500, "timeoutMs": 60000,
            "health": "unknown", "healthMessage": null, "healthSince": null
        })
    );
    let default = cli::list_json(&cli::list_rows(&EngineSet::empty()));
    let default: serde_json::Value = serde_json::from_str(&default).expect("json");
    assert_eq!(default[0]["engine"], serde_json::Value::Null);
    assert_eq!(default[0]["kind"], "simulated");
    assert_eq!(default[0]["health"], "ok");
}

#[test]
fn the_list_shows_the_recorded_health() {
    let set = ok(FULL);
    let mut rows = cli::list_rows(&set);
    let recorded =
        |name: &str, health: &str, message: Option<&str>| crate::store::EngineHealthRow {
            name: name.into(),
            health: health.into(),
            message: message.map(str::to_owned),
            since_ms: 1_775_746_800_000,
            updated_ms: 1_775_746_800_000,
            node: None,
        };
    cli::apply_health(
        &mut rows,
        &[
            recorded("openai", "failing", Some("Incorrect API key\nprovided")),
            recorded("serp", "rate-limited", Some("429")),
        ],
    );
    let by_type = |t: TaskType| rows.iter().find(|r| r.task_type == t).expect("row");
    assert_eq!(by_type(TaskType::Chatgpt).health.state, "failing");
    let json: serde_json::Value = serde_json::from_str(&cli::list_json(&rows)).expect("json");
    let chatgpt = json
        .as_array()
        .and_then(|a| a.iter().find(|r| r["taskType"] == "CHATGPT"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(chatgpt["health"], "failing");
    assert_eq!(chatgpt["healthMessage"], "Incorrect API key provided");
    assert_eq!(chatgpt["healthSince"], "2026-04-09T15:00:00.000Z");
    let table = cli::list_table(&rows);
    let line = |t: &str| {
        table
            .lines()
            .find(|l| l.starts_with(t))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        table.lines().next().unwrap_or_default().ends_with("HEALTH"),
        "{table}"
    );
    assert!(
        line("CHATGPT").ends_with("failing: Incorrect API key provided"),
        "{table}"
    );
    assert!(line("GOOGLE ").ends_with("rate-limited"), "{table}");
}
