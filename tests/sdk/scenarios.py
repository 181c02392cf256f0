"""Drive Keyward with the official SDKs, as an agent would.

Usage: scenarios.py SCENARIO   (KEYWARD_URL, KEYWARD_KEY in the environment)

Each scenario prints one JSON line and exits 0 when the SDK behaved as expected:
  anthropic_ok / openai_ok               success, non-stream and streaming
  anthropic_exhausted / openai_exhausted the SDK raises its usual error, without retrying
  anthropic_transient / openai_transient the SDK retries after retry-after and succeeds
  anthropic_revoked / openai_revoked     every key of the route revoked: the SDK raises after
                                         exactly one attempt (its retries on by default),
                                         the message naming every credential in KEYWARD_EXPECT
                                         (status KEYWARD_STATUS, default 503: a gateway key's
                                         dead_keys_status)

KEYWARD_MODEL overrides the model (route) a scenario calls ("claude" / "gpt").
"""
import json
import os
import sys
import time

try:  # newer SDKs use httpx2, older ones httpx; both have the same client API
    import httpx2 as httpx
except ImportError:
    import httpx

URL = os.environ["KEYWARD_URL"]
KEY = os.environ["KEYWARD_KEY"]


def model(kind):
    return os.environ.get("KEYWARD_MODEL", "claude" if kind == "anthropic" else "gpt")


def counting_client():
    seen = {"requests": 0}

    def count(_request):
        seen["requests"] += 1

    return httpx.Client(event_hooks={"request": [count]}, timeout=120), seen


def done(ok, **details):
    print(json.dumps({"ok": ok, **details}))
    sys.exit(0 if ok else 1)


def anthropic_client(http_client=None, max_retries=2):
    import anthropic

    return anthropic.Anthropic(base_url=URL, api_key=KEY, http_client=http_client, max_retries=max_retries)


def openai_client(http_client=None, max_retries=2):
    import openai

    return openai.OpenAI(base_url=URL + "/v1", api_key=KEY, http_client=http_client, max_retries=max_retries)


def anthropic_ok():
    c = anthropic_client()
    msg = c.messages.create(model="claude", max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    text = "".join(b.text for b in msg.content if b.type == "text")
    with c.messages.stream(model="claude", max_tokens=16, messages=[{"role": "user", "content": "hi"}]) as s:
        streamed = "".join(s.text_stream)
        final = s.get_final_message()
    done(bool(text) and bool(streamed) and final.stop_reason == "end_turn", text=text, streamed=streamed, stop=final.stop_reason)


def openai_ok():
    c = openai_client()
    r = c.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "hi"}])
    text = r.choices[0].message.content
    parts = []
    finish = None
    for chunk in c.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "hi"}], stream=True):
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    done(bool(text) and bool("".join(parts)) and finish == "stop", text=text, streamed="".join(parts), finish=finish)


def exhausted(kind):
    http, seen = counting_client()
    t = time.time()
    try:
        if kind == "anthropic":
            import anthropic

            anthropic_client(http).messages.create(model="claude", max_tokens=16, messages=[{"role": "user", "content": "hi"}])
            done(False, error="no exception")
        else:
            import openai

            openai_client(http).chat.completions.create(model="gpt", messages=[{"role": "user", "content": "hi"}])
            done(False, error="no exception")
    except Exception as e:  # the SDK's own exception type is checked below
        sdk = __import__(kind)
        name = type(e).__name__
        status = getattr(e, "status_code", None)
        message = str(e)
        # The SDK's usual server-error type (InternalServerError, or ServiceUnavailableError
        # in newer SDKs), raised after exactly one attempt: x-should-retry: false honoured.
        ok = isinstance(e, sdk.APIStatusError) and status == 503 and seen["requests"] == 1 and "exhausted" in message
        done(ok, exception=name, status=status, attempts=seen["requests"], seconds=round(time.time() - t, 2), message=message[:300])


def transient(kind):
    http, seen = counting_client()
    t = time.time()
    if kind == "anthropic":
        r = anthropic_client(http, max_retries=3).messages.create(model=model(kind), max_tokens=16, messages=[{"role": "user", "content": "hi"}])
        ok = r.stop_reason == "end_turn"
    else:
        r = openai_client(http, max_retries=3).chat.completions.create(model=model(kind), messages=[{"role": "user", "content": "hi"}])
        ok = r.choices[0].finish_reason == "stop"
    done(ok and seen["requests"] >= 2, attempts=seen["requests"], seconds=round(time.time() - t, 2))


def revoked(kind):
    """Every key revoked: one attempt with the SDK's default retries, a 503 (or the gateway
    key's dead_keys_status, KEYWARD_STATUS) naming them all."""
    expect = [c for c in os.environ.get("KEYWARD_EXPECT", "").split(",") if c]
    http, seen = counting_client()
    client = anthropic_client(http) if kind == "anthropic" else openai_client(http)
    t = time.time()  # the call alone, not the SDK's import
    try:
        if kind == "anthropic":
            client.messages.create(model=model(kind), max_tokens=16, messages=[{"role": "user", "content": "hi"}])
        else:
            client.chat.completions.create(model=model(kind), messages=[{"role": "user", "content": "hi"}])
        done(False, error="no exception", attempts=seen["requests"])
    except Exception as e:  # the SDK's own exception type is checked below
        sdk = __import__(kind)
        status = getattr(e, "status_code", None)
        message = str(e)
        missing = [c for c in expect if c not in message]
        want = int(os.environ.get("KEYWARD_STATUS", "503"))
        ok = isinstance(e, sdk.APIStatusError) and status == want and seen["requests"] == 1 and bool(expect) and not missing
        response = getattr(e, "response", None)
        timing = response.headers.get("server-timing") if response is not None else None
        done(ok, exception=type(e).__name__, status=status, attempts=seen["requests"], seconds=round(time.time() - t, 2), gateway=timing, missing=missing, message=message[:600])


SCENARIOS = {
    "anthropic_ok": anthropic_ok,
    "openai_ok": openai_ok,
    "anthropic_exhausted": lambda: exhausted("anthropic"),
    "openai_exhausted": lambda: exhausted("openai"),
    "anthropic_transient": lambda: transient("anthropic"),
    "openai_transient": lambda: transient("openai"),
    "anthropic_revoked": lambda: revoked("anthropic"),
    "openai_revoked": lambda: revoked("openai"),
}

if __name__ == "__main__":
    SCENARIOS[sys.argv[1]]()
