#!/usr/bin/env python3
"""usage: python3 origin.py PORT LOGFILE  -> prints "ready" on stdout once listening on 127.0.0.1:PORT"""
import json, re, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, LOGFILE = int(sys.argv[1]), sys.argv[2]
_log = open(LOGFILE, "a", encoding="utf-8")
_lock = threading.Lock()

class BadBody(Exception):
    pass

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "origin-py"
    sys_version = ""

    def __getattr__(self, name):
        # Any method an application could define a handler for (a `def
        # do_<METHOD>`: an identifier) -> one handler. http.server itself
        # accepts any bytes as a method and answers 501 when no handler
        # exists; a method with NUL or other bytes no `def` can name is
        # answered 501 here too, as by every real http.server application.
        if re.fullmatch(r"do_[A-Za-z_][A-Za-z0-9_]*", name):
            return self._handle
        raise AttributeError(name)

    def log_message(self, fmt, *args):      # keep stdout/stderr quiet
        pass

    def _read_chunked(self):
        n = 0
        while True:
            line = self.rfile.readline(65537)
            if not line:
                raise BadBody("eof in chunk size")
            size = line.split(b";", 1)[0].strip()
            try:
                size = int(size, 16)
            except ValueError:
                raise BadBody("bad chunk size %r" % line)
            if size == 0:
                while True:                  # trailers until empty line
                    t = self.rfile.readline(65537)
                    if t in (b"\r\n", b"\n", b""):
                        return n
            data = self.rfile.read(size)
            if len(data) != size:
                raise BadBody("eof in chunk data")
            n += size
            if self.rfile.readline(65537) not in (b"\r\n", b"\n"):
                raise BadBody("missing CRLF after chunk")

    def _handle(self):
        te = self.headers.get("Transfer-Encoding")
        cl = self.headers.get("Content-Length")
        body_len, err = 0, None
        try:
            if te is not None:
                if te.split(",")[-1].strip().lower() == "chunked":
                    body_len = self._read_chunked()
                else:
                    raise BadBody("non-chunked transfer-encoding")
            elif cl is not None:
                if not cl.strip().isdigit():
                    raise BadBody("bad content-length")
                want = int(cl)
                body_len = len(self.rfile.read(want)) if want else 0
                if body_len != want:
                    raise BadBody("eof in body (%d/%d)" % (body_len, want))
        except BadBody as e:
            err = str(e)
        hosts = self.headers.get_all("Host") or []
        words = self.requestline.split()      # raw target (self.path collapses leading //)
        rec = {"server": "python", "event": "request", "method": self.command,
               "target": words[1] if len(words) > 1 else None,
               "path": self.path, "requestline": self.requestline,
               "host": hosts[0] if hosts else None, "hosts": hosts,
               "version": self.request_version, "content_length": cl,
               "transfer_encoding": te, "body_len": body_len, "body_error": err,
               "conn": id(self.connection)}
        with _lock:
            _log.write(json.dumps(rec) + "\n")
            _log.flush()
        if err:
            self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", "3")
        if err:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(b"ok\n")

class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

srv = Server(("127.0.0.1", PORT), Handler)
print("ready", flush=True)
srv.serve_forever()
