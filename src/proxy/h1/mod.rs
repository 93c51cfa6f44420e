//! The HTTP/1.x data path: every request on a client connection is parsed,
//! decided (keep-alive and pipelined ones included) and either forwarded or
//! answered with the block page.
//!
//! Forwarding moves the client's own bytes: the request head goes upstream
//! as it arrived unless a hop-by-hop header has to go (RFC 9110 §7.6.1) or
//! an absolute-form target becomes origin-form; bodies are relayed as they
//! come, their end found by `Content-Length` or by scanning the chunked
//! framing (never re-encoded). The response comes back the same way. One
//! task per client connection, which holds one upstream connection while it
//! lives (taken from and given back to a per-listener idle pool): no
//! per-request channel hop, no per-request allocation on the allowed path.
//! Upgrades (`101`) and `CONNECT` 2xx become byte tunnels.
//!
//! Files: `conn` (a client connection: next request, forward, respond,
//! tunnels, lingering close), `head` (pure: request and response heads,
//! framing, hop-by-hop rewrite, `plan_pure`), `relay` (bodies and response
//! heads on the wire), `answer` (icpgate's own answers: refusals, the
//! block page), `pool` (idle upstream connections).

mod answer;
mod conn;
mod head;
mod pool;
mod relay;

pub use conn::serve;
pub use head::{plan_pure, Pure};
pub use pool::{UpKey, UpPool};
