//! Loading and validating the filing-table export (docs/table.md).
//!
//! The export is untrusted: it is streamed (never read whole into memory),
//! bounded in total and per-row size, hashed as it is read (the sha256 is the
//! table version), gunzipped when it starts with the gzip magic, and every
//! row is validated. Errors carry the line number. More invalid rows than the
//! allowance rejects the whole table; a table is never half-used.

use std::cell::Cell;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::net::IpAddr;
use std::path::Path;
use std::rc::Rc;
use std::time::SystemTime;

use ipnet::IpNet;
use sha2::{Digest, Sha256};

use crate::hostname::{self, Host};
use crate::snapshot::{Access, Builder, Filing, PushError, RowData, Snapshot, Spare, TableMeta};

/// The required header line.
pub const HEADER: [&str; 6] = ["domain", "icp", "filing", "access", "access_expires", "ips"];

/// How many row errors are kept for reports (all are counted).
const MAX_REPORTED_ERRORS: usize = 100;

/// Limits and allowances for a load.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Invalid rows tolerated (skipped) before the table is rejected.
    pub max_invalid_rows: usize,
    /// Cap on the source bytes and, separately, on the decompressed bytes.
    pub max_bytes: u64,
    /// Cap on the decompressed bytes of a gzip source (the lower of this
    /// and `max_bytes` applies).
    pub max_decompressed_bytes: u64,
    /// A gzip source that inflates more than this many times its size is
    /// a bomb: stopped once [`RATIO_AFTER`] bytes have come out.
    pub max_gzip_ratio: u64,
    /// Cap on one row's bytes.
    pub max_row_bytes: usize,
    /// Cap on the number of rows.
    pub max_rows: usize,
    /// Cap on IPs/CIDRs listed in one row.
    pub max_ips_per_row: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            max_invalid_rows: 0,
            max_bytes: 8 << 30,
            // `max_rows` rows of 80 bytes on average (real rows: 40–60).
            max_decompressed_bytes: 50_000_000 * 80,
            // Real exports compress 3–15×; a bomb, 1000× and more.
            max_gzip_ratio: 100,
            max_row_bytes: 4096,
            max_rows: 50_000_000,
            max_ips_per_row: 256,
        }
    }
}

/// One invalid row.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RowError {
    pub line: u64,
    pub message: String,
}

