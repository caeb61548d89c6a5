#!/usr/bin/env python3
"""The official cloro Python SDK (PyPI `cloro`, pinned by tests/sdk/run.sh), UNCHANGED, against a
running cloro server.

Environment:
  CLORO_BASE_URL             the server, e.g. http://127.0.0.1:8080 (the SDK has no env var for it:
                             it is passed as the documented `base_url=` constructor argument)
  CLORO_API_KEY              a key of an organization with credits and a few concurrency slots
  CLORO_API_KEY_NO_CREDITS   optional: a key of an organization with 0 credits (checks the 403)
  CLORO_SDK_OPTIONAL=1       if the `cloro` package cannot be imported, say so and exit 0

What the SDK 0.2.0 does (read from its source): `Cloro(api_key, base_url=, timeout=300,
max_retries=2)` over httpx; every call sends `Authorization: Bearer <key>`, JSON, and
`User-Agent: cloro-python/0.2.0`; it retries timeouts, connection errors, 429 and 5xx (honouring
`Retry-After`), and maps 400/401/403/404/409/429/5xx to BadRequestError, AuthenticationError,
PermissionDeniedError, NotFoundError, ConflictError, RateLimitError, InternalServerError, with
`.message` taken from `error.message`. `client.monitor.<engine>(...)` POSTs to `/v1/monitor/*` and
returns the parsed `{"success", "result"}`; `client.async_tasks` creates, polls and batches tasks.
The SDK has no Grok method: `/v1/monitor/grok` is called through its public `Cloro.request`.

Clients here use `max_retries=0` (a 5xx must show, not be retried away) and a 60 s timeout, except
one call made with every default (the key from CLORO_API_KEY, retries on).

Prints one line per check and a closing `N passed, N failed`; exits 1 if any check failed.
"""
from __future__ import annotations

import os
import sys
import traceback
import uuid

try:
    import cloro
    from cloro import Cloro
except ImportError as exc:  # pragma: no cover - depends on the environment
    print(f"the cloro SDK is not installed: {exc}")
    sys.exit(0 if os.environ.get("CLORO_SDK_OPTIONAL") == "1" else 2)

BASE = os.environ.get("CLORO_BASE_URL", "").rstrip("/")
KEY = os.environ.get("CLORO_API_KEY", "")
BROKE_KEY = os.environ.get("CLORO_API_KEY_NO_CREDITS", "")
if not BASE or not KEY:
    print("CLORO_BASE_URL and CLORO_API_KEY must be set")
    sys.exit(2)

PASSED: list[str] = []
FAILED: list[str] = []


def check(name: str):
    """Runs the decorated function once as the check `name`; an exception fails it."""

    def run(fn):
        try:
            detail = fn()
        except Exception as exc:  # noqa: BLE001 - every failure is reported, none stops the run
            FAILED.append(name)
            print(f"FAIL {name}: {type(exc).__name__}: {exc}")
            if os.environ.get("CLORO_SDK_TRACE") == "1":
                traceback.print_exc()
        else:
            PASSED.append(name)
            print(f"ok   {name}" + (f" ({detail})" if detail else ""))
        return fn

    return run


