#!/usr/bin/env python3
"""Time from exec to the first served request.

    startup.py DIR PORT KEY MODEL -- KEYWARD serve --config keyward.toml

Starts the command in DIR, sends the same Anthropic request every 2 ms until one answers
200, prints the milliseconds from exec to that answer, then stops the process (SIGTERM).
"""
import http.client
import json
import subprocess
import sys
import time

d, port, key, model = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
cmd = sys.argv[sys.argv.index("--") + 1:]
body = json.dumps({"model": model, "max_tokens": 16,
                   "messages": [{"role": "user", "content": "Say hello."}]})
t0 = time.monotonic()
p = subprocess.Popen(cmd, cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    while True:
        if p.poll() is not None:
            sys.exit(f"keyward exited with {p.returncode} before serving")
        if time.monotonic() - t0 > 60:
            sys.exit("no answer within 60 s")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("POST", "/v1/messages", body=body, headers={
                "content-type": "application/json", "x-api-key": key,
                "anthropic-version": "2023-06-01"})
            r = c.getresponse()
            r.read()
            c.close()
            if r.status == 200:
                print(f"{(time.monotonic() - t0) * 1000:.1f}")
                break
        except OSError:
            pass
        time.sleep(0.002)
finally:
    p.terminate()
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
