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
  anthropic_stream / openai_stream       one streamed answer read with the SDK's own stream
                                         accumulation: its text must be KEYWARD_EXPECT_TEXT and,
                                         when KEYWARD_EXPECT_TOOL is set (a JSON object), it must
                                         end with exactly one complete tool call with those
                                         arguments (a continued stream reads as one answer)
  anthropic_broken / openai_broken       a stream that ends with Keyward's in-band error: the
                                         SDK raises its own error type, whose message reads as
                                         a closed stream ("stream closed"), the transient
                                         wording agents retry

  anthropic_xlate_tools / openai_xlate_tools
                                         a tool-calling conversation, whole and streamed,
                                         that switches wire family mid-way: the primary
                                         (KEYWARD_PRIMARY_KEY at the sim KEYWARD_SIM_URL) is
                                         overloaded, then recovered; the fallback speaks the
                                         other family; the SDK's parsed objects are checked

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


WEATHER = {"city": "Paris", "days": 2}


def sim_set(kind):
    """Sets the primary's behaviour at the sim (overloaded / ok)."""
    url = os.environ["KEYWARD_SIM_URL"] + "/_sim/keys/" + os.environ["KEYWARD_PRIMARY_KEY"]
    httpx.post(url, json={"kind": kind}, timeout=10).raise_for_status()


def served_by(raw):
    return (raw.headers.get("x-keyward-target") or "").split("/")[0]


def until_served_by(endpoint, call):
    """Calls `call()` (a raw response) until `endpoint` answers (the recovered primary's
    short cooldown ends); bounded."""
    deadline = time.time() + 20
    while True:
        raw = call()
        if served_by(raw) == endpoint or time.time() > deadline:
            return raw
        time.sleep(0.2)


def anthropic_xlate_tools():
    c = anthropic_client()
    tools = [{"name": "weather", "description": "The weather in a city",
              "input_schema": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]}}]
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    checks = {}
    sim_set("overloaded")
    raw = c.messages.with_raw_response.create(model="claude", max_tokens=100, tools=tools, messages=ask)
    msg = raw.parse()
    call = next(b for b in msg.content if b.type == "tool_use")
    checks["turn1_whole"] = served_by(raw) == "openai" and msg.stop_reason == "tool_use" and call.name == "weather" and call.input == WEATHER
    with c.messages.stream(model="claude", max_tokens=100, tools=tools, messages=ask) as s:
        final = s.get_final_message()
    scall = next(b for b in final.content if b.type == "tool_use")
    checks["turn1_stream"] = final.stop_reason == "tool_use" and scall.name == "weather" and scall.input == WEATHER
    history = ask + [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in msg.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny, 21C"}]},
    ]
    sim_set("ok")
    raw = until_served_by("anthropic", lambda: c.messages.with_raw_response.create(model="claude", max_tokens=100, tools=tools, messages=history))
    turn2 = raw.parse()
    checks["turn2_whole"] = served_by(raw) == "anthropic" and turn2.stop_reason == "end_turn" and turn2.content[0].text == "The tool said: sunny, 21C"
    sim_set("overloaded")
    with c.messages.stream(model="claude", max_tokens=100, tools=tools, messages=history) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    checks["turn2_stream"] = text == "The tool said: sunny, 21C" and final.stop_reason == "end_turn" and final.usage.output_tokens > 0
    sim_set("ok")
    done(all(checks.values()), checks=checks, call_id=call.id)


def openai_xlate_tools():
    c = openai_client()
    tools = [{"type": "function", "function": {"name": "weather", "description": "The weather in a city",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]}}}]
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    checks = {}
    sim_set("overloaded")
    raw = c.chat.completions.with_raw_response.create(model="gpt", tools=tools, messages=ask)
    r = raw.parse()
    call = r.choices[0].message.tool_calls[0]
    checks["turn1_whole"] = served_by(raw) == "anthropic" and r.choices[0].finish_reason == "tool_calls" and call.function.name == "weather" and json.loads(call.function.arguments) == WEATHER
    names, args, finish = [], {}, None
    for chunk in c.chat.completions.create(model="gpt", tools=tools, messages=ask, stream=True, stream_options={"include_usage": True}):
        for ch in chunk.choices:
            for tc in ch.delta.tool_calls or []:
                if tc.function and tc.function.name:
                    names.append(tc.function.name)
                args[tc.index] = args.get(tc.index, "") + ((tc.function.arguments or "") if tc.function else "")
            finish = ch.finish_reason or finish
    checks["turn1_stream"] = names == ["weather"] and json.loads(args[0]) == WEATHER and finish == "tool_calls"
    history = ask + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump(exclude_none=True)]},
        {"role": "tool", "tool_call_id": call.id, "content": "rain"},
    ]
    sim_set("ok")
    raw = until_served_by("openai", lambda: c.chat.completions.with_raw_response.create(model="gpt", tools=tools, messages=history))
    turn2 = raw.parse()
    checks["turn2_whole"] = served_by(raw) == "openai" and turn2.choices[0].message.content == "The tool said: rain"
    sim_set("overloaded")
    parts, usage = [], None
    for chunk in c.chat.completions.create(model="gpt", tools=tools, messages=history, stream=True, stream_options={"include_usage": True}):
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
        usage = chunk.usage or usage
    checks["turn2_stream"] = "".join(parts) == "The tool said: rain" and usage is not None and usage.completion_tokens > 0
    sim_set("ok")
    done(all(checks.values()), checks=checks, call_id=call.id)