impl fmt::Display for RowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Why a table was not loaded.
#[derive(Debug, Clone)]
pub enum TableError {
    Io(String),
    /// The file as a whole is unusable (header, size, encoding).
    Format(String),
    /// Too many invalid rows.
    Rejected {
        invalid: usize,
        allowance: usize,
        errors: Vec<RowError>,
    },
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableError::Io(e) => write!(f, "cannot read table: {e}"),
            TableError::Format(e) => write!(f, "table rejected: {e}"),
            TableError::Rejected {
                invalid,
                allowance,
                errors,
            } => {
                write!(
                    f,
                    "table rejected: {invalid} invalid row(s), allowance {allowance}"
                )?;
                for e in errors {
                    write!(f, "\n  {e}")?;
                }
                if *invalid > errors.len() {
                    write!(f, "\n  … and {} more", invalid - errors.len())?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for TableError {}

/// A successfully built table and what was skipped on the way.
#[derive(Debug)]
pub struct Loaded {
    pub snapshot: Snapshot,
    /// Rows skipped under the allowance.
    pub invalid: usize,
    pub errors: Vec<RowError>,
}

/// The ratio check starts once this much has been decompressed (a small
/// file may compress better than any real table).
pub const RATIO_AFTER: u64 = 16 << 20;

/// Hashes and counts the bytes read through it, failing past a limit.
struct Metered<R> {
    inner: R,
    hasher: Option<Sha256>,
    read: u64,
    limit: u64,
    what: &'static str,
    /// Source: publishes its count here. Decompressed: the source's count
    /// and the largest ratio allowed.
    source: Rc<Cell<u64>>,
    max_ratio: Option<u64>,
}

impl<R: Read> Read for Metered<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        match self.max_ratio {
            None => self.source.set(self.read),
            Some(ratio) => {
                if self.read > RATIO_AFTER
                    && self.read > self.source.get().max(1).saturating_mul(ratio)
                {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "gzip source inflates more than {ratio}:1 ({} bytes from {}): \
                             a compression bomb? ([table] max_gzip_ratio)",
                            self.read,
                            self.source.get()
                        ),
                    ));
                }
            }
        }
        if self.read > self.limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} exceeds the limit of {} bytes", self.what, self.limit),
            ));
        }
        if let Some(h) = self.hasher.as_mut() {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

/// Load a table from a file (plain CSV or gzip, detected by content).
pub fn load_path(path: &Path, opts: &LoadOptions) -> Result<Loaded, TableError> {
    load_path_reusing(path, opts, Spare::default())
}

/// [`load_path`], building in a retired snapshot's memory.
pub fn load_path_reusing(
    path: &Path,
    opts: &LoadOptions,
    spare: Spare,
) -> Result<Loaded, TableError> {
    let file = File::open(path).map_err(|e| TableError::Io(format!("{}: {e}", path.display())))?;
    let size = file.metadata().map_or(0, |m| m.len());
    load_reader_sized(file, size, &path.display().to_string(), opts, spare)
}

/// Load a fetched table from the temporary file it was written to,
/// reporting `source` (its URL) as where it came from.
pub fn load_fetched(
    path: &Path,
    source: &str,
    opts: &LoadOptions,
    spare: Spare,
) -> Result<Loaded, TableError> {
    let file = File::open(path).map_err(|e| TableError::Io(format!("{}: {e}", path.display())))?;
    let size = file.metadata().map_or(0, |m| m.len());
    load_reader_sized(file, size, source, opts, spare)
}

/// Load a table from in-memory bytes.
pub fn load_bytes(bytes: &[u8], source: &str, opts: &LoadOptions) -> Result<Loaded, TableError> {
    load_bytes_reusing(bytes, source, opts, Spare::default())
}

/// [`load_bytes`], building in a retired snapshot's memory.
pub fn load_bytes_reusing(
    bytes: &[u8],
    source: &str,
    opts: &LoadOptions,
    spare: Spare,
) -> Result<Loaded, TableError> {
    load_reader_sized(bytes, bytes.len() as u64, source, opts, spare)
}

/// Load a table from any byte stream.
///
/// Two stages on two threads: the reader parses and validates rows into
/// batches (CSV, UTF-8, canonical names, PSL, statuses, times, IPs); the
/// caller's thread inserts them into the snapshot builder (duplicates are
/// found there). Either stage stops the other once the allowance is spent.
pub fn load_reader<R: Read + Send>(
    reader: R,
    source: &str,
    opts: &LoadOptions,
) -> Result<Loaded, TableError> {
    load_reader_sized(reader, 0, source, opts, Spare::default())
}

/// Rows per source byte assumed when pre-sizing the hash table (a typical
/// row is 40–60 bytes; under-estimating only costs one growth step).
const BYTES_PER_ROW_HINT: u64 = 64;

fn load_reader_sized<R: Read + Send>(
    reader: R,
    size_hint: u64,
    source: &str,
    opts: &LoadOptions,
    spare: Spare,
) -> Result<Loaded, TableError> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Batch>(8);
    // Emptied batches go back to the parser for reuse.
    let (back_tx, back_rx) = std::sync::mpsc::sync_channel::<Batch>(10);
    // Pre-sized from the source's size, but never for more than a large
    // real table: a huge file of junk must not reserve memory up front.
    let rows_hint = ((size_hint / BYTES_PER_ROW_HINT) as usize)
        .min(opts.max_rows)
        .min(MAX_ROWS_HINT);
    // Names and filing numbers are each well under half of a row's bytes.
    let bytes_hint = (size_hint / 2).min(MAX_ARENA_HINT) as usize;
    let hints = (rows_hint, bytes_hint);
    let (builder, invalid, errors, version) = std::thread::scope(|scope| {
        let parser = scope.spawn(move || read_source(reader, opts, tx, back_rx));
        let built = insert_batches(rx, back_tx, hints, spare, opts);
        let parsed = parser
            .join()
            .unwrap_or_else(|_| Err(TableError::Format("table parser panicked".into())));
        match (built, parsed) {
            // A rejection found by either stage wins over "the other stage
            // stopped early because of it".
            (Err(e @ TableError::Rejected { .. }), _) => Err(e),
            (_, Err(e)) => Err(e),
            (Err(e), Ok(_)) => Err(e),
            (Ok((builder, invalid, errors)), Ok(version)) => {
                Ok((builder, invalid, errors, version))
            }
        }
    })?;
    let meta = TableMeta {
        version,
        source: source.to_owned(),
        loaded_at: SystemTime::now(),
    };
    Ok(Loaded {
        snapshot: builder.finish(meta),
        invalid,
        errors,
    })
}

