//! PostgreSQL identifiers: quoting, the 63-byte limit, and naming new columns deterministically.

use std::collections::{HashMap, HashSet};

use crate::types::ColumnType;

/// PostgreSQL's `NAMEDATALEN - 1`: longer identifiers are silently cut by the server.
pub const MAX_IDENT_BYTES: usize = 63;
/// `_` plus 8 hex digits of the hash that keeps cut names distinct.
const HASH_SUFFIX_BYTES: usize = 9;

/// Quote an identifier for SQL: always quoted, embedded quotes doubled. `None` if it holds U+0000,
/// which no identifier can contain.
pub fn quote(name: &str) -> Option<String> {
    if name.contains('\0') {
        return None;
    }
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
    Some(out)
}

/// FNV-1a, 64-bit: a stable hash (the same on every host and version) for cut names.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Make `name` fit in 63 bytes: names that fit are unchanged; longer ones are cut at a character
/// boundary and given `_` and 8 hex digits of a hash of the whole name, so distinct long names stay
/// distinct.
pub fn fit(name: &str) -> String {
    if name.len() <= MAX_IDENT_BYTES {
        return name.to_owned();
    }
    let mut cut = MAX_IDENT_BYTES - HASH_SUFFIX_BYTES;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}_{:08x}", &name[..cut], fnv1a(name.as_bytes()) as u32)
}

/// Chooses column names for attributes, the same way on every worker and host given the same
/// registry in the same order.
///
/// The first column of an attribute is named after it (lower-cased with `-lc`); a later column of
/// the same attribute with another type gets the type as suffix (`ip_boolean`); every name is fitted
/// to 63 bytes; a name already taken (after lower-casing or cutting) gets `_2`, `_3`, ….
#[derive(Debug, Default, Clone)]
pub struct Namer {
    taken: HashSet<String>,
    columns_of: HashMap<String, usize>,
    lower_case: bool,
}

impl Namer {
    pub fn new(lower_case: bool) -> Self {
        Namer { lower_case, ..Namer::default() }
    }

    /// Record a column that exists already (a key, `data`, or an earlier registration).
    pub fn reserve(&mut self, attribute: Option<&str>, column: &str) {
        self.taken.insert(column.to_owned());
        if let Some(a) = attribute {
            *self.columns_of.entry(a.to_owned()).or_default() += 1;
        }
    }

    /// Name the column of a new (attribute, type) pair and record it.
    pub fn name(&mut self, attribute: &str, ty: ColumnType) -> String {
        let base = if self.lower_case { attribute.to_lowercase() } else { attribute.to_owned() };
        let first = if self.columns_of.get(attribute).copied().unwrap_or(0) == 0 {
            base
        } else {
            format!("{base}_{}", ty.suffix())
        };
        let mut candidate = fit(&first);
        let mut n = 2;
        while self.taken.contains(&candidate) {
            candidate = fit(&format!("{first}_{n}"));
            n += 1;
        }
        self.reserve(Some(attribute), &candidate);
        candidate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_everything() {
        assert_eq!(quote("a").unwrap(), "\"a\"");
        assert_eq!(quote("a\"b").unwrap(), "\"a\"\"b\"");
        assert_eq!(quote("x\"; DROP TABLE t; --").unwrap(), "\"x\"\"; DROP TABLE t; --\"");
        assert_eq!(quote("a\0b"), None);
    }

    #[test]
    fn fits_63_bytes_at_char_boundary() {
        assert_eq!(fit("short"), "short");
        let exact = "a".repeat(63);
        assert_eq!(fit(&exact), exact);
        let long = "é".repeat(40); // 80 bytes
        let f = fit(&long);
        assert!(f.len() <= 63, "{}", f.len());
        assert!(f.starts_with(&"é".repeat(27)));
        assert_ne!(fit(&(long.clone() + "x")), fit(&(long + "y")));
    }

    #[test]
    fn names_clashes_and_collisions() {
        let mut n = Namer::new(false);
        n.reserve(Some("pk"), "pk");
        assert_eq!(n.name("ip", ColumnType::Text), "ip");
        assert_eq!(n.name("ip", ColumnType::Boolean), "ip_boolean");
        assert_eq!(n.name("ip_boolean", ColumnType::Text), "ip_boolean_2");
        assert_eq!(n.name("Id", ColumnType::Text), "Id");
        assert_eq!(n.name("id", ColumnType::Text), "id");

        let mut lc = Namer::new(true);
        assert_eq!(lc.name("Id", ColumnType::Text), "id");
        assert_eq!(lc.name("ID", ColumnType::Text), "id_2");
        let long_a = "a".repeat(70);
        let c1 = lc.name(&long_a, ColumnType::Text);
        let c2 = lc.name(&long_a, ColumnType::Numeric);
        assert!(c1.len() <= 63 && c2.len() <= 63 && c1 != c2);
    }
}
