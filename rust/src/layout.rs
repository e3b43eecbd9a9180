//! A table's layout: which attribute (and type) goes to which column, in COPY column order.
//!
//! It is built from the key schema, the conversion mode and the column registry (attribute name +
//! column type → column name, kept by the caller in the state schema) and looked up once per
//! attribute of every item, so the lookup is a hash of the raw attribute name.

use rustc_hash::FxHashMap as HashMap;

use crate::error::{CoreError, CoreResult};
use crate::ident::{self, Namer};
use crate::types::{ColumnType, DynType};

/// How items map to columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One column per attribute and type (docs/type-mapping.md).
    Columns,
    /// Registered columns (at least the keys) plus one `jsonb` column holding the whole item.
    Jsonb,
}

/// One registered column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub attribute: String,
    pub ty: ColumnType,
    pub name: String,
}

/// Where one attribute name goes: the column for each type it has been seen with.
#[derive(Debug, Clone, Default)]
pub struct AttrColumns {
    /// Set for the table's key attributes: a value of another type is a reject, not a new column.
    pub key: Option<ColumnType>,
    pub columns: Vec<(ColumnType, u16)>,
}

impl AttrColumns {
    #[inline]
    pub fn column_for(&self, ty: ColumnType) -> Option<u16> {
        self.columns.iter().find(|c| c.0 == ty).map(|c| c.1)
    }
}

#[derive(Debug, Clone)]
pub struct Layout {
    pub mode: Mode,
    /// Partition key, then the sort key if any: (attribute, type).
    pub keys: Vec<(String, DynType)>,
    /// Registered columns in COPY order; the document column, if any, comes after them.
    pub columns: Vec<Column>,
    /// The `jsonb` column holding the whole item (jsonb mode) or the attributes that have no column
    /// of their own (columns mode, once the column limit is reached).
    pub document: Option<String>,
    pub lower_case: bool,
    /// The column of each key attribute, in key order.
    pub key_columns: Vec<u16>,
    lookup: HashMap<Box<[u8]>, u32>,
    attributes: Vec<AttrColumns>,
}

impl Layout {
    pub fn new(
        mode: Mode,
        keys: Vec<(String, DynType)>,
        columns: Vec<Column>,
        document: Option<String>,
        lower_case: bool,
    ) -> CoreResult<Self> {
        if keys.is_empty() || keys.len() > 2 {
            return Err(CoreError::BadLayout("a table has a partition key and at most one sort key".into()));
        }
        if mode == Mode::Jsonb && document.is_none() {
            return Err(CoreError::BadLayout("jsonb mode needs a data column".into()));
        }
        if columns.len() + usize::from(document.is_some()) > 1600 {
            return Err(CoreError::BadLayout("PostgreSQL allows at most 1600 columns".into()));
        }
        let mut lookup: HashMap<Box<[u8]>, u32> = HashMap::default();
        let mut attributes: Vec<AttrColumns> = Vec::new();
        let mut names = std::collections::HashSet::new();
        for (i, c) in columns.iter().enumerate() {
            let next = attributes.len() as u32;
            let index = *lookup.entry(c.attribute.as_bytes().into()).or_insert(next);
            if index == next {
                attributes.push(AttrColumns::default());
            }
            let entry = &mut attributes[index as usize];
            if entry.column_for(c.ty).is_some() {
                return Err(CoreError::BadLayout(format!(
                    "attribute {:?} has two {} columns",
                    c.attribute,
                    c.ty.sql()
                )));
            }
            entry.columns.push((c.ty, i as u16));
            if !names.insert(c.name.as_str()) {
                return Err(CoreError::BadLayout(format!("column {:?} appears twice", c.name)));
            }
        }
        if let Some(d) = &document {
            if names.contains(d.as_str()) {
                return Err(CoreError::BadLayout(format!("column {d:?} appears twice")));
            }
        }
        let mut key_columns = Vec::new();
        for (name, ty) in &keys {
            let Some(col_ty) = ty.column_type().filter(|_| matches!(ty, DynType::S | DynType::N | DynType::B)) else {
                return Err(CoreError::BadLayout(format!("key {name:?} must be of type S, N or B")));
            };
            let missing = || CoreError::BadLayout(format!("key {name:?} has no {} column", col_ty.sql()));
            let index = *lookup.get(name.as_bytes()).ok_or_else(missing)?;
            let entry = &mut attributes[index as usize];
            key_columns.push(entry.column_for(col_ty).ok_or_else(missing)?);
            entry.key = Some(col_ty);
        }
        Ok(Layout { mode, keys, columns, document, lower_case, key_columns, lookup, attributes })
    }

