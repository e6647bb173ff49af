#!/usr/bin/env python3
"""An HTTP proxy in front of an S3 server or a catalog that answers matching requests with an
error, as S3 (503 SlowDown, 403 AccessDenied) or a catalog (429, 5xx) does, or answers them
late, and forwards everything else unchanged. It fails the first N matching requests
(--fail N), or every matching request for SECONDS from the first one on (--fail-for SECONDS:
an outage longer than a retry budget), or forwards every matching request after SECONDS
(--delay SECONDS: a slow catalog).

Prints the port it listens on (127.0.0.1) as its first stdout line, then one line per request
it failed, `injected <status> <method> <path>`, or delayed, `delaying <method> <path>` when it
arrives and `released <method> <path>` once its answer is sent.

Usage: flaky_s3.py --upstream http://127.0.0.1:15000 --fail 5 --method PUT --path-prefix /bucket/deltas/
       flaky_s3.py --upstream http://127.0.0.1:8111 --fail-for 20 --status 429 --method POST
       flaky_s3.py --upstream http://127.0.0.1:8111 --delay 30 --method POST --path-regex '/tables/[^/]+$'
"""

import argparse
import http.client
import json
import re
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-connection", "proxy-authorization", "proxy-authenticate"}

ERROR_BODY = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>ServiceUnavailable</Code>'
              b'<Message>injected by flaky_s3.py</Message></Error>')


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstream", required=True)
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--fail", type=int, help="how many matching requests fail")
    mode.add_argument("--fail-for", type=float, help="seconds of failures from the first match")
    mode.add_argument("--delay", type=float, help="seconds each matching request is held")
    ap.add_argument("--status", type=int, default=503)
    ap.add_argument("--method", default="PUT", help="an HTTP method, or ANY")
    ap.add_argument("--path-prefix", default="/")
    ap.add_argument("--path-regex", default=None, help="matching paths also match this")
    args = ap.parse_args()
    path_regex = re.compile(args.path_regex) if args.path_regex else None
    upstream = urllib.parse.urlsplit(args.upstream)
    lock = threading.Lock()
    left = [args.fail]
    outage_ends = [None]

    def should_fail():
        with lock:
            if args.fail is not None:
                if left[0] > 0:
                    left[0] -= 1
                    return True
                return False
            if outage_ends[0] is None:
                outage_ends[0] = time.monotonic() + args.fail_for
            return time.monotonic() < outage_ends[0]

    if args.status == 503:
        error_body, error_type = ERROR_BODY, "application/xml"
    elif args.status == 403:
        error_body = ERROR_BODY.replace(b"ServiceUnavailable", b"AccessDenied")
        error_type = "application/xml"
    else:
        error_body = json.dumps({"error": {"message": "injected by flaky_s3.py",
                                           "type": "ServiceFailureException",
                                           "code": args.status}}).encode()
        error_type = "application/json"

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_):
            pass

        def body(self):
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))

        def handle_any(self):
            data = self.body()
            matches = (args.method in ("ANY", self.command)
                       and self.path.startswith(args.path_prefix)
                       and (path_regex is None or path_regex.search(self.path)))
            if matches and args.delay is not None:
                print(f"delaying {self.command} {self.path}", flush=True)
                time.sleep(args.delay)
                self.forward(data)
                print(f"released {self.command} {self.path}", flush=True)
                return
            if matches and should_fail():
                print(f"injected {args.status} {self.command} {self.path}", flush=True)
                self.send_response(args.status)
                self.send_header("Content-Type", error_type)
                if args.status == 429:
                    # How AWS's JSON APIs (S3 Tables) name a throttling answer.
                    self.send_header("x-amzn-ErrorType", "TooManyRequestsException")
                self.send_header("Content-Length", str(len(error_body)))
                self.end_headers()
                self.wfile.write(error_body)
                return
            self.forward(data)

        def forward(self, data):
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            headers["Content-Length"] = str(len(data))
            conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=120)
            try:
                conn.request(self.command, self.path, body=data, headers=headers)
                resp = conn.getresponse()
                payload = resp.read()
                self.send_response(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                        self.send_header(k, v)
                # A HEAD answer keeps the length of the object it describes.
                length = resp.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)
            finally:
                conn.close()

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