/// Cap on the arena pre-sizing taken from the source size (beyond it the
/// arenas grow as needed).
const MAX_ARENA_HINT: u64 = 256 << 20;
/// Cap on the rows pre-sized for.
const MAX_ROWS_HINT: usize = 16_000_000;

/// How many rows ahead the builder prefetches hash-table slots.
const PREFETCH_AHEAD: usize = 8;

/// Rows per batch handed from the parser to the builder.
const BATCH_ROWS: usize = 4096;

/// A batch of validated rows; their strings live in `text`.
#[derive(Default)]
struct Batch {
    text: String,
    rows: Vec<BatchRow>,
    /// Invalid rows found by the parser (all of them counted, the first
    /// few kept).
    invalid: usize,
    errors: Vec<RowError>,
}

struct BatchRow {
    line: u64,
    domain: (u32, u32),
    icp: (u32, u32),
    filing: Filing,
    access: Access,
    access_expires: Option<i64>,
    ips: Vec<IpNet>,
    registrable_len: usize,
}

impl Batch {
    /// A recycled batch from the builder, or a new one.
    fn next(back: &std::sync::mpsc::Receiver<Batch>) -> Batch {
        back.try_recv().unwrap_or_else(|_| Batch {
            text: String::with_capacity(BATCH_ROWS * 48),
            rows: Vec::with_capacity(BATCH_ROWS),
            ..Batch::default()
        })
    }
    fn push(&mut self, line: u64, row: ParsedRow<'_>) {
        let d0 = self.text.len() as u32;
        self.text.push_str(&row.domain);
        let d1 = self.text.len() as u32;
        self.text.push_str(row.icp);
        let i1 = self.text.len() as u32;
        self.rows.push(BatchRow {
            line,
            domain: (d0, d1),
            icp: (d1, i1),
            filing: row.filing,
            access: row.access,
            access_expires: row.access_expires,
            ips: row.ips,
            registrable_len: row.registrable_len,
        });
    }
    fn str(&self, (a, b): (u32, u32)) -> &str {
        self.text.get(a as usize..b as usize).unwrap_or("")
    }
}

/// Fails a read once a row (a record: quoted newlines do not end it) runs
/// past the limit, so that no row — the header line included — is
/// buffered whole before its size is known (the CSV reader grows its record
/// buffer without bound).
struct RowGuard<R> {
    inner: R,
    limit: usize,
    /// Bytes of the current row so far (its line end not counted).
    run: usize,
    in_quotes: bool,
    /// Lines completed so far.
    lines: u64,
}

impl<R: Read> Read for RowGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let data = &buf[..n];
        let over = if !self.in_quotes && memchr::memchr(b'"', data).is_none() {
            // The common case: no quotes, rows end at every LF.
            let mut start = 0;
            let mut over = false;
            for i in memchr::memchr_iter(b'\n', data) {
                if self.run + (i - start) > self.limit {
                    over = true;
                    break;
                }
                self.run = 0;
                self.lines += 1;
                start = i + 1;
            }
            over || {
                self.run += n - start;
                self.run > self.limit
            }
        } else {
            let mut over = false;
            for &b in data {
                match b {
                    b'"' => self.in_quotes = !self.in_quotes,
                    b'\n' => {
                        self.lines += 1;
                        if !self.in_quotes {
                            self.run = 0;
                            continue;
                        }
                    }
                    _ => {}
                }
                self.run += 1;
                if self.run > self.limit {
                    over = true;
                    break;
                }
            }
            over
        };
        if over {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "line {}: row longer than {} bytes ([table] max_row_bytes)",
                    self.lines + 1,
                    // The limit allows a CR on top.
                    self.limit.saturating_sub(1)
                ),
            ));
        }
        Ok(n)
    }
}

