//! QUIC client Initial inspection (RFC 9000, RFC 9001, RFC 9369): the
//! ClientHello — and so the SNI — of a QUIC connection, read from the
//! client's first datagrams.
//!
//! Initial packets are protected with keys that anyone can derive from the
//! client's Destination Connection ID, so a middlebox can read them:
//! [`parse_long_header`] finds the packets of a datagram (coalesced packets
//! included), [`open_packet`] removes header protection and decrypts an
//! Initial into a caller-provided buffer, [`frames`] walks its frames, and
//! [`Crypto`] reassembles the CRYPTO stream (any order, overlaps checked)
//! up to a limit. [`Flow`] puts them together for one UDP flow, and
//! [`close_packet`] builds the server Initial that refuses a connection.
//!
//! Nothing here is a full QUIC stack: only what the client sends before the
//! server has answered, which is all the proxy has to decide on.

mod keys;

pub use keys::{Keys, Side};

use crate::sniff::tls;

/// Longest connection ID of QUIC v1 and v2 (RFC 9000 §17.2).
pub const MAX_CID_LEN: usize = 20;

/// Shortest Destination Connection ID of a client's first Initial
/// (RFC 9000 §7.2).
pub const MIN_INITIAL_DCID_LEN: usize = 8;

/// Smallest UDP payload that may carry a client Initial (RFC 9000 §14.1: a
/// server discards Initial packets in smaller datagrams).
pub const MIN_INITIAL_DATAGRAM: usize = 1200;

/// Default bound of the CRYPTO stream [`Flow`] reassembles (same as the TCP
/// path's [`tls::MAX_HELLO`]).
pub const MAX_CRYPTO: usize = tls::MAX_HELLO;

/// The error code of the CONNECTION_CLOSE that [`close_packet`] sends:
/// CRYPTO_ERROR carrying the TLS alert `unrecognized_name` (0x0100 + 112,
/// RFC 9001 §4.8) — what the TCP path sends as a TLS alert
/// (`block::TLS_ALERT_UNRECOGNIZED_NAME`), so both transports refuse a name
/// the same way.
pub const CLOSE_ERROR_CODE: u64 = 0x0100 + 112;

const TAG_LEN: usize = 16;
const SAMPLE_LEN: usize = 16;
/// Largest value of a variable-length integer (RFC 9000 §16).
const VARINT_MAX: u64 = (1 << 62) - 1;

const FRAME_PADDING: u64 = 0x00;
const FRAME_PING: u64 = 0x01;
const FRAME_ACK: u64 = 0x02;
const FRAME_ACK_ECN: u64 = 0x03;
const FRAME_CRYPTO: u64 = 0x06;
const FRAME_CONNECTION_CLOSE: u64 = 0x1c;

/// A QUIC version whose Initial packets can be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// RFC 9000, 0x00000001.
    V1,
    /// RFC 9369, 0x6b3343cf.
    V2,
}

impl Version {
    /// The version field on the wire.
    pub fn wire(self) -> u32 {
        match self {
            Version::V1 => 0x0000_0001,
            Version::V2 => 0x6b33_43cf,
        }
    }

    pub fn from_wire(v: u32) -> Option<Version> {
        match v {
            0x0000_0001 => Some(Version::V1),
            0x6b33_43cf => Some(Version::V2),
            _ => None,
        }
    }

    /// The two-bit Long Packet Type of an Initial (RFC 9369 §3.2 permutes
    /// the v1 values).
    fn initial_bits(self) -> u8 {
        match self {
            Version::V1 => 0b00,
            Version::V2 => 0b01,
        }
    }

    fn packet_type(self, bits: u8) -> PacketType {
        match (self, bits & 3) {
            (Version::V1, 0b00) | (Version::V2, 0b01) => PacketType::Initial,
            (Version::V1, 0b01) | (Version::V2, 0b10) => PacketType::ZeroRtt,
            (Version::V1, 0b10) | (Version::V2, 0b11) => PacketType::Handshake,
            _ => PacketType::Retry,
        }
    }

    fn is_v2(self) -> bool {
        self == Version::V2
    }
}

/// The type of a long header packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    Initial,
    ZeroRtt,
    Handshake,
    Retry,
}

/// Why a datagram cannot be read, or a flow cannot be decided on (typed,
/// like [`tls::Invalid`]). Every error is final for a [`Flow`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuicError {
    /// Empty datagram, or a header or packet that runs past its end.
    Truncated,
    /// A short header packet (or a datagram that is not QUIC) where a long
    /// header packet must be.
    ShortHeader,
    /// A long header packet of a version that cannot be read (0 is Version
    /// Negotiation, which a client does not send).
    UnknownVersion(u32),
    /// A connection ID longer than 20 bytes.
    CidTooLong,
    /// A client's first Initial with a Destination Connection ID shorter
    /// than 8 bytes (RFC 9000 §7.2).
    CidTooShort,
    /// A client Initial in a datagram smaller than 1200 bytes (RFC 9000
    /// §14.1).
    SmallDatagram,
    /// An Initial that does not open with the keys of its connection ID.
    Decrypt,
    /// A frame type that an Initial packet may not carry (RFC 9000 §12.4).
    ForbiddenFrame(u64),
    /// Not well-formed: bad varint, frame past the payload, reserved bits
    /// set, no frames.
    Malformed(&'static str),
    /// CRYPTO data that disagrees with bytes already received at the same
    /// offset: the stream is ambiguous (R10, like two server names).
    CryptoConflict,
    /// CRYPTO data past the reassembly limit.
    CryptoTooLarge,
    /// A later client Initial of the flow with another Destination
    /// Connection ID than the first (RFC 9000 §7.2: it may change only once
    /// the server has answered, and here the server has not).
    DcidChanged,
    /// A later client Initial of the flow with another version.
    VersionChanged,
    /// The reassembled ClientHello is not one ([`tls::Invalid::TwoNames`]
    /// and [`tls::Invalid::TooLarge`] included).
    Tls(tls::Invalid),
    /// No client Initial seen yet (for [`Flow::close_packet`]).
    NoInitial,
    /// A packet that does not fit the room given (anti-amplification bound,
    /// or a scratch buffer shorter than the packet).
    NoRoom,
    /// The crypto provider has no QUIC keys for TLS_AES_128_GCM_SHA256
    /// (cannot happen with rustls' ring provider).
    Keys,
}

impl QuicError {
    /// More handshake than the limit (the TCP path's `too_long`).
    pub fn is_too_large(&self) -> bool {
        matches!(
            self,
            QuicError::CryptoTooLarge | QuicError::Tls(tls::Invalid::TooLarge)
        )
    }

    /// The flow says two different things (R10: ambiguous host).
    pub fn is_ambiguous(&self) -> bool {
        matches!(
            self,
            QuicError::CryptoConflict | QuicError::Tls(tls::Invalid::TwoNames)
        )
    }
}

impl std::fmt::Display for QuicError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QuicError::Truncated => f.write_str("truncated QUIC packet"),
            QuicError::ShortHeader => f.write_str("not a QUIC long header packet"),
            QuicError::UnknownVersion(v) => write!(f, "unknown QUIC version {v:#010x}"),
            QuicError::CidTooLong => f.write_str("connection ID longer than 20 bytes"),
            QuicError::CidTooShort => f.write_str("client Initial DCID shorter than 8 bytes"),
            QuicError::SmallDatagram => {
                f.write_str("client Initial in a datagram under 1200 bytes")
            }
            QuicError::Decrypt => f.write_str("Initial packet does not decrypt"),
            QuicError::ForbiddenFrame(t) => write!(f, "frame type {t:#x} in an Initial packet"),
            QuicError::Malformed(why) => f.write_str(why),
            QuicError::CryptoConflict => f.write_str("CRYPTO data contradicts earlier data"),
            QuicError::CryptoTooLarge => f.write_str("CRYPTO data past the limit"),
            QuicError::DcidChanged => f.write_str("client Initial with another DCID"),
            QuicError::VersionChanged => f.write_str("client Initial with another version"),
            QuicError::Tls(e) => write!(f, "ClientHello: {e}"),
            QuicError::NoInitial => f.write_str("no client Initial seen"),
            QuicError::NoRoom => f.write_str("packet does not fit"),
            QuicError::Keys => f.write_str("no QUIC keys for TLS_AES_128_GCM_SHA256"),
        }
    }
}

impl std::error::Error for QuicError {}

/// A cursor over bytes, for headers and frames.
struct Rd<'a> {
    b: &'a [u8],
    p: usize,
}

impl<'a> Rd<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.p..self.p.checked_add(n)?)?;
        self.p += n;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    /// A variable-length integer (RFC 9000 §16) and its encoded length.
    fn varint_len(&mut self) -> Option<(u64, usize)> {
        let first = *self.b.get(self.p)?;
        let n = 1usize << (first >> 6);
        let s = self.take(n)?;
        let mut v = u64::from(first & 0x3f);
        for &b in &s[1..] {
            v = (v << 8) | u64::from(b);
        }
        Some((v, n))
    }
    fn varint(&mut self) -> Option<u64> {
        self.varint_len().map(|(v, _)| v)
    }
    fn rest(&self) -> usize {
        self.b.len() - self.p
    }
}

fn put_varint(out: &mut Vec<u8>, v: u64) {
    if v < 1 << 6 {
        out.push(v as u8);
    } else if v < 1 << 14 {
        out.extend_from_slice(&(v as u16 | 0x4000).to_be_bytes());
    } else if v < 1 << 30 {
        out.extend_from_slice(&(v as u32 | 0x8000_0000).to_be_bytes());
    } else {
        out.extend_from_slice(&((v & VARINT_MAX) | 0xc000_0000_0000_0000).to_be_bytes());
    }
}

/// The long header of the first packet of `datagram`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LongHeader<'a> {
    /// The first byte as received (still header-protected for Initial,
    /// 0-RTT and Handshake packets).
    pub first: u8,
    pub version: Version,
    pub ty: PacketType,
    pub dcid: &'a [u8],
    pub scid: &'a [u8],
    /// The token of an Initial (empty otherwise).
    pub token: &'a [u8],
    /// Where the (protected) Packet Number field starts, from the start of
    /// the packet. For a Retry, `len`.
    pub pn_offset: usize,
    /// Length of this packet in the datagram: the next coalesced packet, if
    /// any, starts at `datagram[len..]`. A Retry takes the whole datagram.
    pub len: usize,
}

