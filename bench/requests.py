#!/usr/bin/env python3
"""Sends N sequential non-streaming requests over one keep-alive connection.

Usage: requests.py URL N KEY. Exits non-zero if any answer is not 200.
"""
import http.client
import json
import sys
from urllib.parse import urlparse

url, n, key = sys.argv[1], int(sys.argv[2]), sys.argv[3]
u = urlparse(url)
body = json.dumps({"model": "claude", "max_tokens": 16,
                   "messages": [{"role": "user", "content": "Say hello."}]})
conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
for i in range(n):
    conn.request("POST", u.path, body=body, headers={
        "content-type": "application/json", "x-api-key": key, "anthropic-version": "2023-06-01"})
    r = conn.getresponse()
    r.read()
    if r.status != 200:
        sys.exit(f"request {i}: status {r.status}")
