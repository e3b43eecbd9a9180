//! DynamoDB numbers (decimal strings) to PostgreSQL `numeric`, exactly.
//!
//! A number keeps every digit and its scale as PostgreSQL's own `numeric_in` would read the same
//! text: `1.50` has scale 2, `1.5E+3` is 1500 with scale 0, `1E-130` has scale 130. The binary
//! form is base-10000 digits with a weight, as `numeric_recv` expects.

use crate::error::Reason;

/// PostgreSQL's `NUMERIC_DSCALE_MAX`: the largest display scale `numeric` accepts.
const MAX_DSCALE: i64 = 0x3FFF;
/// `numeric` weights and digit counts are int16 on the wire.
const MAX_WEIGHT: i64 = i16::MAX as i64;

/// A parsed decimal: value = `digits` × 10^`exp`, sign apart. `digits` holds digit values (0–9)
/// without leading zeros; it is empty for zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decimal<'d> {
    pub negative: bool,
    pub digits: &'d [u8],
    pub exp: i64,
}

impl Decimal<'_> {
    /// Display scale, as `numeric_in` computes it.
    pub fn dscale(&self) -> i64 {
        (-self.exp).max(0)
    }
}

/// Parse a DynamoDB number. Accepts a leading `+` or `-`, digits with at most one `.`
/// (`.5` and `5.` included), and an exponent; anything else is a reject reason.
pub fn parse<'d>(text: &[u8], digits: &'d mut Vec<u8>) -> Result<Decimal<'d>, Reason> {
    digits.clear();
    let mut p = 0;
    let negative = match text.first() {
        Some(b'-') => {
            p = 1;
            true
        }
        Some(b'+') => {
            p = 1;
            false
        }
        _ => false,
    };
    let mut frac = 0i64;
    let mut seen_point = false;
    let mut seen_digit = false;
    while let Some(&c) = text.get(p) {
        match c {
            b'0'..=b'9' => {
                seen_digit = true;
                // Leading zeros carry nothing (but fraction zeros still count toward the scale).
                if !(digits.is_empty() && c == b'0') {
                    digits.push(c - b'0');
                }
                if seen_point {
                    frac += 1;
                }
            }
            b'.' if !seen_point => seen_point = true,
            _ => break,
        }
        p += 1;
    }
    if !seen_digit {
        return Err(malformed(text));
    }
    let mut exp = 0i64;
    if matches!(text.get(p), Some(b'e' | b'E')) {
        p += 1;
        let exp_negative = match text.get(p) {
            Some(b'-') => {
                p += 1;
                true
            }
            Some(b'+') => {
                p += 1;
                false
            }
            _ => false,
        };
        let start = p;
        while let Some(&c) = text.get(p).filter(|c| c.is_ascii_digit()) {
            // Saturate: any exponent this large is out of range anyway, and is reported so below.
            exp = (exp * 10 + i64::from(c - b'0')).min(1 << 40);
            p += 1;
        }
        if p == start {
            return Err(malformed(text));
        }
        if exp_negative {
            exp = -exp;
        }
    }
    if p != text.len() {
        return Err(malformed(text));
    }
    let d = Decimal { negative, digits: digits.as_slice(), exp: exp - frac };
    if d.dscale() > MAX_DSCALE {
        return Err(out_of_range(text));
    }
    if !d.digits.is_empty() {
        let msd = d.exp + d.digits.len() as i64 - 1;
        let groups = msd.div_euclid(4) - d.exp.div_euclid(4) + 1;
        if msd.div_euclid(4) > MAX_WEIGHT || groups > MAX_WEIGHT {
            return Err(out_of_range(text));
        }
    }
    Ok(d)
}

#[cold]
fn malformed(text: &[u8]) -> Reason {
    format!("malformed number {:?}", String::from_utf8_lossy(&text[..text.len().min(80)])).into()
}

#[cold]
fn out_of_range(text: &[u8]) -> Reason {
    format!("number out of PostgreSQL numeric range: {:?}", String::from_utf8_lossy(&text[..text.len().min(80)])).into()
}