/// Stage 1: read, hash, gunzip, parse and validate. Returns the version.
fn read_source<R: Read>(
    reader: R,
    opts: &LoadOptions,
    tx: std::sync::mpsc::SyncSender<Batch>,
    back: std::sync::mpsc::Receiver<Batch>,
) -> Result<String, TableError> {
    let source = Rc::new(Cell::new(0));
    let mut raw = BufReader::with_capacity(
        1 << 16,
        Metered {
            inner: reader,
            hasher: Some(Sha256::new()),
            read: 0,
            limit: opts.max_bytes,
            what: "table source",
            source: source.clone(),
            max_ratio: None,
        },
    );
    // A row may take its limit plus a CR.
    let row_limit = opts.max_row_bytes.saturating_add(1);
    let gzip = raw.fill_buf().map_err(io_error)?.starts_with(&[0x1f, 0x8b]);
    if gzip {
        let decoder = flate2::bufread::MultiGzDecoder::new(&mut raw);
        let limited = Metered {
            inner: decoder,
            hasher: None,
            read: 0,
            limit: opts.max_bytes.min(opts.max_decompressed_bytes),
            what: "decompressed table",
            source,
            max_ratio: Some(opts.max_gzip_ratio.max(1)),
        };
        parse_rows(guard(limited, row_limit), opts, &tx, &back)?;
    } else {
        parse_rows(guard(&mut raw, row_limit), opts, &tx, &back)?;
    }
    drop(tx);
    // Drain what the CSV reader did not need so the hash covers every byte.
    io::copy(&mut raw, &mut io::sink()).map_err(io_error)?;
    let hasher = raw.into_inner().hasher.unwrap_or_default();
    Ok(hex(&hasher.finalize()))
}

fn guard<R: Read>(inner: R, limit: usize) -> RowGuard<R> {
    RowGuard {
        inner,
        limit,
        run: 0,
        in_quotes: false,
        lines: 0,
    }
}

