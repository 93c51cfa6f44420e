//! Finding the end of a chunked message body (RFC 9112 §7.1) without
//! decoding it: the proxy forwards the original bytes and only needs to know
//! where the body stops, so that the next request (or response) on the
//! connection starts at the right byte. Strict where a lenient reading could
//! disagree with the next hop (CRLF only, bounded size lines and trailers):
//! a disagreement about where a body ends is request smuggling.

/// Longest chunk-size line (digits + extensions) accepted.
const MAX_SIZE_LINE: u32 = 4096;
/// Longest trailer section accepted.
const MAX_TRAILERS: u32 = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    /// Reading hex digits of a chunk size (`digits` so far).
    Size {
        digits: u8,
        val: u64,
        line: u32,
    },
    /// After the size: chunk extensions until CR.
    Ext {
        val: u64,
        line: u32,
    },
    /// CR seen after a size line; LF must follow.
    SizeLf {
        val: u64,
    },
    /// Inside chunk data: bytes left.
    Data(u64),
    /// After chunk data: CR, then LF.
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart {
        total: u32,
    },
    TrailerLine {
        total: u32,
    },
    TrailerLf {
        total: u32,
    },
    /// CR of the final empty line seen.
    FinalLf,
    Done,
}

/// Incremental scanner over a chunked body.
#[derive(Debug, Clone)]
pub struct Chunked {
    st: St,
}

impl Default for Chunked {
    fn default() -> Self {
        Self::new()
    }
}

impl Chunked {
    pub fn new() -> Self {
        Chunked { st: SIZE_START }
    }

    pub fn is_done(&self) -> bool {
        self.st == St::Done
    }

    /// Scan `buf`; returns how many of its bytes belong to the body. Less
    /// than `buf.len()` only once the body is complete (the rest is the
    /// next message).
    pub fn feed(&mut self, buf: &[u8]) -> Result<usize, &'static str> {
        let mut i = 0;
        while i < buf.len() {
            let b = buf[i];
            self.st = match self.st {
                St::Done => return Ok(i),
                St::Data(n) => {
                    // Chunk data is skipped whole, not byte by byte.
                    let take = (buf.len() - i).min(usize::try_from(n).unwrap_or(usize::MAX));
                    i += take;
                    let left = n - take as u64;
                    self.st = if left == 0 {
                        St::DataCr
                    } else {
                        St::Data(left)
                    };
                    continue;
                }
                St::Size { digits, val, line } => size_digit(digits, val, line, b)?,
                St::Ext { val, line } => extension(val, line, b)?,
                St::SizeLf { val } => size_lf(val, b)?,
                St::DataCr => expect(b, b'\r', St::DataLf, "chunk data longer than its size")?,
                St::DataLf => expect(b, b'\n', SIZE_START, "CR without LF after chunk data")?,
                St::TrailerStart { total } => trailer_start(total, b)?,
                St::TrailerLine { total } => trailer_line(total, b)?,
                St::TrailerLf { total } => expect(
                    b,
                    b'\n',
                    St::TrailerStart { total },
                    "CR without LF in trailers",
                )?,
                St::FinalLf => {
                    let why = "CR without LF at the end of a chunked body";
                    self.st = expect(b, b'\n', St::Done, why)?;
                    return Ok(i + 1);
                }
            };
            i += 1;
        }
        Ok(i)
    }
}

/// The state at the start of a chunk-size line.
const SIZE_START: St = St::Size {
    digits: 0,
    val: 0,
    line: 0,
};

/// `next` if `b` is `want`, else the error `why`.
#[inline(always)]
fn expect(b: u8, want: u8, next: St, why: &'static str) -> Result<St, &'static str> {
    if b == want {
        Ok(next)
    } else {
        Err(why)
    }
}

/// A byte of the chunk-size digits (or what ends them).
#[inline(always)]
fn size_digit(digits: u8, val: u64, line: u32, b: u8) -> Result<St, &'static str> {
    if line >= MAX_SIZE_LINE {
        return Err("chunk size line too long");
    }
    match hex(b) {
        Some(_) if digits >= 16 => Err("chunk size too large"),
        Some(d) => Ok(St::Size {
            digits: digits + 1,
            val: (val << 4) | u64::from(d),
            line: line + 1,
        }),
        None if digits == 0 => Err("chunk size expected"),
        None if b == b'\r' => Ok(St::SizeLf { val }),
        None if b == b';' || b == b' ' || b == b'\t' => Ok(St::Ext {
            val,
            line: line + 1,
        }),
        None => Err("bad chunk size"),
    }
}