/// Read the long header of the packet at the start of `datagram`
/// (RFC 9000 §17.2). Only the header is checked; the payload is not
/// decrypted. The Fixed Bit is not checked (RFC 9287 lets a client clear
/// it).
pub fn parse_long_header(datagram: &[u8]) -> Result<LongHeader<'_>, QuicError> {
    let mut r = Rd { b: datagram, p: 0 };
    let first = r.u8().ok_or(QuicError::Truncated)?;
    if first & 0x80 == 0 {
        return Err(QuicError::ShortHeader);
    }
    let v = r.take(4).ok_or(QuicError::Truncated)?;
    let wire = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
    let version = Version::from_wire(wire).ok_or(QuicError::UnknownVersion(wire))?;
    let ty = version.packet_type(first >> 4);
    let mut cid = || -> Result<&[u8], QuicError> {
        let n = usize::from(r.u8().ok_or(QuicError::Truncated)?);
        if n > MAX_CID_LEN {
            return Err(QuicError::CidTooLong);
        }
        r.take(n).ok_or(QuicError::Truncated)
    };
    let dcid = cid()?;
    let scid = cid()?;
    if ty == PacketType::Retry {
        return Ok(LongHeader {
            first,
            version,
            ty,
            dcid,
            scid,
            token: &[],
            pn_offset: datagram.len(),
            len: datagram.len(),
        });
    }
    let mut token: &[u8] = &[];
    if ty == PacketType::Initial {
        let n = r.varint().ok_or(QuicError::Truncated)?;
        let n = usize::try_from(n).map_err(|_| QuicError::Truncated)?;
        token = r.take(n).ok_or(QuicError::Truncated)?;
    }
    let length = r.varint().ok_or(QuicError::Truncated)?;
    let length = usize::try_from(length).map_err(|_| QuicError::Truncated)?;
    let pn_offset = r.p;
    if length > r.rest() {
        return Err(QuicError::Truncated);
    }
    Ok(LongHeader {
        first,
        version,
        ty,
        dcid,
        scid,
        token,
        pn_offset,
        len: pn_offset + length,
    })
}

/// The Initial keys that protect `side`'s packets of the connection the
/// client opened with `client_dcid` (RFC 9001 §5.2, RFC 9369 §3.3):
/// `Side::Client` keys open what a client sends, `Side::Server` keys seal
/// what a server sends.
pub fn initial_keys(
    version: Version,
    client_dcid: &[u8],
    side: Side,
) -> Result<Box<Keys>, QuicError> {
    Keys::initial(version.is_v2(), client_dcid, side).map_err(|_| QuicError::Keys)
}

/// Does `datagram` open another connection than the allowed one whose
/// client chose `original_dcid`? True for a client Initial with another
/// Destination Connection ID that opens with the keys derived from that ID
/// (a new connection's first flight, or a client's answer to a Retry), in
/// any of the datagram's coalesced packets; true also for a datagram whose
/// coalesced packets carry different IDs (RFC 9000 §12.2: senders must not;
/// a server that does not ignore the later ones would take a packet no
/// decision was made on). A client's later Initials carry the server's
/// connection ID but the original keys, and retransmissions the original
/// ID: false for both, and for a short header packet. Allocates (keys, a
/// copy of the packet): only Initials with another ID get this far.
pub fn opens_other_connection(datagram: &[u8], original_dcid: &[u8]) -> bool {
    let Ok(first) = parse_long_header(datagram) else {
        return false;
    };
    let (mut rest, mut hdr) = (datagram, first);
    loop {
        if hdr.dcid != first.dcid {
            return true;
        }
        let packet = &rest[..hdr.len];
        if hdr.ty == PacketType::Initial && hdr.dcid != original_dcid && opens_alone(&hdr, packet) {
            return true;
        }
        rest = &rest[hdr.len..];
        match parse_long_header(rest) {
            Ok(h) if !rest.is_empty() => hdr = h,
            _ => return false,
        }
    }
}

/// Does this Initial open with the keys of its own Destination Connection ID?
fn opens_alone(hdr: &LongHeader<'_>, packet: &[u8]) -> bool {
    let Ok(keys) = initial_keys(hdr.version, hdr.dcid, Side::Client) else {
        return false;
    };
    let mut scratch = vec![0u8; packet.len()];
    open_packet(&keys, hdr, packet, &mut scratch, None).is_ok()
}

/// A decrypted packet.
#[derive(Debug, PartialEq, Eq)]
pub struct Opened<'b> {
    /// The first byte without header protection.
    pub first: u8,
    /// The full packet number.
    pub pn: u64,
    /// The decrypted frames.
    pub payload: &'b [u8],
}

/// The full packet number from its `len`-byte truncation (RFC 9000 §A.3).
fn decode_pn(largest: Option<u64>, truncated: u64, len: usize) -> u64 {
    let expected = largest.map_or(0, |l| l + 1);
    let win = 1u64 << (8 * len);
    let hwin = win / 2;
    let candidate = (expected & !(win - 1)) | truncated;
    if candidate + hwin <= expected && candidate < (1 << 62) - win {
        candidate + win
    } else if candidate > expected + hwin && candidate >= win {
        candidate - win
    } else {
        candidate
    }
}

/// Remove header protection from and decrypt the long header packet
/// `packet` (exactly `hdr.len` bytes, as [`parse_long_header`] found it),
/// with `keys` (`initial_keys(.., Side::Client)` for a client's packet).
/// The packet is copied into `scratch`, which must be at least as
/// long, and decrypted there: nothing is allocated. `largest_pn` is the
/// largest packet number opened so far in this packet number space.
pub fn open_packet<'b>(
    keys: &Keys,
    hdr: &LongHeader<'_>,
    packet: &[u8],
    scratch: &'b mut [u8],
    largest_pn: Option<u64>,
) -> Result<Opened<'b>, QuicError> {
    let len = packet.len();
    if hdr.ty == PacketType::Retry || len != hdr.len {
        return Err(QuicError::Malformed("not a protected long header packet"));
    }
    let pn_offset = hdr.pn_offset;
    // The sample starts 4 bytes after the start of the packet number
    // (RFC 9001 §5.4.2); the packet must hold it.
    let sample_at = pn_offset + 4;
    let Some(sample) = packet.get(sample_at..sample_at + SAMPLE_LEN) else {
        return Err(QuicError::Malformed(
            "packet too short for a header protection sample",
        ));
    };
    let mask = keys.mask(sample).map_err(|_| QuicError::Decrypt)?;
    let buf = scratch.get_mut(..len).ok_or(QuicError::NoRoom)?;
    buf.copy_from_slice(packet);
    // A long header: the low four bits of the first byte, then as many
    // packet number bytes as they say (RFC 9001 §5.4.1).
    buf[0] ^= mask[0] & 0x0f;
    let first = buf[0];
    let pn_len = usize::from(first & 3) + 1;
    let mut truncated = 0u64;
    for (b, m) in buf[pn_offset..pn_offset + pn_len]
        .iter_mut()
        .zip(&mask[1..])
    {
        *b ^= m;
        truncated = (truncated << 8) | u64::from(*b);
    }
    let pn = decode_pn(largest_pn, truncated, pn_len);
    let (header, payload) = buf.split_at_mut(pn_offset + pn_len);
    if payload.len() < TAG_LEN {
        return Err(QuicError::Malformed("packet shorter than its tag"));
    }
    let payload = keys
        .open(pn, header, payload)
        .map_err(|_| QuicError::Decrypt)?;
    // Reserved bits are checked once both protections are off (RFC 9000
    // §17.2).
    if first & 0x0c != 0 {
        return Err(QuicError::Malformed("reserved header bits set"));
    }
    if payload.is_empty() {
        return Err(QuicError::Malformed("packet without frames"));
    }
    Ok(Opened { first, pn, payload })
}

/// A frame of an Initial packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// One or more PADDING bytes.
    Padding,
    Ping,
    /// An ACK frame (contents skipped).
    Ack,
    Crypto {
        offset: u64,
        data: &'a [u8],
    },
    /// CONNECTION_CLOSE of type 0x1c (the only one allowed in Initial).
    ConnectionClose {
        code: u64,
        frame_type: u64,
        reason: &'a [u8],
    },
}

/// The frames of a decrypted Initial payload; stops after the first error.
pub fn frames(payload: &[u8]) -> Frames<'_> {
    Frames {
        r: Rd { b: payload, p: 0 },
        failed: false,
    }
}

/// Iterator of [`frames`].
pub struct Frames<'a> {
    r: Rd<'a>,
    failed: bool,
}

impl<'a> Frames<'a> {
    fn frame(&mut self) -> Result<Frame<'a>, QuicError> {
        const TRUNC: QuicError = QuicError::Malformed("frame runs past the payload");
        let r = &mut self.r;
        let (ty, n) = r.varint_len().ok_or(TRUNC)?;
        let minimal = match ty {
            0..=0x3f => 1,
            0x40..=0x3fff => 2,
            0x4000..=0x3fff_ffff => 4,
            _ => 8,
        };
        if n != minimal {
            // RFC 9000 §12.4: frame types use the shortest encoding.
            return Err(QuicError::Malformed("frame type not minimally encoded"));
        }
        match ty {
            FRAME_PADDING => {
                r.p += zeros(r.b.get(r.p..).unwrap_or(&[]));
                Ok(Frame::Padding)
            }
            FRAME_PING => Ok(Frame::Ping),
            FRAME_ACK | FRAME_ACK_ECN => {
                // Largest Acknowledged, ACK Delay, ACK Range Count, First
                // ACK Range; then (Gap, ACK Range Length) per further range,
                // each at least two bytes: the loop is bounded by the
                // payload, whatever the count says.
                r.varint().ok_or(TRUNC)?;
                r.varint().ok_or(TRUNC)?;
                let ranges = r.varint().ok_or(TRUNC)?;
                r.varint().ok_or(TRUNC)?;
                for _ in 0..ranges {
                    r.varint().ok_or(TRUNC)?;
                    r.varint().ok_or(TRUNC)?;
                }
                if ty == FRAME_ACK_ECN {
                    for _ in 0..3 {
                        r.varint().ok_or(TRUNC)?;
                    }
                }
                Ok(Frame::Ack)
            }
            FRAME_CRYPTO => {
                let offset = r.varint().ok_or(TRUNC)?;
                let len = r.varint().ok_or(TRUNC)?;
                if offset + len > VARINT_MAX {
                    return Err(QuicError::Malformed("CRYPTO frame past 2^62"));
                }
                let len = usize::try_from(len).map_err(|_| TRUNC)?;
                let data = r.take(len).ok_or(TRUNC)?;
                Ok(Frame::Crypto { offset, data })
            }
            FRAME_CONNECTION_CLOSE => {
                let code = r.varint().ok_or(TRUNC)?;
                let frame_type = r.varint().ok_or(TRUNC)?;
                let len = r.varint().ok_or(TRUNC)?;
                let len = usize::try_from(len).map_err(|_| TRUNC)?;
                let reason = r.take(len).ok_or(TRUNC)?;
                Ok(Frame::ConnectionClose {
                    code,
                    frame_type,
                    reason,
                })
            }
            other => Err(QuicError::ForbiddenFrame(other)),
        }
    }
}