/// Stage 2: insert validated rows; detect duplicates.
fn insert_batches(
    rx: std::sync::mpsc::Receiver<Batch>,
    back: std::sync::mpsc::SyncSender<Batch>,
    (rows_hint, bytes_hint): (usize, usize),
    spare: Spare,
    opts: &LoadOptions,
) -> Result<(Builder, usize, Vec<RowError>), TableError> {
    let mut builder = Builder::reusing(rows_hint, bytes_hint, bytes_hint, spare);
    // Line of each inserted row, by push index (for duplicate reports).
    let mut lines: Vec<u32> = Vec::with_capacity(rows_hint);
    let mut invalid = 0usize;
    let mut errors: Vec<RowError> = Vec::new();
    let mut note = |e: RowError, invalid: &mut usize| {
        *invalid += 1;
        if errors.len() < MAX_REPORTED_ERRORS {
            errors.push(e);
        }
    };
    // Merge the parser's errors with ours in line order.
    let mut pending: Vec<RowError> = Vec::new();
    for mut batch in rx {
        invalid += batch.invalid;
        pending.append(&mut batch.errors);
        let mut rows = std::mem::take(&mut batch.rows);
        for i in 0..rows.len() {
            if let Some(ahead) = rows.get(i + PREFETCH_AHEAD) {
                builder.prefetch(batch.str(ahead.domain), ahead.registrable_len);
            }
            let Some(row) = rows.get_mut(i) else { break };
            let row = BatchRow {
                ips: std::mem::take(&mut row.ips),
                ..*row
            };
            let domain = batch.str(row.domain);
            let icp = batch.str(row.icp);
            match builder.push(RowData {
                domain,
                icp,
                filing: row.filing,
                access: row.access,
                access_expires: row.access_expires,
                ips: row.ips,
                registrable_len: Some(row.registrable_len),
            }) {
                Ok(()) => lines.push(row.line as u32),
                Err(PushError::Duplicate { first }) => {
                    let first_line = lines.get(first as usize).copied().unwrap_or(0);
                    note(
                        RowError {
                            line: row.line,
                            message: format!(
                                "duplicate domain {domain} (first at line {first_line})"
                            ),
                        },
                        &mut invalid,
                    );
                }
                Err(PushError::TooLarge) => {
                    return Err(TableError::Format("table exceeds 4 GiB of names".into()))
                }
                Err(PushError::Full) => {
                    return Err(TableError::Format(
                        "internal error: lookup table full (please report)".into(),
                    ))
                }
                Err(PushError::NameTooLong) | Err(PushError::TooManyIps) => note(
                    RowError {
                        line: row.line,
                        message: "row too large".into(),
                    },
                    &mut invalid,
                ),
            }
        }
        rows.clear();
        batch.rows = rows;
        batch.text.clear();
        batch.invalid = 0;
        // The parser may have finished; then the batch is just dropped.
        let _ = back.try_send(batch);
        if invalid > opts.max_invalid_rows {
            break;
        }
    }
    errors.append(&mut pending);
    errors.sort_by_key(|e| e.line);
    errors.truncate(MAX_REPORTED_ERRORS);
    if invalid > opts.max_invalid_rows {
        return Err(TableError::Rejected {
            invalid,
            allowance: opts.max_invalid_rows,
            errors,
        });
    }
    Ok((builder, invalid, errors))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A limit or decoding failure is the file's fault (`Format`); anything
/// else is the reader's (`Io`).
fn io_error(e: io::Error) -> TableError {
    match e.kind() {
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput | io::ErrorKind::UnexpectedEof => {
            TableError::Format(e.to_string())
        }
        _ => TableError::Io(e.to_string()),
    }
}

fn io_or_format(e: csv::Error) -> TableError {
    let msg = e.to_string();
    match e.into_kind() {
        csv::ErrorKind::Io(io) => io_error(io),
        _ => TableError::Format(msg),
    }
}

fn parse_rows<R: Read>(
    reader: R,
    opts: &LoadOptions,
    tx: &std::sync::mpsc::SyncSender<Batch>,
    back: &std::sync::mpsc::Receiver<Batch>,
) -> Result<(), TableError> {
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(1 << 16)
        .from_reader(reader);
    let mut record = csv::ByteRecord::new();
    match csv.read_byte_record(&mut record) {
        Ok(true) => {}
        Ok(false) => return Err(TableError::Format("empty file: no header line".into())),
        Err(e) => return Err(io_or_format(e)),
    }
    let first = record
        .get(0)
        .map(|f| f.strip_prefix(b"\xef\xbb\xbf").unwrap_or(f));
    let header_ok = record.len() == HEADER.len()
        && first == Some(HEADER[0].as_bytes())
        && record
            .iter()
            .skip(1)
            .zip(&HEADER[1..])
            .all(|(a, b)| a == b.as_bytes());
    if !header_ok {
        return Err(TableError::Format(format!(
            "line 1: header must be exactly `{}`",
            HEADER.join(",")
        )));
    }

    let mut batch = Batch::next(back);
    let mut invalid_total = 0usize;
    let mut rows = 0usize;
    loop {
        let line = match csv.read_byte_record(&mut record) {
            Ok(true) => record.position().map_or(0, |p| p.line()),
            Ok(false) => break,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                    return Err(io_or_format(e));
                }
                batch.invalid += 1;
                invalid_total += 1;
                if batch.errors.len() < MAX_REPORTED_ERRORS {
                    batch.errors.push(RowError {
                        line,
                        message: e.to_string(),
                    });
                }
                if invalid_total > opts.max_invalid_rows {
                    break;
                }
                continue;
            }
        };
        // A blank line is not a row.
        if record.len() == 1 && record.get(0).is_some_and(|f| f.is_empty()) {
            continue;
        }
        rows += 1;
        if rows > opts.max_rows {
            return Err(TableError::Format(format!(
                "more than {} rows",
                opts.max_rows
            )));
        }
        match parse_row(&record, opts) {
            Ok(row) => batch.push(line, row),
            Err(message) => {
                batch.invalid += 1;
                invalid_total += 1;
                if batch.errors.len() < MAX_REPORTED_ERRORS {
                    batch.errors.push(RowError { line, message });
                }
                if invalid_total > opts.max_invalid_rows {
                    break;
                }
            }
        }
        if batch.rows.len() >= BATCH_ROWS {
            let full = std::mem::replace(&mut batch, Batch::next(back));
            if tx.send(full).is_err() {
                // The builder stopped (allowance spent): nothing more to do.
                return Ok(());
            }
        }
    }
    let _ = tx.send(batch);
    Ok(())
}

/// A validated row (the domain borrowed from the record when it was
/// already canonical).
#[derive(Debug)]
struct ParsedRow<'r> {
    domain: std::borrow::Cow<'r, str>,
    icp: &'r str,
    filing: Filing,
    access: Access,
    access_expires: Option<i64>,
    ips: Vec<IpNet>,
    registrable_len: usize,
}

fn field<'r>(record: &'r csv::ByteRecord, i: usize, name: &str) -> Result<&'r str, String> {
    let bytes = record.get(i).unwrap_or(b"");
    std::str::from_utf8(bytes).map_err(|_| format!("{name}: not valid UTF-8"))
}