def openai_responses_xlate():
    """The Responses API answered by an Anthropic fallback: a tool call and its result,
    whole and through the SDK's stream helper."""
    c = openai_client()
    tools = [{"type": "function", "name": "weather", "description": "The weather in a city",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]}}]
    checks = {}
    sim_set("overloaded")
    r = c.responses.create(model="gpt", input="Weather in Paris?", tools=tools)
    call = next(i for i in r.output if i.type == "function_call")
    checks["call_whole"] = r.status == "completed" and call.name == "weather" and json.loads(call.arguments) == WEATHER
    with c.responses.stream(model="gpt", input="Weather in Paris?", tools=tools) as s:
        final = s.get_final_response()
    scall = next(i for i in final.output if i.type == "function_call")
    checks["call_stream"] = scall.name == "weather" and json.loads(scall.arguments) == WEATHER
    history = [
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": call.call_id, "name": "weather", "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
    ]
    r = c.responses.create(model="gpt", input=history, tools=tools)
    checks["answer_whole"] = r.output_text == "The tool said: sunny"
    with c.responses.stream(model="gpt", input=history, tools=tools) as s:
        deltas = "".join(e.delta for e in s if e.type == "response.output_text.delta")
        final = s.get_final_response()
    checks["answer_stream"] = deltas == "The tool said: sunny" and final.output_text == deltas and final.usage.output_tokens > 0
    sim_set("ok")
    done(all(checks.values()), checks=checks, call_id=call.call_id)


def expected_tool():
    raw = os.environ.get("KEYWARD_EXPECT_TOOL")
    return json.loads(raw) if raw else None


def anthropic_stream():
    c = anthropic_client(max_retries=0)
    with c.messages.stream(model=model("anthropic"), max_tokens=64, messages=[{"role": "user", "content": "hi"}]) as s:
        streamed = "".join(s.text_stream)
        final = s.get_final_message()
    text = "".join(b.text for b in final.content if b.type == "text")
    tools = [{"name": b.name, "input": b.input} for b in final.content if b.type == "tool_use"]
    want_tool = expected_tool()
    tools_ok = tools == ([{"name": "get_weather", "input": want_tool}] if want_tool else [])
    stop_ok = final.stop_reason == ("tool_use" if want_tool else "end_turn")
    ok = text == streamed == os.environ["KEYWARD_EXPECT_TEXT"] and tools_ok and stop_ok
    done(ok, text=text, tools=tools, stop=final.stop_reason, blocks=[b.type for b in final.content])


def openai_stream():
    c = openai_client(max_retries=0)
    parts, calls, finish, chunks = [], {}, None, 0
    stream = c.chat.completions.create(model=model("openai"), messages=[{"role": "user", "content": "hi"}], stream=True)
    for chunk in stream:
        chunks += 1
        for ch in chunk.choices:
            parts.append(ch.delta.content or "")
            for tc in ch.delta.tool_calls or []:
                call = calls.setdefault(tc.index, {"id": None, "name": None, "arguments": ""})
                call["id"] = tc.id or call["id"]
                if tc.function is not None:
                    call["name"] = tc.function.name or call["name"]
                    call["arguments"] += tc.function.arguments or ""
            finish = ch.finish_reason or finish
    text = "".join(parts)
    want_tool = expected_tool()
    try:
        tools = [{"name": v["name"], "input": json.loads(v["arguments"])} for v in calls.values()]
    except ValueError:
        done(False, error="a tool call's arguments are not JSON", calls=calls)
    tools_ok = tools == ([{"name": "get_weather", "input": want_tool}] if want_tool else [])
    finish_ok = finish == ("tool_calls" if want_tool else "stop")
    ok = text == os.environ["KEYWARD_EXPECT_TEXT"] and tools_ok and finish_ok
    done(ok, text=text, tools=tools, finish=finish, chunks=chunks)


def broken(kind):
    t = time.time()
    try:
        if kind == "anthropic":
            c = anthropic_client(max_retries=0)
            with c.messages.stream(model=model(kind), max_tokens=64, messages=[{"role": "user", "content": "hi"}]) as s:
                "".join(s.text_stream)
        else:
            c = openai_client(max_retries=0)
            for _ in c.chat.completions.create(model=model(kind), messages=[{"role": "user", "content": "hi"}], stream=True):
                pass
        done(False, error="no exception")
    except Exception as e:  # the SDK's own exception type is checked below
        sdk = __import__(kind)
        body = getattr(e, "body", None)
        if kind == "anthropic":
            err_type = (body or {}).get("error", {}).get("type") if isinstance(body, dict) else None
            ok = isinstance(e, sdk.APIStatusError) and err_type == "api_error"
        else:
            err_type = body.get("type") if isinstance(body, dict) else None
            ok = isinstance(e, sdk.APIError) and err_type == "server_error"
        message = str(e)
        ok = ok and "stream closed" in message and "retry" in message
        done(ok, exception=type(e).__name__, type=err_type, seconds=round(time.time() - t, 2), message=message[:400])


SCENARIOS = {
    "openai_responses_xlate": openai_responses_xlate,
    "anthropic_xlate_tools": anthropic_xlate_tools,
    "openai_xlate_tools": openai_xlate_tools,
    "anthropic_broken": lambda: broken("anthropic"),
    "openai_broken": lambda: broken("openai"),
    "anthropic_stream": anthropic_stream,
    "openai_stream": openai_stream,
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