/// How many zero bytes `b` starts with (PADDING runs are most of an
/// Initial): eight at a time.
fn zeros(b: &[u8]) -> usize {
    let words = b.chunks_exact(8);
    let tail = words.remainder();
    let mut n = 0;
    for w in words {
        let w = u64::from_le_bytes(w.try_into().unwrap_or([1; 8]));
        if w != 0 {
            return n + (w.trailing_zeros() / 8) as usize;
        }
        n += 8;
    }
    n + tail.iter().position(|&x| x != 0).unwrap_or(tail.len())
}

impl<'a> Iterator for Frames<'a> {
    type Item = Result<Frame<'a>, QuicError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.r.rest() == 0 {
            return None;
        }
        let f = self.frame();
        self.failed = f.is_err();
        Some(f)
    }
}

/// A bounded reassembler of the CRYPTO stream: pieces in any order, any
/// overlap; bytes received twice must agree. Memory grows with the highest
/// offset received, up to the limit (the bytes plus one bit per byte).
#[derive(Debug, Clone)]
pub struct Crypto {
    max: usize,
    buf: Vec<u8>,
    /// One bit per byte of `buf`: received.
    have: Vec<u64>,
    /// Length of the contiguous prefix.
    prefix: usize,
}

impl Crypto {
    /// A reassembler of the first `max` bytes of the stream.
    pub fn new(max: usize) -> Crypto {
        Crypto {
            max,
            buf: Vec::new(),
            have: Vec::new(),
            prefix: 0,
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Add `data` at `offset`. Past the limit: [`QuicError::CryptoTooLarge`];
    /// bytes that differ from ones already received at the same offset:
    /// [`QuicError::CryptoConflict`]. On an error nothing is added.
    pub fn insert(&mut self, offset: u64, data: &[u8]) -> Result<(), QuicError> {
        if data.is_empty() {
            return Ok(());
        }
        let start = usize::try_from(offset).map_err(|_| QuicError::CryptoTooLarge)?;
        let end = start
            .checked_add(data.len())
            .filter(|&e| e <= self.max)
            .ok_or(QuicError::CryptoTooLarge)?;
        let known = end.min(self.buf.len());
        if start < known && !self.agrees(start, &data[..known - start]) {
            return Err(QuicError::CryptoConflict);
        }
        if end > self.buf.len() {
            self.buf.resize(end, 0);
            self.have.resize(end.div_ceil(64), 0);
        }
        self.buf[start..end].copy_from_slice(data);
        for_words(start, end, |w, mask| self.have[w] |= mask);
        while self.prefix < self.buf.len() {
            let (w, bit) = (self.prefix / 64, self.prefix % 64);
            let run = (self.have[w] >> bit).trailing_ones() as usize;
            self.prefix += run;
            if run < 64 - bit {
                break;
            }
        }
        self.prefix = self.prefix.min(self.buf.len());
        Ok(())
    }

    /// Whether `data` matches the bytes already received in its range
    /// (which lies within `buf`), compared a 64-byte word of `have` at a
    /// time: whole runs at once.
    fn agrees(&self, start: usize, data: &[u8]) -> bool {
        let mut ok = true;
        for_words(start, start + data.len(), |w, mask| {
            let got = self.have[w] & mask;
            if got == 0 || !ok {
                return;
            }
            let base = w * 64;
            if got == mask {
                let lo = base + mask.trailing_zeros() as usize;
                let hi = base + 64 - mask.leading_zeros() as usize;
                ok = self.buf[lo..hi] == data[lo - start..hi - start];
                return;
            }
            let mut m = got;
            while m != 0 {
                let i = base + m.trailing_zeros() as usize;
                ok &= self.buf[i] == data[i - start];
                m &= m - 1;
            }
        });
        ok
    }

    /// The bytes received contiguously from offset 0.
    pub fn contiguous(&self) -> &[u8] {
        &self.buf[..self.prefix]
    }
}

/// Call `f(word, mask)` for each 64-bit word of a one-bit-per-byte map
/// that bytes `start..end` touch, `mask` the bits of those bytes.
fn for_words(start: usize, end: usize, mut f: impl FnMut(usize, u64)) {
    let mut i = start;
    while i < end {
        let (w, bit) = (i / 64, i % 64);
        let stop = ((w + 1) * 64).min(end);
        let span = stop - i;
        let ones = if span == 64 {
            u64::MAX
        } else {
            (1u64 << span) - 1
        };
        f(w, ones << bit);
        i = stop;
    }
}

/// A connection ID, copied.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Cid {
    buf: [u8; MAX_CID_LEN],
    len: u8,
}

impl Cid {
    /// A copy of `b`; over [`MAX_CID_LEN`] bytes is an error.
    pub fn new(b: &[u8]) -> Result<Cid, QuicError> {
        if b.len() > MAX_CID_LEN {
            return Err(QuicError::CidTooLong);
        }
        let mut buf = [0; MAX_CID_LEN];
        buf[..b.len()].copy_from_slice(b);
        Ok(Cid {
            buf,
            len: b.len() as u8,
        })
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for Cid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// What a flow says so far.
// `Hello` carries the SNI inline, as `tls::Parse::Found` does.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The ClientHello is not complete yet.
    NeedMore,
    /// The complete ClientHello.
    Hello(tls::Hello),
    /// The client closed the connection (CONNECTION_CLOSE) before its
    /// ClientHello was complete: nothing to decide on.
    Closed,
}

struct Conn {
    version: Version,
    dcid: Cid,
    scid: Cid,
    /// The keys of the client's Initials.
    keys: Box<Keys>,
}

/// The client side of one UDP flow, datagram by datagram, until its
/// ClientHello is complete. The first client Initial fixes the version, the
/// original DCID (the key of the Initial keys) and the client's SCID; later
/// Initials must agree (the server has not answered, so the client may not
/// change them). Packets other than Initials are skipped.
pub struct Flow {
    crypto: Crypto,
    conn: Option<Conn>,
    /// Decryption buffer, reused: it grows to the largest packet seen.
    scratch: Vec<u8>,
    largest_pn: Option<u64>,
    largest_datagram: usize,
    closed: bool,
    /// A final answer (a Hello or an error), repeated to later calls.
    done: Option<Result<Step, QuicError>>,
}

impl std::fmt::Debug for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flow")
            .field("version", &self.version())
            .field("dcid", &self.conn.as_ref().map(|c| c.dcid))
            .field("scid", &self.conn.as_ref().map(|c| c.scid))
            .field("crypto", &self.crypto.contiguous().len())
            .field("done", &self.done)
            .finish()
    }
}

impl Flow {
    /// A flow that reassembles at most `max_crypto` bytes of CRYPTO stream
    /// (e.g. [`MAX_CRYPTO`], or `[limits] max_sniff_bytes`); a ClientHello
    /// longer than that is `QuicError::Tls(Invalid::TooLarge)`.
    pub fn new(max_crypto: usize) -> Flow {
        Flow {
            crypto: Crypto::new(max_crypto),
            conn: None,
            scratch: Vec::new(),
            largest_pn: None,
            largest_datagram: 0,
            closed: false,
            done: None,
        }
    }

    /// The version of the first client Initial.
    pub fn version(&self) -> Option<Version> {
        self.conn.as_ref().map(|c| c.version)
    }

    /// The DCID of the first client Initial.
    pub fn original_dcid(&self) -> Option<&[u8]> {
        self.conn.as_ref().map(|c| c.dcid.as_bytes())
    }

    /// The client's SCID.
    pub fn client_scid(&self) -> Option<&[u8]> {
        self.conn.as_ref().map(|c| c.scid.as_bytes())
    }

    /// Read one datagram from the client. `Ok(Step::NeedMore)` until the
    /// ClientHello is complete; then `Hello` (or `Closed`). A `Hello`, a
    /// `Closed` or an error is final: later calls return it again.
    ///
    /// The first packet of the datagram must be a long header packet of a
    /// known version; a later long header packet with another DCID makes
    /// the datagram malformed (RFC 9000 §12.2: senders must not coalesce
    /// them, and the datagram is forwarded whole if allowed: a server that
    /// does not ignore the later packet would take an undecided
    /// connection); a short header packet or unreadable bytes end the
    /// datagram (some clients pad datagrams with zeros after the last
    /// packet).
    pub fn feed(&mut self, datagram: &[u8]) -> Result<Step, QuicError> {
        if let Some(done) = self.done {
            return done;
        }
        let r = self.read(datagram);
        if r != Ok(Step::NeedMore) {
            self.done = Some(r);
        }
        r
    }