fn parse_row<'r>(record: &'r csv::ByteRecord, opts: &LoadOptions) -> Result<ParsedRow<'r>, String> {
    if record.as_slice().len() > opts.max_row_bytes {
        return Err(format!("row longer than {} bytes", opts.max_row_bytes));
    }
    if record.len() != HEADER.len() {
        return Err(format!(
            "expected {} fields, found {}",
            HEADER.len(),
            record.len()
        ));
    }
    let raw_domain = field(record, 0, "domain")?;
    let domain = match hostname::canonicalize_bare(raw_domain) {
        Ok(Host::Name(n)) => n,
        Ok(Host::Ip(_)) => return Err(format!("domain {raw_domain:?} is an IP address")),
        Err(e) => return Err(format!("domain {raw_domain:?}: {e}")),
    };
    let Some(registrable_len) = hostname::registrable_domain(&domain).map(str::len) else {
        return Err(format!(
            "domain {raw_domain:?} is a public suffix, not a registrable domain"
        ));
    };
    let icp = field(record, 1, "icp")?;
    let filing_s = field(record, 2, "filing")?;
    let filing = Filing::parse(filing_s).ok_or_else(|| {
        format!("filing {filing_s:?}: expected filed, change_pending, first_pending or revoked")
    })?;
    // A first filing under review has no number yet.
    if !(icp.is_empty() && filing == Filing::FirstPending) {
        check_icp(icp)?;
    }
    let access_s = field(record, 3, "access")?;
    let access = Access::parse(access_s).ok_or_else(|| {
        format!("access {access_s:?}: expected active, initial_review, cancelled or none")
    })?;
    let expires_s = field(record, 4, "access_expires")?;
    let access_expires = match (access, expires_s.is_empty()) {
        (Access::InitialReview, true) => {
            return Err("access_expires is required when access is initial_review".into())
        }
        (Access::InitialReview, false) => Some(parse_rfc3339(expires_s)?),
        (_, true) => None,
        (_, false) => {
            return Err(format!(
                "access_expires must be empty unless access is initial_review (access is {})",
                access.as_str()
            ))
        }
    };
    let ips_s = field(record, 5, "ips")?;
    let mut ips = Vec::new();
    for tok in ips_s.split_ascii_whitespace() {
        if ips.len() >= opts.max_ips_per_row {
            return Err(format!("more than {} IPs in ips", opts.max_ips_per_row));
        }
        ips.push(parse_ipnet(tok)?);
    }
    Ok(ParsedRow {
        domain,
        icp,
        filing,
        access,
        access_expires,
        ips,
        registrable_len,
    })
}

/// Loose check of a filing number: present, short, printable, has digits.
fn check_icp(icp: &str) -> Result<(), String> {
    if icp.is_empty() {
        return Err("icp is empty".into());
    }
    if icp.chars().count() > 64 {
        return Err("icp longer than 64 characters".into());
    }
    if icp.chars().any(|c| c.is_control()) {
        return Err("icp contains control characters".into());
    }
    if !icp.bytes().any(|b| b.is_ascii_digit()) {
        return Err(format!("icp {icp:?} has no serial number"));
    }
    Ok(())
}

/// RFC 3339 → Unix seconds.
pub fn parse_rfc3339(s: &str) -> Result<i64, String> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|e| format!("access_expires {s:?}: not an RFC 3339 time ({e})"))
}

/// An IP address or CIDR.
pub fn parse_ipnet(tok: &str) -> Result<IpNet, String> {
    if let Ok(net) = tok.parse::<IpNet>() {
        if net.trunc() != net {
            return Err(format!("ips: {tok:?} has host bits set"));
        }
        return Ok(net);
    }
    tok.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("ips: {tok:?} is not an IP address or CIDR"))
}

/// The shrink guard rail: is `new` smaller than `old` by more than
/// `max_shrink` (a fraction)? Returns the message when it is.
pub fn shrink_violation(old: usize, new: usize, max_shrink: f64) -> Option<String> {
    if old == 0 || new >= old {
        return None;
    }
    let shrink = (old - new) as f64 / old as f64;
    (shrink > max_shrink).then(|| {
        format!(
            "table shrinks from {old} to {new} entries ({:.1}% > max_shrink {:.1}%); reload with force to accept",
            shrink * 100.0,
            max_shrink * 100.0
        )
    })
}