/// Append the binary `numeric` payload of `d` (no length prefix) to `out`.
pub fn write_binary(d: &Decimal<'_>, out: &mut Vec<u8>) {
    let dscale = d.dscale() as u16;
    if d.digits.is_empty() {
        out.extend_from_slice(&0i16.to_be_bytes());
        out.extend_from_slice(&0i16.to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&dscale.to_be_bytes());
        return;
    }
    // Decimal position (power of ten) of the most significant digit, and its base-10000 group.
    let msd = d.exp + d.digits.len() as i64 - 1;
    let weight = msd.div_euclid(4);
    // Number of decimal places before the first digit inside its group of four.
    let lead = 3 - msd.rem_euclid(4) as usize;
    let total = lead + d.digits.len();
    let mut ngroups = total.div_ceil(4);
    // Trailing zero groups carry no value (the scale keeps the display digits).
    let group = |g: usize| -> i16 {
        let mut v = 0i16;
        for k in 0..4 {
            let idx = (g * 4 + k).wrapping_sub(lead);
            let digit = d.digits.get(idx).copied().unwrap_or(0);
            v = v * 10 + i16::from(digit);
        }
        v
    };
    while ngroups > 1 && group(ngroups - 1) == 0 {
        ngroups -= 1;
    }
    out.reserve(8 + 2 * ngroups);
    out.extend_from_slice(&(ngroups as i16).to_be_bytes());
    out.extend_from_slice(&(weight as i16).to_be_bytes());
    out.extend_from_slice(&(if d.negative { 0x4000u16 } else { 0 }).to_be_bytes());
    out.extend_from_slice(&dscale.to_be_bytes());
    for g in 0..ngroups {
        out.extend_from_slice(&group(g).to_be_bytes());
    }
}

/// A number of at most 19 digits and no exponent, as most are: its digits fit a `u64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Short {
    pub negative: bool,
    /// The digits as an integer: the value is `digits` × 10^-`scale`.
    pub digits: u64,
    pub scale: u32,
}

/// Read `text` as a [`Short`] if it is one (any other text, valid or not, is for [`parse`]).
#[inline]
pub fn short(text: &[u8]) -> Option<Short> {
    let (negative, body) = match text.first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let mut digits = 0u64;
    let mut count = 0u32;
    let mut point: Option<u32> = None;
    for &c in body {
        match c {
            b'0'..=b'9' => {
                digits = digits * 10 + u64::from(c - b'0');
                count += 1;
                if count > 19 {
                    return None;
                }
            }
            b'.' if point.is_none() => point = Some(count),
            _ => return None,
        }
    }
    if count == 0 {
        return None;
    }
    Some(Short { negative, digits, scale: point.map_or(0, |p| count - p) })
}

/// Append the binary `numeric` payload of a short number: the same bytes [`write_binary`] writes
/// for the same text, without going through decimal digits one by one.
pub fn write_binary_short(n: Short, out: &mut Vec<u8>) {
    // Base-10000 groups are aligned on the decimal point: pad the fraction to whole groups.
    let pad = (4 - n.scale % 4) % 4;
    let mut v = u128::from(n.digits) * 10u128.pow(pad);
    let frac_groups = ((n.scale + pad) / 4) as i32;
    // 19 digits and 3 of padding make at most 6 groups, least significant first.
    let mut groups = [0u16; 6];
    let mut len = 0;
    while v > 0 {
        groups[len] = (v % 10_000) as u16;
        v /= 10_000;
        len += 1;
    }
    let lowest = groups[..len].iter().position(|&g| g != 0).unwrap_or(len);
    let ngroups = len - lowest;
    let weight = if ngroups == 0 { 0 } else { len as i32 - 1 - frac_groups };
    let sign: u16 = if n.negative && ngroups > 0 { 0x4000 } else { 0 };
    out.extend_from_slice(&(ngroups as i16).to_be_bytes());
    out.extend_from_slice(&(weight as i16).to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&(n.scale as u16).to_be_bytes());
    for &g in groups[lowest..len].iter().rev() {
        out.extend_from_slice(&g.to_be_bytes());
    }
}

/// True when `text` is already a number in JSON's grammar (so it can be copied as is).
pub fn is_json_number(text: &[u8]) -> bool {
    crate::json::number_end(text, 0) == Ok(text.len())
}

