//! Strict standard base64 (RFC 4648, padded), as DynamoDB sends binary values.

const INVALID: u8 = 0xFF;

const DECODE: [u8; 256] = {
    let mut t = [INVALID; 256];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut i = 0;
    while i < 64 {
        t[alphabet[i] as usize] = i as u8;
        i += 1;
    }
    t
};

/// Decode `text` and append the bytes to `out`. Padding is required; whitespace is not allowed.
pub fn decode(text: &[u8], out: &mut Vec<u8>) -> Result<(), &'static str> {
    if text.len() % 4 != 0 {
        return Err("invalid base64: length is not a multiple of 4");
    }
    out.reserve(text.len() / 4 * 3);
    let chunks = text.len() / 4;
    for (n, q) in text.chunks_exact(4).enumerate() {
        let last = n + 1 == chunks;
        let pad = if last { q.iter().rev().take_while(|&&c| c == b'=').count() } else { 0 };
        if pad > 2 {
            return Err("invalid base64: too much padding");
        }
        let mut v = 0u32;
        for &c in &q[..4 - pad] {
            let d = DECODE[usize::from(c)];
            if d == INVALID {
                return Err("invalid base64 character");
            }
            v = (v << 6) | u32::from(d);
        }
        v <<= 6 * pad as u32;
        let bytes = v.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - pad]);
    }
    Ok(())
}

/// Check `text` is valid base64 without keeping the bytes.
pub fn validate(text: &[u8], scratch: &mut Vec<u8>) -> Result<(), &'static str> {
    scratch.clear();
    decode(text, scratch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Result<Vec<u8>, &'static str> {
        let mut out = Vec::new();
        decode(s.as_bytes(), &mut out).map(|()| out)
    }

    #[test]
    fn decodes() {
        assert_eq!(dec("").unwrap(), b"");
        assert_eq!(dec("AA==").unwrap(), b"\0");
        assert_eq!(dec("aGk=").unwrap(), b"hi");
        assert_eq!(dec("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(dec("+/+/").unwrap(), [0xfb, 0xff, 0xbf]);
    }

    #[test]
    fn rejects() {
        for bad in ["A", "AA=", "A===", "AA==AA==", "aGk*", "aG k", "=AAA", "AA=A"] {
            assert!(dec(bad).is_err(), "{bad}");
        }
    }
}
