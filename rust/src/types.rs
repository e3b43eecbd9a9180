//! The DynamoDB → PostgreSQL type mapping (docs/type-mapping.md): one table, read by the encoders and,
//! through the bindings, by the DDL code, so both always agree.

/// A DynamoDB attribute value type, as tagged on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DynType {
    S,
    N,
    B,
    Bool,
    Null,
    SS,
    NS,
    BS,
    L,
    M,
}

impl DynType {
    /// The type for a wire tag (`"S"`, `"BOOL"`, …), if it is one.
    pub fn from_tag(tag: &[u8]) -> Option<Self> {
        Some(match tag {
            b"S" => DynType::S,
            b"N" => DynType::N,
            b"B" => DynType::B,
            b"BOOL" => DynType::Bool,
            b"NULL" => DynType::Null,
            b"SS" => DynType::SS,
            b"NS" => DynType::NS,
            b"BS" => DynType::BS,
            b"L" => DynType::L,
            b"M" => DynType::M,
            _ => return None,
        })
    }

    pub fn tag(self) -> &'static str {
        match self {
            DynType::S => "S",
            DynType::N => "N",
            DynType::B => "B",
            DynType::Bool => "BOOL",
            DynType::Null => "NULL",
            DynType::SS => "SS",
            DynType::NS => "NS",
            DynType::BS => "BS",
            DynType::L => "L",
            DynType::M => "M",
        }
    }

    /// The column type that holds this value; `None` for NULL, which creates no column.
    pub fn column_type(self) -> Option<ColumnType> {
        Some(match self {
            DynType::S => ColumnType::Text,
            DynType::N => ColumnType::Numeric,
            DynType::B => ColumnType::Bytea,
            DynType::Bool => ColumnType::Boolean,
            DynType::SS => ColumnType::TextArray,
            DynType::NS => ColumnType::NumericArray,
            DynType::BS => ColumnType::ByteaArray,
            DynType::L | DynType::M => ColumnType::Jsonb,
            DynType::Null => return None,
        })
    }
}

/// A PostgreSQL column type we create.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnType {
    Text,
    Numeric,
    Bytea,
    Boolean,
    TextArray,
    NumericArray,
    ByteaArray,
    Jsonb,
}

impl ColumnType {
    pub const ALL: [ColumnType; 8] = [
        ColumnType::Text,
        ColumnType::Numeric,
        ColumnType::Bytea,
        ColumnType::Boolean,
        ColumnType::TextArray,
        ColumnType::NumericArray,
        ColumnType::ByteaArray,
        ColumnType::Jsonb,
    ];

    /// The SQL spelling, as used in DDL and in the column registry.
    pub fn sql(self) -> &'static str {
        match self {
            ColumnType::Text => "text",
            ColumnType::Numeric => "numeric",
            ColumnType::Bytea => "bytea",
            ColumnType::Boolean => "boolean",
            ColumnType::TextArray => "text[]",
            ColumnType::NumericArray => "numeric[]",
            ColumnType::ByteaArray => "bytea[]",
            ColumnType::Jsonb => "jsonb",
        }
    }

    pub fn from_sql(sql: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.sql() == sql)
    }

    /// The suffix of a type-clash column (`ip` holding a boolean becomes `ip_boolean`).
    pub fn suffix(self) -> &'static str {
        match self {
            ColumnType::Text => "text",
            ColumnType::Numeric => "numeric",
            ColumnType::Bytea => "bytea",
            ColumnType::Boolean => "boolean",
            ColumnType::TextArray => "text_array",
            ColumnType::NumericArray => "numeric_array",
            ColumnType::ByteaArray => "bytea_array",
            ColumnType::Jsonb => "jsonb",
        }
    }

    /// The element type OID of an array type (in binary COPY, arrays name their element type).
    pub fn element_oid(self) -> Option<u32> {
        match self {
            ColumnType::TextArray => Some(25),
            ColumnType::NumericArray => Some(1700),
            ColumnType::ByteaArray => Some(17),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tag_round_trips() {
        for tag in ["S", "N", "B", "BOOL", "NULL", "SS", "NS", "BS", "L", "M"] {
            assert_eq!(DynType::from_tag(tag.as_bytes()).unwrap().tag(), tag);
        }
        assert_eq!(DynType::from_tag(b"s"), None);
        assert_eq!(DynType::from_tag(b"BOOLEAN"), None);
    }

    #[test]
    fn sql_names_round_trip() {
        for t in ColumnType::ALL {
            assert_eq!(ColumnType::from_sql(t.sql()), Some(t));
        }
        assert_eq!(DynType::L.column_type(), DynType::M.column_type());
        assert_eq!(DynType::Null.column_type(), None);
    }
}
