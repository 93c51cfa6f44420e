//! The data path (docs/data-path.md), one module per phase:
//!
//! - `listen`: listening sockets, accept, shedding when out of descriptors;
//! - `conn`: a connection's path from accept to classification, tunnels,
//!   server-first protocols, passthrough;
//! - `tls`: the ClientHello, its decision, the block actions;
//! - `h1` (with `chunked`): every HTTP/1 request, decided and forwarded;
//! - `udp`: QUIC flows;
//! - `http`: the block page as an HTTP answer; `pipe`: byte copying;
//! - `upstream`, `origdst`, `proxy_protocol`, `client`, `prefixed`: sockets
//!   and addresses;
//! - `ctx`: what the phases share (state, connection facts, counting).

pub mod chunked;
pub mod client;
pub mod conn;
pub mod ctx;
pub mod h1;
pub mod http;
pub mod listen;
pub mod origdst;
pub mod pipe;
pub mod prefixed;
pub mod proxy_protocol;
pub mod tls;
pub mod udp;
pub mod upstream;

pub use conn::{handle, MAX_TUNNEL_DEPTH};
pub use ctx::{record, registrable_of, ConnInfo, ListenerCtx, OwnedBlock, Shared};
