'use strict';
// usage: node origin.js PORT LOGFILE   -> prints "ready\n" on stdout once listening on 127.0.0.1:PORT
const http = require('http');
const fs = require('fs');
const [port, logfile] = process.argv.slice(2);
const fd = fs.openSync(logfile, 'a');
function hostsOf(req) {                       // every raw Host header value, in order
  const out = [];
  for (let i = 0; i < req.rawHeaders.length; i += 2)
    if (req.rawHeaders[i].toLowerCase() === 'host') out.push(req.rawHeaders[i + 1]);
  return out;
}
function log(event, req, extra) {
  const hosts = hostsOf(req);
  const rec = Object.assign({
    server: 'node', event, method: req.method, target: req.url,
    host: hosts.length ? hosts[0] : null, hosts, version: req.httpVersion,
    content_length: req.headers['content-length'] ?? null,
    transfer_encoding: req.headers['transfer-encoding'] ?? null,
    conn: req.socket._diffId,
  }, extra || {});
  fs.writeSync(fd, JSON.stringify(rec) + '\n');
}
let connSeq = 0;
const server = http.createServer({
  insecureHTTPParser: true,   // documented option in v20 (lenient llhttp flags)
  requireHostHeader: false,   // v20 default is true (400 for HTTP/1.1 without Host)
  maxHeaderSize: 65536,       // default 16 KiB; match nginx's 64k buffers
  keepAliveTimeout: 30000,
});
server.on('connection', (s) => { s._diffId = ++connSeq; });
server.on('request', (req, res) => {
  let n = 0, logged = false;
  const done = (extra) => { if (!logged) { logged = true; log('request', req, extra); } };
  req.on('data', (c) => { n += c.length; });
  // body parse errors / client aborts: still log once (handler ran), flagged with body_error
  req.on('error', (e) => done({ body_len: n, body_error: e.code || String(e) }));
  req.on('close', () => { if (!req.complete) done({ body_len: n, body_error: 'incomplete' }); });
  req.on('end', () => {
    done({ body_len: n, body_error: null });
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': '3' });
    res.end('ok\n');
  });
  req.resume();
});
function tunnelish(event) {
  return (req, socket, head) => {
    log(event, req, { head_len: head.length });
    socket.on('error', () => {});
    socket.end('HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n');
  };
}
server.on('connect', tunnelish('connect'));
server.on('upgrade', tunnelish('upgrade'));
server.on('clientError', (err, socket) => {   // NOT logged to LOGFILE (handler never ran)
  process.stderr.write(`clientError ${err.code} ${JSON.stringify(String(err.rawPacket || ''))}\n`);
  if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
  else socket.destroy();
});
server.listen(Number(port), '127.0.0.1', () => process.stdout.write('ready\n'));