    /// The columns an attribute name maps to (the name as raw decoded bytes).
    #[inline]
    pub fn attribute(&self, name: &[u8]) -> Option<&AttrColumns> {
        self.attribute_index(name).map(|i| self.attributes_at(i))
    }

    /// The index of an attribute name's entry, for callers that cache lookups.
    #[inline]
    pub fn attribute_index(&self, name: &[u8]) -> Option<u32> {
        self.lookup.get(name).copied()
    }

    #[inline]
    pub fn attributes_at(&self, index: u32) -> &AttrColumns {
        &self.attributes[index as usize]
    }

    /// Column names in COPY order.
    pub fn column_names(&self) -> Vec<&str> {
        self.columns.iter().map(|c| c.name.as_str()).chain(self.document.as_deref()).collect()
    }

    /// Number of fields in each row.
    pub fn width(&self) -> usize {
        self.columns.len() + usize::from(self.document.is_some())
    }

    /// Name new (attribute, type) pairs the way every worker would, given this registry.
    pub fn plan_columns(&self, new: &[(String, ColumnType)]) -> Vec<Column> {
        let mut namer = Namer::new(self.lower_case);
        for c in &self.columns {
            namer.reserve(Some(&c.attribute), &c.name);
        }
        if let Some(d) = &self.document {
            namer.reserve(None, d);
        }
        let mut planned: Vec<Column> = Vec::new();
        for (attribute, ty) in new {
            let known = self.attribute(attribute.as_bytes()).and_then(|a| a.column_for(*ty)).is_some()
                || planned.iter().any(|c| &c.attribute == attribute && c.ty == *ty);
            if !known {
                let name = namer.name(attribute, *ty);
                planned.push(Column { attribute: attribute.clone(), ty: *ty, name });
            }
        }
        planned
    }
}

/// Key columns for a key schema, named the way new columns are (so `-lc` applies to keys too).
pub fn key_columns(keys: &[(String, DynType)], lower_case: bool) -> Vec<Column> {
    let mut namer = Namer::new(lower_case);
    keys.iter()
        .filter_map(|(attribute, ty)| {
            let ty = ty.column_type()?;
            Some(Column { attribute: attribute.clone(), ty, name: namer.name(attribute, ty) })
        })
        .collect()
}

/// Quote a column or table name, checking it can be one.
pub fn quoted(name: &str) -> CoreResult<String> {
    ident::quote(name).ok_or_else(|| CoreError::BadLayout(format!("identifier {name:?} contains U+0000")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(attribute: &str, ty: ColumnType, name: &str) -> Column {
        Column { attribute: attribute.into(), ty, name: name.into() }
    }

    #[test]
    fn checks_consistency() {
        let keys = vec![("pk".to_string(), DynType::S)];
        assert!(Layout::new(Mode::Columns, keys.clone(), vec![], None, false).is_err());
        assert!(
            Layout::new(Mode::Columns, keys.clone(), vec![col("pk", ColumnType::Numeric, "pk")], None, false).is_err()
        );
        let ok =
            Layout::new(Mode::Columns, keys.clone(), vec![col("pk", ColumnType::Text, "pk")], None, false).unwrap();
        assert_eq!(ok.column_names(), ["pk"]);
        assert!(Layout::new(Mode::Jsonb, keys.clone(), vec![col("pk", ColumnType::Text, "pk")], None, false).is_err());
        let dup = vec![col("pk", ColumnType::Text, "pk"), col("a", ColumnType::Text, "pk")];
        assert!(Layout::new(Mode::Columns, keys, dup, None, false).is_err());
    }

    #[test]
    fn plans_new_columns_deterministically() {
        let keys = vec![("Id".to_string(), DynType::S)];
        let l = Layout::new(Mode::Columns, keys.clone(), key_columns(&keys, true), None, true).unwrap();
        assert_eq!(l.column_names(), ["id"]);
        let plan = l.plan_columns(&[
            ("ID".into(), ColumnType::Text),
            ("Id".into(), ColumnType::Boolean),
            ("ip".into(), ColumnType::Text),
            ("ip".into(), ColumnType::Text),
            ("Id".into(), ColumnType::Text),
        ]);
        let names: Vec<_> = plan.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["id_2", "id_boolean", "ip"]);
    }
}
