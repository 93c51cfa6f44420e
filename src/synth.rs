//! Deterministic synthetic filing tables and query sets, for benchmarks and
//! load tests (`examples/gen_table.rs`, `benches/lookup.rs`). Not used on the
//! data path.

/// splitmix64: small, fast, deterministic.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

const SUFFIXES: [&str; 10] = [
    "com",
    "cn",
    "com.cn",
    "net",
    "net.cn",
    "org",
    "xn--fiqs8s",
    "top",
    "gov.cn",
    "xn--55qx5d.cn",
];
const PROVINCES: [&str; 8] = ["京", "沪", "粤", "浙", "苏", "川", "鄂", "闽"];

fn label(rng: &mut Rng, out: &mut String) {
    const CH: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let len = 5 + rng.below(10) as usize;
    for i in 0..len {
        let mut c = CH[rng.below(CH.len() as u64) as usize];
        if i == 0 && c.is_ascii_digit() {
            c = b'a' + (c - b'0');
        }
        out.push(c as char);
    }
}

/// The registrable domain of synthetic row `i` (unique per `i`).
pub fn domain(i: u64) -> String {
    let mut rng = Rng::new(i.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0xA5A5);
    let mut s = String::with_capacity(24);
    label(&mut rng, &mut s);
    // A base-36 tail of the index keeps names unique.
    let mut n = i;
    loop {
        s.push(char::from_digit((n % 36) as u32, 36).unwrap_or('x'));
        n /= 36;
        if n == 0 {
            break;
        }
    }
    s.push('.');
    s.push_str(SUFFIXES[rng.below(SUFFIXES.len() as u64) as usize]);
    s
}

/// Write a synthetic table of `rows` rows as CSV (with the header).
/// About 5% of rows name a subdomain (`shop.` + an earlier domain).
pub fn write_table<W: std::io::Write>(rows: u64, seed: u64, mut w: W) -> std::io::Result<()> {
    let mut rng = Rng::new(seed);
    writeln!(w, "domain,icp,filing,access,access_expires,ips")?;
    let mut apex = 0u64;
    for i in 0..rows {
        let dom = if i % 20 == 19 && apex > 0 {
            format!("shop.{}", domain(apex - 1))
        } else {
            apex += 1;
            domain(apex - 1)
        };
        let entity = 10_000_000 + i / 2;
        let site = 1 + i % 2;
        let prov = PROVINCES[(i % PROVINCES.len() as u64) as usize];
        let r = rng.below(1000);
        let (filing, access, expires, ips) = match r {
            0..=849 => ("filed", "active", "", ""),
            850..=899 => ("change_pending", "active", "", ""),
            900..=929 => ("first_pending", "none", "", ""),
            930..=949 => ("revoked", "cancelled", "", ""),
            950..=979 => ("filed", "none", "", ""),
            980..=989 => ("filed", "cancelled", "", ""),
            990..=994 => ("filed", "initial_review", "2027-01-07T00:00:00Z", ""),
            _ => ("filed", "active", "", "203.0.113.7 198.51.100.0/28"),
        };
        if filing == "first_pending" {
            writeln!(w, "{dom},,{filing},{access},{expires},{ips}")?;
        } else {
            writeln!(
                w,
                "{dom},{prov}ICP备{entity}号-{site},{filing},{access},{expires},{ips}"
            )?;
        }
    }
    Ok(())
}

/// Number of registrable (non-subdomain) rows among the first `rows`.
pub fn apex_count(rows: u64) -> u64 {
    rows - rows / 20
}

/// `n` distinct query names for a table of `rows` rows: half covered by the
/// table (the apex or `www.` + apex), half not (never-generated names).
pub fn queries(rows: u64, n: usize, seed: u64) -> Vec<String> {
    let mut rng = Rng::new(seed);
    let apexes = apex_count(rows);
    (0..n)
        .map(|i| {
            if i % 2 == 0 {
                let d = domain(rng.below(apexes));
                if rng.below(2) == 0 {
                    format!("www.{d}")
                } else {
                    d
                }
            } else {
                // Indices past the table: same shape, never a row.
                let d = domain(apexes + 1 + i as u64);
                if rng.below(2) == 0 {
                    format!("www.{d}")
                } else {
                    d
                }
            }
        })
        .collect()
}