    fn read(&mut self, datagram: &[u8]) -> Result<Step, QuicError> {
        self.largest_datagram = self.largest_datagram.max(datagram.len());
        let first = parse_long_header(datagram)?;
        let mut rest = datagram;
        let mut hdr = first;
        loop {
            if hdr.dcid != first.dcid {
                return Err(QuicError::Malformed(
                    "coalesced packets with different connection IDs",
                ));
            }
            if hdr.ty == PacketType::Initial {
                self.initial(&hdr, &rest[..hdr.len], datagram.len())?;
            }
            rest = &rest[hdr.len..];
            if rest.is_empty() {
                break;
            }
            match parse_long_header(rest) {
                Ok(h) => hdr = h,
                Err(_) => break,
            }
        }
        match tls::parse_handshake(self.crypto.contiguous(), self.crypto.max()) {
            tls::Parse::Found(h) => Ok(Step::Hello(h)),
            tls::Parse::Invalid(e) => Err(QuicError::Tls(e)),
            tls::Parse::NeedMore if self.closed => Ok(Step::Closed),
            tls::Parse::NeedMore => Ok(Step::NeedMore),
        }
    }

    fn initial(
        &mut self,
        hdr: &LongHeader<'_>,
        packet: &[u8],
        datagram_len: usize,
    ) -> Result<(), QuicError> {
        if datagram_len < MIN_INITIAL_DATAGRAM {
            return Err(QuicError::SmallDatagram);
        }
        let conn = match &mut self.conn {
            Some(c) => {
                if c.version != hdr.version {
                    return Err(QuicError::VersionChanged);
                }
                if c.dcid.as_bytes() != hdr.dcid {
                    return Err(QuicError::DcidChanged);
                }
                c
            }
            None => {
                if hdr.dcid.len() < MIN_INITIAL_DCID_LEN {
                    return Err(QuicError::CidTooShort);
                }
                let keys = initial_keys(hdr.version, hdr.dcid, Side::Client)?;
                self.conn.insert(Conn {
                    version: hdr.version,
                    dcid: Cid::new(hdr.dcid)?,
                    scid: Cid::new(hdr.scid)?,
                    keys,
                })
            }
        };
        if self.scratch.len() < packet.len() {
            self.scratch.resize(packet.len(), 0);
        }
        let opened = open_packet(&conn.keys, hdr, packet, &mut self.scratch, self.largest_pn)?;
        self.largest_pn = Some(self.largest_pn.map_or(opened.pn, |l| l.max(opened.pn)));
        // An error is final for the flow: what was taken in before it does
        // not matter.
        for f in frames(opened.payload) {
            match f? {
                Frame::Crypto { offset, data } => self.crypto.insert(offset, data)?,
                Frame::ConnectionClose { .. } => self.closed = true,
                Frame::Padding | Frame::Ping | Frame::Ack => {}
            }
        }
        Ok(())
    }

    /// [`close_packet`] for this flow, bounded by the largest datagram the
    /// client sent.
    pub fn close_packet(&self, out: &mut Vec<u8>) -> Result<(), QuicError> {
        let c = self.conn.as_ref().ok_or(QuicError::NoInitial)?;
        // The server's keys, derived only now: an allowed flow never
        // needs them.
        let server = initial_keys(c.version, c.dcid.as_bytes(), Side::Server)?;
        close_with(
            &server,
            c.version,
            c.dcid.as_bytes(),
            c.scid.as_bytes(),
            self.largest_datagram,
            out,
        )
    }
}

/// Append to `out` a protected long header Initial packet (packet number
/// `pn`, 1-byte encoding if it fits) carrying `plain` frames; PADDING is
/// added if the payload is too short for the header protection sample.
/// The packet must fit in `max_len` bytes, or nothing is appended.
#[allow(clippy::too_many_arguments)]
fn seal_initial(
    keys: &Keys,
    version: Version,
    dcid: &[u8],
    scid: &[u8],
    token: &[u8],
    pn: u32,
    plain: &[u8],
    max_len: usize,
    out: &mut Vec<u8>,
) -> Result<(), QuicError> {
    if dcid.len() > MAX_CID_LEN || scid.len() > MAX_CID_LEN {
        return Err(QuicError::CidTooLong);
    }
    let pn_len: usize = match pn {
        0..=0xff => 1,
        0x100..=0xffff => 2,
        0x1_0000..=0xff_ffff => 3,
        _ => 4,
    };
    // The sample is 16 bytes from 4 bytes past the packet number start.
    let padding = (4usize.saturating_sub(pn_len)).saturating_sub(plain.len());
    let length = pn_len + plain.len() + padding + TAG_LEN;
    if length >= 1 << 14 {
        return Err(QuicError::NoRoom);
    }
    let token_len_len = if token.len() < 64 { 1 } else { 2 };
    let total = 1 + 4 + 1 + dcid.len() + 1 + scid.len() + token_len_len + token.len() + 2 + length;
    if total > max_len || token.len() >= 1 << 14 {
        return Err(QuicError::NoRoom);
    }
    let start = out.len();
    out.reserve(total);
    out.push(0xc0 | (version.initial_bits() << 4) | (pn_len as u8 - 1));
    out.extend_from_slice(&version.wire().to_be_bytes());
    out.push(dcid.len() as u8);
    out.extend_from_slice(dcid);
    out.push(scid.len() as u8);
    out.extend_from_slice(scid);
    put_varint(out, token.len() as u64);
    out.extend_from_slice(token);
    out.extend_from_slice(&(length as u16 | 0x4000).to_be_bytes());
    let pn_offset = out.len() - start;
    out.extend_from_slice(&pn.to_be_bytes()[4 - pn_len..]);
    let payload_at = out.len();
    out.extend_from_slice(plain);
    out.resize(out.len() + padding, 0);
    let (header, payload) = out[start..].split_at_mut(payload_at - start);
    let Ok(tag) = keys.seal(u64::from(pn), header, payload) else {
        out.truncate(start);
        return Err(QuicError::Keys);
    };
    out.extend_from_slice(tag.as_ref());
    let packet = &mut out[start..];
    let Ok(mask) = keys.mask(&packet[pn_offset + 4..pn_offset + 4 + SAMPLE_LEN]) else {
        out.truncate(start);
        return Err(QuicError::Keys);
    };
    packet[0] ^= mask[0] & 0x0f;
    for (b, m) in packet[pn_offset..pn_offset + pn_len]
        .iter_mut()
        .zip(&mask[1..])
    {
        *b ^= m;
    }
    debug_assert_eq!(out.len() - start, total);
    Ok(())
}

/// Append to `out` a server Initial that closes the connection the client
/// opened with `client_dcid` (its original DCID) and `client_scid`: a
/// CONNECTION_CLOSE of type 0x1c with [`CLOSE_ERROR_CODE`] (frame type
/// CRYPTO, no reason phrase: Initials are readable by anyone on the path),
/// protected with the server's Initial keys; DCID = the client's SCID, SCID
/// = the client's original DCID, packet number 0.
///
/// CONNECTION_CLOSE is not ack-eliciting, so the datagram need not be
/// padded to 1200 bytes (RFC 9000 §14.1); it is padded only as far as
/// header protection needs (a few bytes). It is refused
/// ([`QuicError::NoRoom`], nothing appended) if longer than `max_len` — pass
/// the size of the client's datagram, so that the answer never exceeds it
/// (anti-amplification, RFC 9000 §8.1); it is under 100 bytes.
pub fn close_packet(
    version: Version,
    client_dcid: &[u8],
    client_scid: &[u8],
    max_len: usize,
    out: &mut Vec<u8>,
) -> Result<(), QuicError> {
    let keys = initial_keys(version, client_dcid, Side::Server)?;
    close_with(&keys, version, client_dcid, client_scid, max_len, out)
}

/// [`close_packet`] with the server's initial keys already derived.
fn close_with(
    local: &Keys,
    version: Version,
    client_dcid: &[u8],
    client_scid: &[u8],
    max_len: usize,
    out: &mut Vec<u8>,
) -> Result<(), QuicError> {
    let mut frame = Vec::with_capacity(8);
    for v in [FRAME_CONNECTION_CLOSE, CLOSE_ERROR_CODE, FRAME_CRYPTO, 0] {
        put_varint(&mut frame, v);
    }
    seal_initial(
        local,
        version,
        client_scid,
        client_dcid,
        &[],
        0,
        &frame,
        max_len,
        out,
    )
}