/// A byte of chunk extensions, until CR.
#[inline(always)]
fn extension(val: u64, line: u32, b: u8) -> Result<St, &'static str> {
    if line >= MAX_SIZE_LINE {
        return Err("chunk extension too long");
    }
    match b {
        b'\r' => Ok(St::SizeLf { val }),
        b'\n' => Err("bare LF in chunk size line"),
        c if (c < 0x20 && c != b'\t') || c == 0x7f => Err("control byte in chunk extension"),
        _ => Ok(St::Ext {
            val,
            line: line + 1,
        }),
    }
}

/// The LF ending a chunk-size line: the chunk's data, or the trailers
/// after the last chunk.
#[inline(always)]
fn size_lf(val: u64, b: u8) -> Result<St, &'static str> {
    match (b, val) {
        (b'\n', 0) => Ok(St::TrailerStart { total: 0 }),
        (b'\n', _) => Ok(St::Data(val)),
        _ => Err("CR without LF in chunk size line"),
    }
}

/// The first byte of a trailer line, or the CR of the final empty line.
#[inline(always)]
fn trailer_start(total: u32, b: u8) -> Result<St, &'static str> {
    match b {
        b'\r' => Ok(St::FinalLf),
        b'\n' => Err("bare LF in trailers"),
        _ => Ok(St::TrailerLine { total: total + 1 }),
    }
}

/// A byte of a trailer line, until CR.
#[inline(always)]
fn trailer_line(total: u32, b: u8) -> Result<St, &'static str> {
    if total >= MAX_TRAILERS {
        return Err("trailers too long");
    }
    match b {
        b'\r' => Ok(St::TrailerLf { total }),
        b'\n' => Err("bare LF in trailers"),
        _ => Ok(St::TrailerLine { total: total + 1 }),
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(body: &[u8]) -> Result<usize, &'static str> {
        let mut c = Chunked::new();
        let n = c.feed(body)?;
        assert!(c.is_done(), "{:?}", String::from_utf8_lossy(body));
        Ok(n)
    }

    #[test]
    fn ends_where_the_body_ends_in_every_split() {
        let body = b"5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\n";
        let mut input = body.to_vec();
        input.extend_from_slice(b"GET /next HTTP/1.1\r\n");
        assert_eq!(whole(&input), Ok(body.len()));
        // Every split point, and one byte at a time: never done early.
        for cut in 0..=input.len() {
            let mut c = Chunked::new();
            let a = c.feed(&input[..cut]).unwrap();
            if cut < body.len() {
                assert_eq!(a, cut);
                assert!(!c.is_done(), "done early at {cut}");
                let b = c.feed(&input[cut..]).unwrap();
                assert_eq!(a + b, body.len());
            } else {
                assert_eq!(a, body.len());
            }
            assert!(c.is_done());
        }
        let mut c = Chunked::new();
        let mut total = 0;
        for b in &input {
            total += c.feed(std::slice::from_ref(b)).unwrap();
            if c.is_done() {
                break;
            }
        }
        assert_eq!(total, body.len());
    }

    #[test]
    fn rejects_what_a_next_hop_could_read_differently() {
        for bad in [
            &b"x\r\n"[..],
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhello!\r\n0\r\n\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"0\r\n\n",
            b"0\r\nX: 1\n\r\n",
            b"11111111111111111\r\n",
            b"-1\r\n",
            b"\r\n",
            b"5;a\x00b\r\n",
        ] {
            let mut c = Chunked::new();
            assert!(c.feed(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
        let mut c = Chunked::new();
        assert!(c.feed(&[b'1'; 5000]).is_err());
        let mut long = b"1;".to_vec();
        long.extend([b'a'; 5000]);
        assert!(Chunked::new().feed(&long).is_err());
        let mut trailers = b"0\r\n".to_vec();
        for _ in 0..2000 {
            trailers.extend_from_slice(b"X-Trailer: 0123456789\r\n");
        }
        assert!(Chunked::new().feed(&trailers).is_err());
    }

    #[test]
    fn sixteen_digit_size_is_the_limit() {
        let mut c = Chunked::new();
        assert!(c.feed(b"ffffffffffffffff\r\nabc").is_ok());
        assert!(!c.is_done());
    }
}
