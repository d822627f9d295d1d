"""The example web process: a standard-library HTTP server on $PORT with / and /healthz."""
import http.server
import os
import signal
import sys
import threading

INSTANCE = os.environ.get("FORMATION_INSTANCE", "web")
REQUESTS = 0
LOCK = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        global REQUESTS
        with LOCK:
            REQUESTS += 1
        if self.path == "/healthz":
            body, ctype = b"ok\n", "text/plain"
        elif self.path == "/metrics":
            body = (f"# HELP example_requests_total Requests served.\n"
                    f"# TYPE example_requests_total counter\n"
                    f"example_requests_total {REQUESTS}\n").encode()
            ctype = "text/plain; version=0.0.4"
        elif self.path == "/":
            body, ctype = f"Hello from {INSTANCE}\n".encode(), "text/plain"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args: object) -> None:
        print(f"{self.address_string()} {fmt % args}", flush=True)


def main() -> None:
    port = int(os.environ.get("PORT", "5000"))
    server = http.server.ThreadingHTTPServer(("0.0.0.0", port), Handler)
    server.daemon_threads = False  # so server_close() below answers requests in flight
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"{INSTANCE} listening on port {port}", flush=True)
    server.serve_forever()  # until SIGTERM: no new connection is accepted after it
    server.server_close()
    print(f"{INSTANCE} stopped", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