/// RFC 9001 Appendix A.2: a client Initial (QUIC v1, SNI `example.com`,
/// 1,200 bytes), as hex. For benchmarks and fuzz seeds.
#[doc(hidden)]
pub const RFC9001_A2_CLIENT_INITIAL: &str = concat!(
    "c000000001088394c8f03e5157080000449e7b9aec34d1b1c98dd7689fb8ec11",
    "d242b123dc9bd8bab936b47d92ec356c0bab7df5976d27cd449f63300099f399",
    "1c260ec4c60d17b31f8429157bb35a1282a643a8d2262cad67500cadb8e7378c",
    "8eb7539ec4d4905fed1bee1fc8aafba17c750e2c7ace01e6005f80fcb7df6212",
    "30c83711b39343fa028cea7f7fb5ff89eac2308249a02252155e2347b63d58c5",
    "457afd84d05dfffdb20392844ae812154682e9cf012f9021a6f0be17ddd0c208",
    "4dce25ff9b06cde535d0f920a2db1bf362c23e596d11a4f5a6cf3948838a3aec",
    "4e15daf8500a6ef69ec4e3feb6b1d98e610ac8b7ec3faf6ad760b7bad1db4ba3",
    "485e8a94dc250ae3fdb41ed15fb6a8e5eba0fc3dd60bc8e30c5c4287e53805db",
    "059ae0648db2f64264ed5e39be2e20d82df566da8dd5998ccabdae053060ae6c",
    "7b4378e846d29f37ed7b4ea9ec5d82e7961b7f25a9323851f681d582363aa5f8",
    "9937f5a67258bf63ad6f1a0b1d96dbd4faddfcefc5266ba6611722395c906556",
    "be52afe3f565636ad1b17d508b73d8743eeb524be22b3dcbc2c7468d54119c74",
    "68449a13d8e3b95811a198f3491de3e7fe942b330407abf82a4ed7c1b311663a",
    "c69890f4157015853d91e923037c227a33cdd5ec281ca3f79c44546b9d90ca00",
    "f064c99e3dd97911d39fe9c5d0b23a229a234cb36186c4819e8b9c5927726632",
    "291d6a418211cc2962e20fe47feb3edf330f2c603a9d48c0fcb5699dbfe58964",
    "25c5bac4aee82e57a85aaf4e2513e4f05796b07ba2ee47d80506f8d2c25e50fd",
    "14de71e6c418559302f939b0e1abd576f279c4b2e0feb85c1f28ff18f58891ff",
    "ef132eef2fa09346aee33c28eb130ff28f5b766953334113211996d20011a198",
    "e3fc433f9f2541010ae17c1bf202580f6047472fb36857fe843b19f5984009dd",
    "c324044e847a4f4a0ab34f719595de37252d6235365e9b84392b061085349d73",
    "203a4a13e96f5432ec0fd4a1ee65accdd5e3904df54c1da510b0ff20dcc0c77f",
    "cb2c0e0eb605cb0504db87632cf3d8b4dae6e705769d1de354270123cb11450e",
    "fc60ac47683d7b8d0f811365565fd98c4c8eb936bcab8d069fc33bd801b03ade",
    "a2e1fbc5aa463d08ca19896d2bf59a071b851e6c239052172f296bfb5e724047",
    "90a2181014f3b94a4e97d117b438130368cc39dbb2d198065ae3986547926cd2",
    "162f40a29f0c3c8745c0f50fba3852e566d44575c29d39a03f0cda721984b6f4",
    "40591f355e12d439ff150aab7613499dbd49adabc8676eef023b15b65bfc5ca0",
    "6948109f23f350db82123535eb8a7433bdabcb909271a6ecbcb58b936a88cd4e",
    "8f2e6ff5800175f113253d8fa9ca8885c2f552e657dc603f252e1a8e308f76f0",
    "be79e2fb8f5d5fbbe2e30ecadd220723c8c0aea8078cdfcb3868263ff8f09400",
    "54da48781893a7e49ad5aff4af300cd804a6b6279ab3ff3afb64491c85194aab",
    "760d58a606654f9f4400e8b38591356fbf6425aca26dc85244259ff2b19c41b9",
    "f96f3ca9ec1dde434da7d2d392b905ddf3d1f9af93d1af5950bd493f5aa731b4",
    "056df31bd267b6b90a079831aaf579be0a39013137aac6d404f518cfd4684064",
    "7e78bfe706ca4cf5e9c5453e9f7cfd2b8b4c8d169a44e55c88d4a9a7f9474241",
    "e221af44860018ab0856972e194cd934",
);

