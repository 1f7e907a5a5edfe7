"""A loopback HTTP server that answers from a script and records every request.

Unit tests of the client use it instead of patching the client: retries, redirects and
headers then go through the real requests/urllib3 stack.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

#: A scripted answer: (status, headers, body). Body dicts are sent as JSON; the string
#: "DROP" closes the connection without answering; a callable is called with the handler and
#: its return value sent; an iterator of bytes is sent piece by piece as it yields (a trickle),
#: after a Content-Length of the "Claim-Length" header (or none: the connection closes at the end).
DROP = "DROP"
#: The token the ``server`` fixture (conftest.py) puts in SYNTHESIZE_API_KEY.
SCRIPTED_TOKEN = "tok-CLIENT-test-7f3a"


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict
    body: bytes


@dataclass
class ScriptedServer:
    script: dict = field(default_factory=dict)  # (method, path) -> list of answers (last one repeats)
    requests: list = field(default_factory=list)

    def answer(self, method, path, *answers):
        self.script[(method, path)] = list(answers)

    def count(self, method=None, path=None):
        return sum(
            1 for r in self.requests if (method is None or r.method == method) and (path is None or r.path == path)
        )

    def _next(self, method, path):
        answers = self.script.get((method, path.split("?")[0]))
        if not answers:
            return (404, {}, {"error": "not scripted"})
        return answers.pop(0) if len(answers) > 1 else answers[0]


def start(server_state: ScriptedServer, host: str = "127.0.0.1"):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _handle(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            server_state.requests.append(Recorded(self.command, self.path, dict(self.headers), body))
            status, headers, payload = server_state._next(self.command, self.path)
            if payload == DROP:
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if callable(payload):
                payload = payload(self)
            if isinstance(payload, Iterator):
                self._stream(status, dict(headers), payload)
                return
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            headers = dict(headers)
            # "Claim-Length" announces more bytes than are sent: a truncated body
            length = headers.pop("Claim-Length", str(len(data)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", length)
            self.end_headers()
            self.wfile.write(data)
            if length != str(len(data)):
                self.close_connection = True

        def _stream(self, status, headers, pieces):
            self.send_response(status)
            length = headers.pop("Claim-Length", None)
            for key, value in headers.items():
                self.send_header(key, value)
            if length is not None:
                self.send_header("Content-Length", length)
            self.end_headers()
            self.close_connection = True
            try:
                for piece in pieces:
                    self.wfile.write(piece)
                    self.wfile.flush()
            except OSError:
                pass  # the client gave up

        do_GET = do_POST = _handle

    class Server(ThreadingHTTPServer):
        def handle_error(self, request, client_address):
            # A client that hung up (a refused download, a test's deliberate cut) is not news.
            if not isinstance(sys.exc_info()[1], ConnectionError):
                super().handle_error(request, client_address)

    httpd = Server((host, 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    return httpd, f"http://{host}:{httpd.server_address[1]}"
