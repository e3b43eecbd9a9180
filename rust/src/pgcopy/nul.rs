//! PostgreSQL's text and jsonb cannot hold U+0000: the one check, for both.

use memchr::memchr;

use crate::error::Reason;

/// `Err` with the reason an item is rejected when ``text`` (unescaped) holds U+0000; `kind` says
/// which PostgreSQL type would have held it.
pub fn check(text: &[u8], kind: &str) -> Result<(), Reason> {
    if memchr(0, text).is_some() {
        return Err(format!("string contains U+0000, which PostgreSQL {kind} cannot store").into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn nul_anywhere_is_refused() {
        assert!(check(b"plain", "text").is_ok());
        assert!(check(b"", "jsonb").is_ok());
        for bad in [&[0u8][..], &[b'a', 0], &[0, b'b'], &[b'a', 0, b'b']] {
            assert!(check(bad, "text").is_err(), "{bad:?}");
        }
    }
}