/// Append `d` as a JSON number that PostgreSQL reads back with the same digits and scale.
pub fn write_json(d: &Decimal<'_>, out: &mut Vec<u8>) {
    if d.negative && !d.digits.is_empty() {
        out.push(b'-');
    }
    if d.digits.is_empty() {
        out.push(b'0');
    } else {
        out.extend(d.digits.iter().map(|v| v + b'0'));
    }
    if d.exp != 0 {
        out.push(b'e');
        out.extend_from_slice(d.exp.to_string().as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binary(text: &str) -> (i16, i16, u16, u16, Vec<i16>) {
        let mut digits = Vec::new();
        let d = parse(text.as_bytes(), &mut digits).unwrap();
        let mut out = Vec::new();
        write_binary(&d, &mut out);
        let word = |i: usize| i16::from_be_bytes([out[2 * i], out[2 * i + 1]]);
        let n = word(0);
        let groups = (0..n as usize).map(|g| word(4 + g)).collect();
        (n, word(1), word(2) as u16, word(3) as u16, groups)
    }

    #[test]
    fn encodes_like_numeric_recv_expects() {
        assert_eq!(binary("0"), (0, 0, 0, 0, vec![]));
        assert_eq!(binary("-0"), (0, 0, 0, 0, vec![]));
        assert_eq!(binary("0.000"), (0, 0, 0, 3, vec![]));
        assert_eq!(binary("1"), (1, 0, 0, 0, vec![1]));
        assert_eq!(binary("12345"), (2, 1, 0, 0, vec![1, 2345]));
        assert_eq!(binary("-1.50"), (2, 0, 0x4000, 2, vec![1, 5000]));
        assert_eq!(binary("1.5E+3"), (1, 0, 0, 0, vec![1500]));
        assert_eq!(binary("1e5"), (1, 1, 0, 0, vec![10]));
        assert_eq!(binary("0.0001"), (1, -1, 0, 4, vec![1]));
        assert_eq!(binary("1E-130"), (1, -33, 0, 130, vec![100]));
        assert_eq!(binary("+.5"), (1, -1, 0, 1, vec![5000]));
        assert_eq!(binary("5."), (1, 0, 0, 0, vec![5]));
        assert_eq!(binary("007.10"), (2, 0, 0, 2, vec![7, 1000]));
        let big = binary("9.9999999999999999999999999999999999999E+125");
        assert_eq!((big.1, big.3), (31, 0));
        assert_eq!(big.4[0], 99);
    }

    #[test]
    fn short_numbers_encode_as_the_general_path_does() {
        let mut texts: Vec<String> = ["0", "-0", "0.000", "+.5", "5.", "007.10", "-1.50", "12345", "0.0001"]
            .iter()
            .map(|s| (*s).to_string())
            .collect();
        texts.push("9999999999999999999".into());
        texts.push("-.9999999999999999999".into());
        texts.push("1000000000000000000.0".into());
        // Every split of a few digit strings into integer and fraction parts, signed or not.
        for digits in ["1", "10", "1234", "12345", "100000001", "98765432109876543", "1234567890123456789"] {
            for point in 0..=digits.len() {
                let (int, frac) = digits.split_at(point);
                for sign in ["", "-", "+"] {
                    texts.push(format!("{sign}{int}.{frac}"));
                    texts.push(format!("{sign}{int}{frac}"));
                    texts.push(format!("{sign}000{int}.{frac}000"));
                }
            }
        }
        let mut scratch = Vec::new();
        for text in &texts {
            let general = {
                let d = parse(text.as_bytes(), &mut scratch).unwrap();
                let mut out = Vec::new();
                write_binary(&d, &mut out);
                out
            };
            match short(text.as_bytes()) {
                Some(n) => {
                    let mut out = Vec::new();
                    write_binary_short(n, &mut out);
                    assert_eq!(out, general, "{text}");
                }
                None => assert!(text.bytes().filter(u8::is_ascii_digit).count() > 19, "{text}"),
            }
        }
        for not_short in ["", "-", ".", "1e5", "1..2", "1.2.3", "12345678901234567890", "1 ", "x"] {
            assert_eq!(short(not_short.as_bytes()), None, "{not_short}");
        }
    }

    #[test]
    fn rejects_malformed_and_out_of_range() {
        for bad in
            ["", "-", "+", ".", "1..2", "1e", "1e+", "NaN", "Infinity", "0x10", "1 ", " 1", "1,5", "--1", "1e5.0"]
        {
            assert!(parse(bad.as_bytes(), &mut Vec::new()).is_err(), "{bad:?}");
        }
        for big in ["1e-16384", "1e999999999999999999999", "1e131072"] {
            let err = parse(big.as_bytes(), &mut Vec::new()).unwrap_err();
            assert!(err.contains("range"), "{big}: {err}");
        }
        assert!(parse(b"1e-16383", &mut Vec::new()).is_ok());
        assert!(parse(b"1e131071", &mut Vec::new()).is_ok());
        assert!(parse(b"0e999999", &mut Vec::new()).is_ok());
    }

    #[test]
    fn json_forms() {
        for ok in ["0", "-0", "1.5", "-1.5e+3", "1E-130", "10"] {
            assert!(is_json_number(ok.as_bytes()), "{ok}");
        }
        for not in ["+1", ".5", "5.", "007", "1e", "", "-"] {
            assert!(!is_json_number(not.as_bytes()), "{not}");
        }
        let mut digits = Vec::new();
        let mut out = Vec::new();
        write_json(&parse(b"+.50", &mut digits).unwrap(), &mut out);
        assert_eq!(out, b"50e-2");
        out.clear();
        write_json(&parse(b"-000", &mut digits).unwrap(), &mut out);
        assert_eq!(out, b"0");
    }
}
