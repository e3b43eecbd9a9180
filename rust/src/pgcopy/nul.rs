//! PostgreSQL's text, jsonb and identifiers cannot hold U+0000: the one check, for all three.

use memchr::memchr;

use crate::error::Reason;

/// `Err` with the reason an item is rejected when `text` (unescaped) holds U+0000: `what` names
/// the text, `kind` what in PostgreSQL would have held it.
pub fn check(text: &[u8], what: &str, kind: &str) -> Result<(), Reason> {
    if memchr(0, text).is_some() {
        return Err(format!("{what} contains U+0000, which PostgreSQL {kind} cannot store").into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn nul_anywhere_is_refused() {
        assert!(check(b"plain", "string", "text").is_ok());
        assert!(check(b"", "string", "jsonb").is_ok());
        for bad in [&[0u8][..], &[b'a', 0], &[0, b'b'], &[b'a', 0, b'b']] {
            assert!(check(bad, "string", "text").is_err(), "{bad:?}");
        }
    }
}
