//! QUIC Initial packet protection (RFC 9001 §5.2 and §5.4; RFC 9369 §3.3
//! for QUIC v2): the keys a client's Destination Connection ID yields, one
//! direction at a time, on `ring` — only what is used is derived (a
//! flow's client keys to read its Initials; the server's only to close a
//! blocked flow).

use std::sync::OnceLock;

use ring::aead::{self, quic::HeaderProtectionKey, Aad, LessSafeKey, Nonce};
use ring::hkdf::{self, Prk, Salt, HKDF_SHA256};

const SALT_V1: [u8; 20] = [
    0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4, 0xc8, 0x0c, 0xad,
    0xcc, 0xbb, 0x7f, 0x0a,
];
const SALT_V2: [u8; 20] = [
    0x0d, 0xed, 0xe3, 0xde, 0xf7, 0x00, 0xa6, 0xdb, 0x81, 0x93, 0x81, 0xbe, 0x6e, 0x26, 0x9d, 0xcb,
    0xf9, 0xbd, 0x2e, 0xd9,
];

/// Which side's packets the keys protect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

/// The keys of one direction: packet protection (AEAD_AES_128_GCM), its
/// IV, and header protection (AES-128).
pub struct Keys {
    packet: LessSafeKey,
    iv: [u8; 12],
    header: HeaderProtectionKey,
}

/// The failure of a cryptographic operation (a packet that does not
/// authenticate, or a key `ring` refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failed;

impl From<ring::error::Unspecified> for Failed {
    fn from(_: ring::error::Unspecified) -> Failed {
        Failed
    }
}

/// An HKDF output length (ring's `KeyType`).
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// The `info` of HKDF-Expand-Label (RFC 8446 §7.1) for an output of
/// `len` bytes (big-endian), `label` (its length with "tls13 " in
/// `label_len`), and an empty context.
fn info<'a>(len: &'a [u8; 2], label_len: &'a [u8; 1], label: &'a [u8]) -> [&'a [u8]; 5] {
    [len, label_len, b"tls13 ", label, &[0]]
}

fn salt(v2: bool) -> &'static Salt {
    static V1: OnceLock<Salt> = OnceLock::new();
    static V2: OnceLock<Salt> = OnceLock::new();
    if v2 {
        V2.get_or_init(|| Salt::new(HKDF_SHA256, &SALT_V2))
    } else {
        V1.get_or_init(|| Salt::new(HKDF_SHA256, &SALT_V1))
    }
}

impl Keys {
    /// The Initial keys of `side` for the connection the client opened with
    /// `client_dcid` (QUIC v2's labels with `v2`).
    /// Boxed: the keys are large (AES schedules, GHASH tables) and built
    /// once, in place.
    pub fn initial(v2: bool, client_dcid: &[u8], side: Side) -> Result<Box<Keys>, Failed> {
        let initial = salt(v2).extract(client_dcid);
        let label: &[u8] = match side {
            Side::Client => b"client in",
            Side::Server => b"server in",
        };
        let len = |l: &[u8]| [6 + l.len() as u8];
        let ll = len(label);
        let i = info(&[0, 32], &ll, label);
        let secret: Prk = initial.expand(&i, HKDF_SHA256)?.into();
        let (key, iv, hp): (&[u8], &[u8], &[u8]) = if v2 {
            (b"quicv2 key", b"quicv2 iv", b"quicv2 hp")
        } else {
            (b"quic key", b"quic iv", b"quic hp")
        };
        let (kl, il, hl) = (len(key), len(iv), len(hp));
        let i = info(&[0, 16], &kl, key);
        let packet = aead::UnboundKey::from(secret.expand(&i, &aead::AES_128_GCM)?);
        let mut iv_bytes = [0u8; 12];
        let i = info(&[0, 12], &il, iv);
        secret.expand(&i, Len(12))?.fill(&mut iv_bytes)?;
        let i = info(&[0, 16], &hl, hp);
        let header = HeaderProtectionKey::from(secret.expand(&i, &aead::quic::AES_128)?);
        Ok(Box::new(Keys {
            packet: LessSafeKey::new(packet),
            iv: iv_bytes,
            header,
        }))
    }

    /// The header protection mask of a packet whose sample (16 bytes from
    /// 4 bytes past the packet number's start) is `sample`.
    pub fn mask(&self, sample: &[u8]) -> Result<[u8; 5], Failed> {
        Ok(self.header.new_mask(sample)?)
    }

    fn nonce(&self, pn: u64) -> Nonce {
        let mut n = self.iv;
        for (b, p) in n[4..].iter_mut().zip(pn.to_be_bytes()) {
            *b ^= p;
        }
        Nonce::assume_unique_for_key(n)
    }

    /// Decrypt `payload` (ciphertext and tag) in place, authenticated with
    /// `header`; the plaintext.
    pub fn open<'p>(
        &self,
        pn: u64,
        header: &[u8],
        payload: &'p mut [u8],
    ) -> Result<&'p mut [u8], Failed> {
        Ok(self
            .packet
            .open_in_place(self.nonce(pn), Aad::from(header), payload)?)
    }

    /// Encrypt `payload` in place, authenticated with `header`; the tag.
    pub fn seal(&self, pn: u64, header: &[u8], payload: &mut [u8]) -> Result<aead::Tag, Failed> {
        Ok(self
            .packet
            .seal_in_place_separate_tag(self.nonce(pn), Aad::from(header), payload)?)
    }
}