def expect(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError(what)


def client(key: str = KEY) -> Cloro:
    return Cloro(api_key=key, base_url=BASE, timeout=60.0, max_retries=0)


def credits_remaining(c: Cloro) -> int:
    return int(c.request("GET", "/v1/credits")["remaining"])


def raises(exc_type, fn, status: int) -> "cloro.APIStatusError":
    try:
        fn()
    except exc_type as exc:
        expect(exc.status_code == status, f"status {exc.status_code}, expected {status}")
        expect(isinstance(exc.message, str) and exc.message, "no message")
        return exc
    except cloro.CloroError as exc:
        raise AssertionError(
            f"raised {type(exc).__name__} (status {getattr(exc, 'status_code', None)}: "
            f"{exc}), expected {exc_type.__name__}"
        ) from exc
    raise AssertionError(f"no error raised, expected {exc_type.__name__}")


print(f"cloro SDK {cloro.__version__} against {BASE}")
sdk = client()

# ---------------------------------------------------------------------------------------------
# Sync calls: every monitor method of the SDK (and Grok through Cloro.request).


def answer_of(res, engine: str) -> dict:
    expect(isinstance(res, dict), f"{engine}: the answer is not an object: {res!r}")
    expect(res.get("success") is True, f"{engine}: success is {res.get('success')!r}")
    result = res.get("result")
    expect(isinstance(result, dict), f"{engine}: no result object")
    expect(result.get("simulated") is True, f"{engine}: result.simulated is not true")
    return result


def prompt_answer(res, engine: str, model: bool) -> str:
    result = answer_of(res, engine)
    text = result.get("text")
    expect(isinstance(text, str) and text.strip(), f"{engine}: no result.text")
    expect(isinstance(result.get("sources"), list), f"{engine}: no result.sources")
    if model or "model" in result:
        expect(result.get("model") == "simulated", f"{engine}: model {result.get('model')!r}")
    return f"{len(text)} chars of text, {len(result['sources'])} sources"


PROMPT = "What are the best running shoes?"

for name, call, has_model in [
    ("chatgpt", lambda: sdk.monitor.chatgpt(PROMPT, "US"), True),
    ("gemini", lambda: sdk.monitor.gemini(PROMPT, "US"), False),
    ("perplexity", lambda: sdk.monitor.perplexity(PROMPT, "US"), False),
    ("copilot", lambda: sdk.monitor.copilot(PROMPT, "US"), False),
    ("aimode", lambda: sdk.monitor.aimode(PROMPT, "US"), False),
    (
        "grok (no SDK method; Cloro.request)",
        lambda: sdk.request(
            "POST", "/v1/monitor/grok", json={"prompt": PROMPT, "country": "US"}
        ),
        True,
    ),
]:
    check(f"monitor.{name}")(lambda call=call, name=name, has_model=has_model: prompt_answer(
        call(), name, has_model
    ))


@check("monitor.chatgpt with include={'markdown': True}")
def _():
    result = answer_of(
        sdk.monitor.chatgpt(PROMPT, "US", include={"markdown": True}), "chatgpt"
    )
    md = result.get("markdown")
    expect(isinstance(md, str) and md.strip(), "no result.markdown")
    return f"{len(md)} chars of markdown"


@check("monitor.google")
def _():
    result = answer_of(sdk.monitor.google("running shoes", "US", device="desktop", pages=1), "google")
    organic = result.get("organicResults")
    expect(isinstance(organic, list) and organic, "no organicResults")
    expect(all(isinstance(r.get("link"), str) for r in organic), "an organic result has no link")
    return f"{len(organic)} organic results"


@check("monitor.google_news")
def _():
    result = answer_of(sdk.monitor.google_news("running shoes", "US"), "google news")
    news = result.get("newsResults")
    expect(isinstance(news, list) and news, "no newsResults")
    return f"{len(news)} news results"


@check("a sync call is charged its price plus the sync surcharge (ChatGPT 5 + 2)")
def _():
    before = credits_remaining(sdk)
    answer_of(sdk.monitor.chatgpt(PROMPT, "US"), "chatgpt")
    after = credits_remaining(sdk)
    expect(before - after == 7, f"charged {before - after}, expected 7")
    return "7 credits"


@check("a client with every default (key from CLORO_API_KEY, retries on)")
def _():
    with Cloro(base_url=BASE) as default_client:
        return prompt_answer(default_client.monitor.chatgpt(PROMPT, "US"), "chatgpt", True)


# ---------------------------------------------------------------------------------------------
# Errors surface as the SDK's documented exception types.


@check("an empty prompt is a BadRequestError (400)")
def _():
    before = credits_remaining(sdk)
    exc = raises(cloro.BadRequestError, lambda: sdk.monitor.chatgpt("", "US"), 400)
    expect(isinstance(exc.body, dict) and exc.body.get("success") is False, "body not an error envelope")
    expect(exc.body["error"].get("code") == "VALIDATION_ERROR", f"code {exc.body['error'].get('code')}")
    expect(credits_remaining(sdk) == before, "a 400 was charged")
    return exc.message


@check("an unknown field (passed through the SDK's **extra) is a BadRequestError (400)")
def _():
    return raises(
        cloro.BadRequestError, lambda: sdk.monitor.gemini(PROMPT, "US", notAField=True), 400
    ).message


@check("an unknown API key is an AuthenticationError (401)")
def _():
    bad = client("sk_live_" + "0" * 32)
    return raises(cloro.AuthenticationError, lambda: bad.monitor.chatgpt(PROMPT, "US"), 401).message


@check("a malformed API key is an AuthenticationError (401)")
def _():
    bad = client("not-a-key")
    return raises(cloro.AuthenticationError, lambda: bad.monitor.google("q", "US"), 401).message


if BROKE_KEY:

    @check("no credits is a PermissionDeniedError (403)")
    def _():
        broke = client(BROKE_KEY)
        exc = raises(cloro.PermissionDeniedError, lambda: broke.monitor.chatgpt(PROMPT, "US"), 403)
        expect(exc.body["error"].get("code") == "INSUFFICIENT_CREDITS", f"code {exc.body['error']}")
        return exc.message


@check("an unknown task id is a NotFoundError (404)")
def _():
    return raises(
        cloro.NotFoundError, lambda: sdk.async_tasks.retrieve(str(uuid.uuid4())), 404
    ).message


@check("a reused idempotency key is a ConflictError (409)")
def _():
    key = f"sdk-{uuid.uuid4()}"
    sdk.async_tasks.create("CHATGPT", {"prompt": PROMPT, "country": "US"}, idempotency_key=key)
    return raises(
        cloro.ConflictError,
        lambda: sdk.async_tasks.create(
            "CHATGPT", {"prompt": PROMPT, "country": "US"}, idempotency_key=key
        ),
        409,
    ).message


# ---------------------------------------------------------------------------------------------
# Async tasks: create, poll to COMPLETED, batch, status.


@check("async_tasks.create + wait reaches COMPLETED")
def _():
    task = sdk.async_tasks.create("CHATGPT", {"prompt": PROMPT, "country": "US"}, priority=5)
    expect(isinstance(task, cloro.AsyncTask), f"create returned {type(task).__name__}")
    expect(task.status == "QUEUED" and task.task_type == "CHATGPT", f"task {task.raw}")
    done = sdk.async_tasks.wait(task, poll_interval=0.2, timeout=60, max_interval=1.0)
    expect(done["task"]["status"] == "COMPLETED", f"status {done['task']['status']}")
    resp = done.get("response") or {}
    expect(isinstance(resp.get("text"), str) and resp["text"], "no response.text")
    expect(resp.get("model") == "simulated", f"model {resp.get('model')!r}")
    return f"task {task.id}"


@check("async_tasks.run (GOOGLE_NEWS) reaches COMPLETED")
def _():
    done = sdk.async_tasks.run(
        "GOOGLE_NEWS", {"query": "running shoes", "country": "US"}, poll_interval=0.2, timeout=60
    )
    expect(done["task"]["status"] == "COMPLETED", f"status {done['task']['status']}")
    expect(done["response"].get("newsResults"), "no newsResults")


@check("async_tasks.create_batch (2 tasks, one invalid) and wait for the valid one")
def _():
    results = sdk.async_tasks.create_batch(
        [
            {"task_type": "GOOGLE", "payload": {"query": "running shoes", "country": "US"}},
            {"taskType": "GEMINI", "payload": {"prompt": "", "country": "US"}},
        ]
    )
    expect(len(results) == 2, f"{len(results)} results")
    expect("task" in results[0], f"first item: {results[0]}")
    expect("error" in results[1], f"second item: {results[1]}")
    done = sdk.async_tasks.wait(results[0]["task"]["id"], poll_interval=0.2, timeout=60)
    expect(done["response"].get("organicResults"), "no organicResults")


@check("async_tasks.status")
def _():
    st = sdk.async_tasks.status()
    for field in ("queuedTasks", "processingTasks", "concurrency"):
        expect(field in st, f"no {field}: {st}")
    return f"concurrency {st['concurrency']}"


# ---------------------------------------------------------------------------------------------
# Reference data.


@check("countries()")
def _():
    every = sdk.countries()
    chatgpt = sdk.countries(model="chatgpt")
    expect(isinstance(every, list) and "US" in every, "US not in countries()")
    expect(isinstance(chatgpt, list) and "US" in chatgpt, "US not in countries(model=chatgpt)")
    return f"{len(every)} countries, {len(chatgpt)} for chatgpt"


@check("states() without ?country= is a BadRequestError, as the reference API requires country")
def _():
    return raises(cloro.BadRequestError, sdk.states, 400).message


print(f"{len(PASSED)} passed, {len(FAILED)} failed")
if FAILED:
    print("failed: " + "; ".join(FAILED))
sys.exit(1 if FAILED else 0)