/// [`RFC9001_A2_CLIENT_INITIAL`] as bytes.
#[doc(hidden)]
pub fn rfc9001_a2_client_initial() -> Vec<u8> {
    let s = RFC9001_A2_CLIENT_INITIAL.as_bytes();
    s.chunks(2)
        .filter_map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len() / 2)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
            .collect()
    }

    const DCID: &str = "8394c8f03e515708";

    /// RFC 9001 §A.2: the client Initial, 1200 bytes, protected.
    const A2_V1: &str = RFC9001_A2_CLIENT_INITIAL;

    /// RFC 9369 §A.2: the same client Initial in QUIC v2.
    const A2_V2: &str = concat!(
        "d76b3343cf088394c8f03e5157080000449ea0c95e82ffe67b6abcdb4298b485",
        "dd04de806071bf03dceebfa162e75d6c96058bdbfb127cdfcbf903388e99ad04",
        "9f9a3dd4425ae4d0992cfff18ecf0fdb5a842d09747052f17ac2053d21f57c5d",
        "250f2c4f0e0202b70785b7946e992e58a59ac52dea6774d4f03b55545243cf1a",
        "12834e3f249a78d395e0d18f4d766004f1a2674802a747eaa901c3f10cda5500",
        "cb9122faa9f1df66c392079a1b40f0de1c6054196a11cbea40afb6ef5253cd68",
        "18f6625efce3b6def6ba7e4b37a40f7732e093daa7d52190935b8da58976ff33",
        "12ae50b187c1433c0f028edcc4c2838b6a9bfc226ca4b4530e7a4ccee1bfa2a3",
        "d396ae5a3fb512384b2fdd851f784a65e03f2c4fbe11a53c7777c023462239dd",
        "6f7521a3f6c7d5dd3ec9b3f233773d4b46d23cc375eb198c63301c21801f6520",
        "bcfb7966fc49b393f0061d974a2706df8c4a9449f11d7f3d2dcbb90c6b877045",
        "636e7c0c0fe4eb0f697545460c806910d2c355f1d253bc9d2452aaa549e27a1f",
        "ac7cf4ed77f322e8fa894b6a83810a34b361901751a6f5eb65a0326e07de7c12",
        "16ccce2d0193f958bb3850a833f7ae432b65bc5a53975c155aa4bcb4f7b2c4e5",
        "4df16efaf6ddea94e2c50b4cd1dfe06017e0e9d02900cffe1935e0491d77ffb4",
        "fdf85290fdd893d577b1131a610ef6a5c32b2ee0293617a37cbb08b847741c3b",
        "8017c25ca9052ca1079d8b78aebd47876d330a30f6a8c6d61dd1ab5589329de7",
        "14d19d61370f8149748c72f132f0fc99f34d766c6938597040d8f9e2bb522ff9",
        "9c63a344d6a2ae8aa8e51b7b90a4a806105fcbca31506c446151adfeceb51b91",
        "abfe43960977c87471cf9ad4074d30e10d6a7f03c63bd5d4317f68ff325ba3bd",
        "80bf4dc8b52a0ba031758022eb025cdd770b44d6d6cf0670f4e990b22347a7db",
        "848265e3e5eb72dfe8299ad7481a408322cac55786e52f633b2fb6b614eaed18",
        "d703dd84045a274ae8bfa73379661388d6991fe39b0d93debb41700b41f90a15",
        "c4d526250235ddcd6776fc77bc97e7a417ebcb31600d01e57f32162a8560cacc",
        "7e27a096d37a1a86952ec71bd89a3e9a30a2a26162984d7740f81193e8238e61",
        "f6b5b984d4d3dfa033c1bb7e4f0037febf406d91c0dccf32acf423cfa1e70710",
        "10d3f270121b493ce85054ef58bada42310138fe081adb04e2bd901f2f13458b",
        "3d6758158197107c14ebb193230cd1157380aa79cae1374a7c1e5bbcb80ee23e",
        "06ebfde206bfb0fcbc0edc4ebec309661bdd908d532eb0c6adc38b7ca7331dce",
        "8dfce39ab71e7c32d318d136b6100671a1ae6a6600e3899f31f0eed19e3417d1",
        "34b90c9058f8632c798d4490da4987307cba922d61c39805d072b589bd52fdf1",
        "e86215c2d54e6670e07383a27bbffb5addf47d66aa85a0c6f9f32e59d85a44dd",
        "5d3b22dc2be80919b490437ae4f36a0ae55edf1d0b5cb4e9a3ecabee93dfc6e3",
        "8d209d0fa6536d27a5d6fbb17641cde27525d61093f1b28072d111b2b4ae5f89",
        "d5974ee12e5cf7d5da4d6a31123041f33e61407e76cffcdcfd7e19ba58cf4b53",
        "6f4c4938ae79324dc402894b44faf8afbab35282ab659d13c93f70412e85cb19",
        "9a37ddec600545473cfb5a05e08d0b209973b2172b4d21fb69745a262ccde96b",
        "a18b2faa745b6fe189cf772a9f84cbfc",
    );

    /// RFC 9001 §A.2 (and RFC 9369 §A.2): the CRYPTO frame of the
    /// unprotected payload, a ClientHello for example.com; then PADDING.
    const A2_CRYPTO_FRAME: &str = concat!(
        "060040f1010000ed0303ebf8fa56f12939b9584a3896472ec40bb863cfd3e868",
        "04fe3a47f06a2b69484c00000413011302010000c000000010000e00000b6578",
        "616d706c652e636f6dff01000100000a00080006001d00170018001000070005",
        "04616c706e000500050100000000003300260024001d00209370b2c9caa47fba",
        "baf4559fedba753de171fa71f50f1ce15d43e994ec74d748002b000302030400",
        "0d0010000e0403050306030203080408050806002d00020101001c0002400100",
        "3900320408ffffffffffffffff05048000ffff07048000ffff08011001048000",
        "75300901100f088394c8f03e51570806048000ffff",
    );

    /// RFC 9001 §A.3: the server Initial (ACK + CRYPTO with a ServerHello).
    const A3_V1: &str = concat!(
        "cf000000010008f067a5502a4262b5004075c0d95a482cd0991cd25b0aac406a",
        "5816b6394100f37a1c69797554780bb38cc5a99f5ede4cf73c3ec2493a1839b3",
        "dbcba3f6ea46c5b7684df3548e7ddeb9c3bf9c73cc3f3bded74b562bfb19fb84",
        "022f8ef4cdd93795d77d06edbb7aaf2f58891850abbdca3d20398c276456cbc4",
        "2158407dd074ee",
    );

    /// RFC 9369 §A.3: the v2 server Initial (as in rustls' own tests).
    const A3_V2: &str = concat!(
        "dc6b3343cf0008f067a5502a4262b5004075d92faaf16f05d8a4398c47089698",
        "baeea26b91eb761d9b89237bbf87263017915358230035f7fd3945d88965cf17",
        "f9af6e16886c61bfc703106fbaf3cb4cfa52382dd16a393e42757507698075b2",
        "c984c707f0a0812d8cd5a6881eaf21ceda98f4bd23f6fe1a3e2c43edd9ce7ca8",
        "4bed8521e2e140",
    );

    /// The ClientHello handshake message of the A.2 vectors.
    fn a2_hello() -> Vec<u8> {
        unhex(A2_CRYPTO_FRAME)[4..].to_vec()
    }

    fn client_keys(version: Version, dcid: &[u8]) -> Box<Keys> {
        initial_keys(version, dcid, Side::Client).unwrap()
    }

    fn crypto_frame(offset: u64, data: &[u8]) -> Vec<u8> {
        let mut f = vec![0x06];
        put_varint(&mut f, offset);
        put_varint(&mut f, data.len() as u64);
        f.extend_from_slice(data);
        f
    }

    /// A client Initial from `plain` frames, padded to a 1200-byte datagram
    /// unless `pad` is false.
    fn client_initial(
        version: Version,
        dcid: &[u8],
        scid: &[u8],
        pn: u32,
        plain: &[u8],
        pad: bool,
    ) -> Vec<u8> {
        let keys = client_keys(version, dcid);
        let overhead = 1 + 4 + 1 + dcid.len() + 1 + scid.len() + 1 + 2 + 1 + TAG_LEN;
        let mut p = plain.to_vec();
        if pad && p.len() + overhead < 1200 {
            p.resize(1200 - overhead, 0);
        }
        let mut out = Vec::new();
        seal_initial(
            &keys,
            version,
            dcid,
            scid,
            &[],
            pn,
            &p,
            usize::MAX,
            &mut out,
        )
        .unwrap();
        out
    }

    fn sni(step: Result<Step, QuicError>) -> String {
        match step {
            Ok(Step::Hello(h)) => h.sni.unwrap().as_str().unwrap().to_owned(),
            other => panic!("{other:?}"),
        }
    }

    /// The header protection mask for `sample`, as RFC 9001 prints it.
    fn mask(keys: &Keys, sample: &str) -> Vec<u8> {
        keys.mask(&unhex(sample)).unwrap().to_vec()
    }

    #[test]
    fn initial_keys_rfc9001_a1_and_rfc9369() {
        let dcid = unhex(DCID);
        // A.1/A.2: the client hp key, by the mask of the A.2 sample.
        let c = client_keys(Version::V1, &dcid);
        assert_eq!(
            mask(&c, "d1b1c98dd7689fb8ec11d242b123dc9b"),
            unhex("437b9aec36")
        );
        // A.3: the server hp key.
        let s = initial_keys(Version::V1, &dcid, Side::Server).unwrap();
        assert_eq!(
            mask(&s, "2cd0991cd25b0aac406a5816b6394100"),
            unhex("2ec0d8356a")
        );
        // RFC 9369 A.2: the v2 client hp key.
        let c2 = client_keys(Version::V2, &dcid);
        assert_eq!(
            mask(&c2, "ffe67b6abcdb4298b485dd04de806071"),
            unhex("94a0c95e80")
        );
    }

    /// The keys agree with rustls' (`rustls::quic::Keys::initial`) for
    /// many connection IDs, both versions, both sides: a packet sealed by
    /// one opens with the other, and header protection masks match.
    #[test]
    fn initial_keys_agree_with_rustls() {
        let suite = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
            .tls13()
            .and_then(|s| s.quic_suite())
            .unwrap();
        for n in 0..64u8 {
            let dcid: Vec<u8> = (0..8 + n % 13).map(|i| i.wrapping_mul(31) ^ n).collect();
            for (version, rv) in [
                (Version::V1, rustls::quic::Version::V1),
                (Version::V2, rustls::quic::Version::V2),
            ] {
                let theirs = suite.keys(&dcid, rustls::Side::Client, rv);
                for (side, dir) in [
                    (Side::Client, &theirs.local),
                    (Side::Server, &theirs.remote),
                ] {
                    let ours = initial_keys(version, &dcid, side).unwrap();
                    let sample = [n; 16];
                    let mut first = 0xc3u8;
                    let mut pn = [0u8; 4];
                    dir.header
                        .encrypt_in_place(&sample, &mut first, &mut pn)
                        .unwrap();
                    let m = ours.mask(&sample).unwrap();
                    assert_eq!((first ^ 0xc3, pn), (m[0] & 0x0f, [m[1], m[2], m[3], m[4]]));
                    let header = [1u8, 2, 3];
                    let mut payload = vec![n; 40];
                    let tag = dir
                        .packet
                        .encrypt_in_place(u64::from(n), &header, &mut payload)
                        .unwrap();
                    payload.extend_from_slice(tag.as_ref());
                    let plain = ours.open(u64::from(n), &header, &mut payload).unwrap();
                    assert_eq!(plain, &vec![n; 40][..]);
                }
            }
        }
    }

    fn check_a2(hex: &str, version: Version) {
        let dg = unhex(hex);
        assert_eq!(dg.len(), 1200);
        let h = parse_long_header(&dg).unwrap();
        assert_eq!(h.version, version);
        assert_eq!(h.ty, PacketType::Initial);
        assert_eq!(h.dcid, &unhex(DCID)[..]);
        assert!(h.scid.is_empty() && h.token.is_empty());
        assert_eq!((h.pn_offset, h.len), (18, 1200));
        let keys = initial_keys(version, h.dcid, Side::Client).unwrap();
        let mut scratch = [0u8; 1500];
        let o = open_packet(&keys, &h, &dg, &mut scratch, None).unwrap();
        assert_eq!(o.pn, 2);
        assert_eq!(o.first & 0x0f, 0x03);
        assert_eq!(o.payload.len(), 1162);
        let frame = unhex(A2_CRYPTO_FRAME);
        assert_eq!(&o.payload[..frame.len()], &frame[..]);
        assert!(o.payload[frame.len()..].iter().all(|&b| b == 0));
        let fs: Vec<_> = frames(o.payload).map(Result::unwrap).collect();
        assert_eq!(
            fs,
            [
                Frame::Crypto {
                    offset: 0,
                    data: &frame[4..]
                },
                Frame::Padding
            ]
        );
        // A buffer shorter than the packet is refused, not overrun.
        assert_eq!(
            open_packet(&keys, &h, &dg, &mut scratch[..1199], None),
            Err(QuicError::NoRoom)
        );
        // One bit changed anywhere: does not open.
        for i in [0, 17, 18, 21, 22, 600, 1199] {
            let mut bad = dg.clone();
            bad[i] ^= 0x10;
            let Ok(h) = parse_long_header(&bad) else {
                continue;
            };
            assert!(
                open_packet(&keys, &h, &bad, &mut scratch, None).is_err(),
                "bit in {i}"
            );
        }
        // The flow: one datagram, the SNI.
        let mut flow = Flow::new(MAX_CRYPTO);
        assert_eq!(sni(flow.feed(&dg)), "example.com");
        assert_eq!(flow.version(), Some(version));
        assert_eq!(flow.original_dcid(), Some(&unhex(DCID)[..]));
        assert_eq!(flow.client_scid(), Some(&[][..]));
        // Final: the same answer again.
        assert_eq!(sni(flow.feed(&[])), "example.com");
    }

    #[test]
    fn rfc9001_a2_client_initial() {
        check_a2(A2_V1, Version::V1);
    }

    #[test]
    fn rfc9369_a2_client_initial_v2() {
        check_a2(A2_V2, Version::V2);
    }

    /// The server Initials of RFC 9001 A.3 and RFC 9369 A.3 open with the
    /// client-side keys; ACK and CRYPTO frames are read.
    #[test]
    fn server_initials_a3() {
        for (hex, version) in [(A3_V1, Version::V1), (A3_V2, Version::V2)] {
            let dg = unhex(hex);
            let h = parse_long_header(&dg).unwrap();
            assert_eq!(
                (h.version, h.ty, h.len),
                (version, PacketType::Initial, dg.len())
            );
            assert_eq!(h.scid, &unhex("f067a5502a4262b5")[..]);
            let keys = initial_keys(version, &unhex(DCID), Side::Server).unwrap();
            let mut scratch = vec![0u8; dg.len()];
            let o = open_packet(&keys, &h, &dg, &mut scratch, None).unwrap();
            assert_eq!(o.pn, 1);
            let fs: Vec<_> = frames(o.payload).map(Result::unwrap).collect();
            assert_eq!(fs.len(), 2);
            assert_eq!(fs[0], Frame::Ack);
            assert!(
                matches!(fs[1], Frame::Crypto { offset: 0, data } if data.len() == 90 && data[0] == 2)
            );
        }
    }

    #[test]
    fn parse_handshake_every_prefix() {
        let hello = a2_hello();
        for i in 0..hello.len() {
            assert_eq!(
                tls::parse_handshake(&hello[..i], MAX_CRYPTO),
                tls::Parse::NeedMore,
                "{i}"
            );
        }
        match tls::parse_handshake(&hello, MAX_CRYPTO) {
            tls::Parse::Found(h) => {
                assert_eq!(h.sni.unwrap().as_bytes(), b"example.com");
                assert_eq!(h.len, hello.len());
                assert!(!h.ech);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            tls::parse_handshake(&hello, hello.len() - 1),
            tls::Parse::Invalid(tls::Invalid::TooLarge)
        );
        assert!(matches!(
            tls::parse_handshake(&[2], MAX_CRYPTO),
            tls::Parse::Invalid(_)
        ));
        // The real ClientHellos of the TCP tests, without their record
        // header: the same answer as `tls::parse`.
        for rec in [
            &include_bytes!("../../../tests/fixtures/clienthello/chromium_pq.bin")[..],
            include_bytes!("../../../tests/fixtures/clienthello/curl.bin"),
            include_bytes!("../../../tests/fixtures/clienthello/openssl_nosni.bin"),
            include_bytes!("../../../tests/fixtures/clienthello/python.bin"),
        ] {
            let msg = &rec[5..];
            let (tls::Parse::Found(a), tls::Parse::Found(b)) =
                (tls::parse(rec), tls::parse_handshake(msg, MAX_CRYPTO))
            else {
                panic!("not found");
            };
            assert_eq!((a.sni, a.ech, b.len), (b.sni, b.ech, msg.len()));
            for i in (0..msg.len()).step_by(7) {
                assert_eq!(
                    tls::parse_handshake(&msg[..i], MAX_CRYPTO),
                    tls::Parse::NeedMore
                );
            }
        }
    }

    /// Every prefix of the CRYPTO stream, each in its own Initial: NeedMore
    /// until the last byte.
    #[test]
    fn flow_every_prefix_is_need_more() {
        let hello = a2_hello();
        let dcid = unhex(DCID);
        for i in 0..hello.len() {
            let mut flow = Flow::new(MAX_CRYPTO);
            let dg = client_initial(
                Version::V1,
                &dcid,
                b"",
                0,
                &crypto_frame(0, &hello[..i]),
                true,
            );
            assert_eq!(flow.feed(&dg), Ok(Step::NeedMore), "{i}");
            let rest = crypto_frame(i as u64, &hello[i..]);
            let dg = client_initial(Version::V1, &dcid, b"", 1, &rest, true);
            assert_eq!(sni(flow.feed(&dg)), "example.com", "{i}");
        }
    }

    /// A ClientHello over two Initials that arrive in reverse order; and
    /// both coalesced in one datagram with a 0-RTT packet and zeros after.
    #[test]
    fn split_hello_reordered_and_coalesced() {
        let hello = a2_hello();
        let dcid = unhex("0011223344556677889900");
        let scid = unhex("c0ffee");
        for version in [Version::V1, Version::V2] {
            let a = client_initial(
                version,
                &dcid,
                &scid,
                0,
                &crypto_frame(0, &hello[..100]),
                true,
            );
            let mut b_plain = vec![0x01]; // PING
            b_plain.extend(crypto_frame(150, &hello[150..]));
            b_plain.extend([0x02, 0x00, 0x00, 0x00, 0x00]); // ACK
            b_plain.extend(crypto_frame(90, &hello[90..160])); // overlaps both
            let b = client_initial(version, &dcid, &scid, 1, &b_plain, true);
            let mut flow = Flow::new(MAX_CRYPTO);
            assert_eq!(flow.feed(&b), Ok(Step::NeedMore));
            assert_eq!(sni(flow.feed(&a)), "example.com");
            assert_eq!(flow.client_scid(), Some(&scid[..]));

            // Coalesced: a (unpadded), a 0-RTT packet, b (unpadded), zeros.
            let a = client_initial(
                version,
                &dcid,
                &scid,
                0,
                &crypto_frame(0, &hello[..100]),
                false,
            );
            let b = client_initial(version, &dcid, &scid, 1, &b_plain, false);
            let mut zero_rtt = vec![0xc0 | (((version.initial_bits() + 1) & 3) << 4)];
            zero_rtt.extend(version.wire().to_be_bytes());
            zero_rtt.push(dcid.len() as u8);
            zero_rtt.extend(&dcid);
            zero_rtt.push(scid.len() as u8);
            zero_rtt.extend(&scid);
            zero_rtt.extend([0x40, 30]);
            zero_rtt.extend([0x5a; 30]);
            assert_eq!(
                parse_long_header(&zero_rtt).unwrap().ty,
                PacketType::ZeroRtt
            );
            let mut dg = [&a[..], &zero_rtt, &b].concat();
            dg.resize(1250, 0);
            let mut flow = Flow::new(MAX_CRYPTO);
            assert_eq!(sni(flow.feed(&dg)), "example.com");
            // An Initial with another DCID coalesced after the first
            // packet: the datagram is malformed (it would be forwarded
            // whole), and an allowed flow does not take it as its own.
            let other = client_initial(version, b"otherdcid", &scid, 0, &[0x1d, 0, 0, 0], false);
            let mut bad = [&a[..], &other, &b].concat();
            bad.resize(1250, 0);
            let mut flow = Flow::new(MAX_CRYPTO);
            assert!(matches!(flow.feed(&bad), Err(QuicError::Malformed(_))));
            assert!(opens_other_connection(&bad, &dcid));
            assert!(!opens_other_connection(&dg, &dcid));
            // Each packet's length takes the reader to the next.
            let h = parse_long_header(&dg).unwrap();
            assert_eq!(h.len, a.len());
            assert_eq!(parse_long_header(&dg[h.len..]).unwrap().len, zero_rtt.len());
        }
    }

    #[test]
    fn zero_runs() {
        for len in 0..40 {
            for first in 0..=len {
                let mut b = vec![0u8; len];
                if first < len {
                    b[first] = 7;
                }
                assert_eq!(zeros(&b), first, "len {len}");
            }
        }
    }

    #[test]
    fn crypto_reassembly() {
        let mut c = Crypto::new(16);
        c.insert(4, b"efgh").unwrap();
        assert_eq!(c.contiguous(), b"");
        c.insert(0, b"abc").unwrap();
        assert_eq!(c.contiguous(), b"abc");
        c.insert(2, b"cde").unwrap(); // agrees where it overlaps
        assert_eq!(c.contiguous(), b"abcdefgh");
        c.insert(0, b"").unwrap();
        assert_eq!(c.insert(6, b"gX"), Err(QuicError::CryptoConflict));
        assert_eq!(c.insert(0, b"Abc"), Err(QuicError::CryptoConflict));
        // Nothing of a refused piece is taken in.
        assert_eq!(
            c.insert(7, b"hijk\x00\x00\x00\x00\x00\x00"),
            Err(QuicError::CryptoTooLarge)
        );
        assert_eq!(c.insert(u64::MAX, b"x"), Err(QuicError::CryptoTooLarge));
        c.insert(8, b"ijklmnop").unwrap();
        assert_eq!(c.contiguous(), b"abcdefghijklmnop");
        assert_eq!(c.insert(16, b"q"), Err(QuicError::CryptoTooLarge));
        assert!(QuicError::CryptoConflict.is_ambiguous());
        // Byte by byte, in reverse.
        let mut c = Crypto::new(200);
        let data: Vec<u8> = (0..200).map(|i| i as u8).collect();
        for i in (1..200).rev() {
            c.insert(i as u64, &data[i..i + 1]).unwrap();
            assert!(c.contiguous().is_empty());
        }
        c.insert(0, &data[..1]).unwrap();
        assert_eq!(c.contiguous(), &data[..]);
    }

    proptest::proptest! {
        /// The word-at-a-time reassembler against a byte-at-a-time model:
        /// the same pieces (some altered) give the same answers and bytes.
        #[test]
        fn crypto_matches_a_byte_model(
            pieces in proptest::collection::vec((0usize..300, 0usize..140, proptest::option::of(0usize..140)), 1..40)
        ) {
            let stream: Vec<u8> = (0..512).map(|i| (i * 7 + 3) as u8).collect();
            let max = 320;
            let mut c = Crypto::new(max);
            let mut model: Vec<Option<u8>> = Vec::new();
            for (start, len, flip) in pieces {
                let mut piece = stream[start..start + len].to_vec();
                if let Some(f) = flip.filter(|&f| f < len) {
                    piece[f] ^= 0x5a;
                }
                let end = start + len;
                let want = if len == 0 {
                    Ok(())
                } else if end > max {
                    Err(QuicError::CryptoTooLarge)
                } else if piece.iter().enumerate().any(|(k, b)| {
                    model.get(start + k).copied().flatten().is_some_and(|m| m != *b)
                }) {
                    Err(QuicError::CryptoConflict)
                } else {
                    if model.len() < end {
                        model.resize(end, None);
                    }
                    for (k, b) in piece.iter().enumerate() {
                        model[start + k] = Some(*b);
                    }
                    Ok(())
                };
                proptest::prop_assert_eq!(c.insert(start as u64, &piece), want);
                let prefix: Vec<u8> = model.iter().map_while(|b| *b).collect();
                proptest::prop_assert_eq!(c.contiguous(), &prefix[..]);
            }
        }
    }

    #[test]
    fn flow_errors() {
        let hello = a2_hello();
        let dcid = unhex(DCID);
        let v1 = |pn, plain: &[u8]| client_initial(Version::V1, &dcid, b"", pn, plain, true);

        // Contradicting overlap across two packets: R10.
        let mut flow = Flow::new(MAX_CRYPTO);
        assert_eq!(
            flow.feed(&v1(0, &crypto_frame(0, &hello[..100]))),
            Ok(Step::NeedMore)
        );
        let mut evil = hello[50..].to_vec();
        evil[10] ^= 1;
        let r = flow.feed(&v1(1, &crypto_frame(50, &evil)));
        assert_eq!(r, Err(QuicError::CryptoConflict));
        assert!(r.unwrap_err().is_ambiguous());
        // Final: the good rest does not undo it.
        assert_eq!(
            flow.feed(&v1(2, &crypto_frame(0, &hello))),
            Err(QuicError::CryptoConflict)
        );

        // Two server names inside the hello: R10 through the TLS parser.
        let two = tls::synthetic_hello(&tls::sni_extension(&["a.com", "b.com"]));
        let r = Flow::new(MAX_CRYPTO).feed(&v1(0, &crypto_frame(0, &two[5..])));
        assert_eq!(r, Err(QuicError::Tls(tls::Invalid::TwoNames)));
        assert!(r.unwrap_err().is_ambiguous());

        // A hello larger than the limit.
        let mut flow = Flow::new(100);
        assert_eq!(
            flow.feed(&v1(0, &crypto_frame(0, &hello[..50]))),
            Err(QuicError::Tls(tls::Invalid::TooLarge))
        );
        let mut flow = Flow::new(100);
        assert_eq!(
            flow.feed(&v1(0, &crypto_frame(0, &hello[..2]))),
            Ok(Step::NeedMore)
        );
        assert_eq!(
            flow.feed(&v1(1, &crypto_frame(90, &hello[90..120]))),
            Err(QuicError::CryptoTooLarge)
        );

        // Frames an Initial may not carry: STREAM, application close,
        // NEW_TOKEN; a frame type in two bytes; a truncated CRYPTO frame.
        for (plain, err) in [
            (vec![0x08, 0, 1, 0x41], QuicError::ForbiddenFrame(0x08)),
            (vec![0x1d, 0, 0, 0], QuicError::ForbiddenFrame(0x1d)),
            (vec![0x07, 1, 0x41], QuicError::ForbiddenFrame(0x07)),
            (
                vec![0x40, 0x06, 0, 0],
                QuicError::Malformed("frame type not minimally encoded"),
            ),
            (
                vec![0x06, 0, 0x44, 0x00, 1, 2],
                QuicError::Malformed("frame runs past the payload"),
            ),
        ] {
            let mut p = crypto_frame(0, &hello[..10]);
            p.extend(plain);
            // No padding: the bad frame must be the last one.
            let mut dg = client_initial(Version::V1, &dcid, b"", 0, &p, false);
            dg.resize(1200, 0);
            let mut flow = Flow::new(MAX_CRYPTO);
            assert_eq!(flow.feed(&dg), Err(err));
        }

        // The DCID changes before the server has answered.
        let mut flow = Flow::new(MAX_CRYPTO);
        assert_eq!(
            flow.feed(&v1(0, &crypto_frame(0, &hello[..10]))),
            Ok(Step::NeedMore)
        );
        let other = client_initial(
            Version::V1,
            b"12345678x",
            b"",
            1,
            &crypto_frame(10, &hello[10..]),
            true,
        );
        assert_eq!(flow.feed(&other), Err(QuicError::DcidChanged));
        // ... or the version.
        let mut flow = Flow::new(MAX_CRYPTO);
        assert_eq!(
            flow.feed(&v1(0, &crypto_frame(0, &hello[..10]))),
            Ok(Step::NeedMore)
        );
        let other = client_initial(
            Version::V2,
            &dcid,
            b"",
            1,
            &crypto_frame(10, &hello[10..]),
            true,
        );
        assert_eq!(flow.feed(&other), Err(QuicError::VersionChanged));

        // A small datagram; a short DCID; a short header; garbage; a
        // packet under the wrong keys.
        let small = client_initial(Version::V1, &dcid, b"", 0, &crypto_frame(0, &hello), false);
        assert_eq!(
            Flow::new(MAX_CRYPTO).feed(&small),
            Err(QuicError::SmallDatagram)
        );
        let short = client_initial(
            Version::V1,
            b"1234567",
            b"",
            0,
            &crypto_frame(0, &hello),
            true,
        );
        assert_eq!(
            Flow::new(MAX_CRYPTO).feed(&short),
            Err(QuicError::CidTooShort)
        );
        assert_eq!(
            Flow::new(MAX_CRYPTO).feed(&[0x40; 1200]),
            Err(QuicError::ShortHeader)
        );
        assert_eq!(Flow::new(MAX_CRYPTO).feed(&[]), Err(QuicError::Truncated));
        let mut wrong = v1(0, &crypto_frame(0, &hello));
        wrong[6] ^= 1; // the DCID: other keys
        assert_eq!(Flow::new(MAX_CRYPTO).feed(&wrong), Err(QuicError::Decrypt));
        let mut wrong = v1(0, &crypto_frame(0, &hello));
        wrong[700] ^= 1;
        assert_eq!(Flow::new(MAX_CRYPTO).feed(&wrong), Err(QuicError::Decrypt));

        // The client closes first.
        let mut flow = Flow::new(MAX_CRYPTO);
        let mut p = crypto_frame(0, &hello[..10]);
        p.extend([0x1c, 0x0a, 0x00, 0x02, b'n', b'o']);
        assert_eq!(flow.feed(&v1(0, &p)), Ok(Step::Closed));
    }

    #[test]
    fn long_header_errors() {
        let dg = unhex(A2_V1);
        // Unknown version; Version Negotiation.
        for (v, wire) in [([0xff, 0, 0, 0x1d], 0xff00_001d), ([0, 0, 0, 0], 0)] {
            let mut bad = dg.clone();
            bad[1..5].copy_from_slice(&v);
            assert_eq!(
                parse_long_header(&bad),
                Err(QuicError::UnknownVersion(wire))
            );
            assert!(matches!(
                Flow::new(MAX_CRYPTO).feed(&bad),
                Err(QuicError::UnknownVersion(_))
            ));
        }
        // DCID of 21 bytes; of 20 is fine.
        let mut pkt = vec![0xc0, 0, 0, 0, 1, 21];
        pkt.extend([7; 21]);
        pkt.extend([0, 0, 1, 0]);
        assert_eq!(parse_long_header(&pkt), Err(QuicError::CidTooLong));
        let mut pkt = vec![0xc0, 0, 0, 0, 1, 20];
        pkt.extend([7; 20]);
        pkt.extend([21]);
        pkt.extend([8; 21]);
        assert_eq!(parse_long_header(&pkt), Err(QuicError::CidTooLong));
        let mut pkt = vec![0xc0, 0, 0, 0, 1, 20];
        pkt.extend([7; 20]);
        pkt.extend([0, 0, 1, 0xaa]);
        let h = parse_long_header(&pkt).unwrap();
        assert_eq!((h.dcid.len(), h.pn_offset, h.len), (20, 29, 30));
        // Token; Length past the datagram; every truncation.
        let mut pkt = vec![0xc0, 0, 0, 0, 1, 0, 0, 0x40, 3, 1, 2, 3, 0x40, 2, 9, 9];
        let h = parse_long_header(&pkt).unwrap();
        assert_eq!((h.token, h.pn_offset, h.len), (&[1u8, 2, 3][..], 14, 16));
        for i in 0..pkt.len() {
            assert_eq!(
                parse_long_header(&pkt[..i]),
                Err(QuicError::Truncated),
                "{i}"
            );
        }
        pkt[13] = 3;
        assert_eq!(parse_long_header(&pkt), Err(QuicError::Truncated));
        // A Retry takes the rest of the datagram; 0-RTT and Handshake have
        // no token.
        let h = parse_long_header(&[0xf0, 0, 0, 0, 1, 0, 0, 1, 2, 3]).unwrap();
        assert_eq!((h.ty, h.len), (PacketType::Retry, 10));
        let h = parse_long_header(&[0xe0, 0, 0, 0, 1, 0, 0, 2, 1, 2]).unwrap();
        assert_eq!((h.ty, h.pn_offset, h.len), (PacketType::Handshake, 8, 10));
        // v2 type bits.
        let h = parse_long_header(&[0xc0, 0x6b, 0x33, 0x43, 0xcf, 0, 0, 1, 0]).unwrap();
        assert_eq!((h.version, h.ty), (Version::V2, PacketType::Retry));
        let h = parse_long_header(&[0xd0, 0x6b, 0x33, 0x43, 0xcf, 0, 0, 0, 1, 0]).unwrap();
        assert_eq!(
            (h.version, h.ty, h.len),
            (Version::V2, PacketType::Initial, 10)
        );
        assert_eq!(
            parse_long_header(&[0x40, 0, 0]),
            Err(QuicError::ShortHeader)
        );
    }

    /// ACK with ECN counts and further ranges; no bytes make the readers
    /// panic (every truncation and many bit flips of the A.2 datagram,
    /// arbitrary frames).
    #[test]
    fn robustness() {
        let ack = [
            0x03, 0x0a, 0x00, 0x02, 0x01, 0x00, 0x01, 0x01, 0x02, 1, 2, 3, 0x01,
        ];
        let fs: Vec<_> = frames(&ack).collect();
        assert_eq!(fs, [Ok(Frame::Ack), Ok(Frame::Ping)]);
        for i in 0..ack.len() - 1 {
            assert!(frames(&ack[..i]).any(|f| f.is_err()) || i == 0, "{i}");
        }
        let dg = unhex(A2_V1);
        for n in 0..dg.len() {
            assert!(Flow::new(MAX_CRYPTO).feed(&dg[..n]).is_err(), "{n}");
        }
        for i in (0..dg.len()).step_by(3) {
            let mut bad = dg.clone();
            bad[i] ^= 1 << (i % 8);
            assert!(Flow::new(MAX_CRYPTO).feed(&bad).is_err(), "{i}");
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            let mut buf = [0u8; 64];
            for b in &mut buf {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = (x % 8) as u8 * 0x0f;
            }
            for f in frames(&buf) {
                if let Ok(Frame::Crypto { data, .. }) = f {
                    assert!(data.len() <= 64);
                }
            }
            let _ = parse_long_header(&buf);
        }
    }

    #[test]
    fn packet_number_decoding() {
        // RFC 9000 §A.3.
        assert_eq!(decode_pn(Some(0xa82f30ea), 0x9b32, 2), 0xa82f9b32);
        assert_eq!(decode_pn(None, 2, 4), 2);
        assert_eq!(decode_pn(Some(254), 0, 1), 256);
        assert_eq!(decode_pn(Some(256), 0xff, 1), 255);
    }

    #[test]
    fn close_packet_round_trip() {
        let hello = a2_hello();
        for (version, dcid, scid) in [
            (Version::V1, unhex(DCID), unhex("aabbcc")),
            (Version::V2, unhex(DCID), vec![]),
            (Version::V1, vec![9; 20], vec![8; 20]),
        ] {
            let dg = client_initial(version, &dcid, &scid, 0, &crypto_frame(0, &hello), true);
            let mut flow = Flow::new(MAX_CRYPTO);
            assert_eq!(sni(flow.feed(&dg)), "example.com");
            let mut out = vec![0xee]; // appended after what is there
            flow.close_packet(&mut out).unwrap();
            assert_eq!(out[0], 0xee);
            let pkt = &out[1..];
            assert!(pkt.len() < 100 && pkt.len() <= dg.len(), "{}", pkt.len());
            let h = parse_long_header(pkt).unwrap();
            assert_eq!(
                (h.version, h.ty, h.len),
                (version, PacketType::Initial, pkt.len())
            );
            assert_eq!((h.dcid, h.scid, h.token), (&scid[..], &dcid[..], &[][..]));
            let keys = initial_keys(version, &dcid, Side::Server).unwrap();
            let mut scratch = [0u8; 200];
            let o = open_packet(&keys, &h, pkt, &mut scratch, None).unwrap();
            assert_eq!(o.pn, 0);
            let fs: Vec<_> = frames(o.payload).map(Result::unwrap).collect();
            assert_eq!(
                fs,
                [Frame::ConnectionClose {
                    code: CLOSE_ERROR_CODE,
                    frame_type: 0x06,
                    reason: b""
                }]
            );
            // Never larger than the room given.
            let mut small = Vec::new();
            assert_eq!(
                close_packet(version, &dcid, &scid, pkt.len() - 1, &mut small),
                Err(QuicError::NoRoom)
            );
            assert!(small.is_empty());
            close_packet(version, &dcid, &scid, pkt.len(), &mut small).unwrap();
            assert_eq!(small, pkt);
        }
        assert_eq!(
            Flow::new(MAX_CRYPTO).close_packet(&mut Vec::new()),
            Err(QuicError::NoInitial)
        );
        assert_eq!(
            close_packet(Version::V1, &[1; 21], b"", 1200, &mut Vec::new()),
            Err(QuicError::CidTooLong)
        );
    }
}
