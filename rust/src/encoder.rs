//! Raw DynamoDB bodies to binary COPY rows for one table layout.
//!
//! Each item is read once: every attribute's value is converted as it is read, into a field of its
//! column (or a member of the document column) in a per-item buffer; the row is then put together
//! column by column in layout order from those fields. Nothing is allocated per item: the fields,
//! slots and scratch buffers are reused.

use crate::error::{CoreError, CoreResult, Reason};
use crate::json::{write_escaped, JsonResult, RawStr, Reader};
use crate::layout::{Layout, Mode};
use crate::pgcopy::jsonb;
use crate::pgcopy::{self, Scratch};
use crate::typed;
use crate::types::{ColumnType, DynType};

/// An item that cannot be represented, with what is needed to find and replay it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// The item's key attributes as DynamoDB JSON (`{"pk":{"S":"a"}}`), as far as they could be read.
    pub key: Vec<u8>,
    /// The item as it was received (DynamoDB JSON).
    pub item: Vec<u8>,
    pub reason: String,
}

/// Rows for a layout, and what kept some items out of them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Encoded {
    /// Binary COPY rows (no header or trailer). Complete only when `unknown` is empty.
    pub rows: Vec<u8>,
    pub row_count: u64,
    /// Items read, rows and rejects together.
    pub item_count: u64,
    /// Attributes (name, column type) the layout lacks, in order of first appearance. When any is
    /// found, `rows` and `rejects` are left empty: register the columns and encode again.
    pub unknown: Vec<(String, ColumnType)>,
    pub rejects: Vec<Reject>,
}

/// One Scan response: its rows plus the response's own fields.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScanPage {
    pub encoded: Encoded,
    pub count: Option<u64>,
    pub scanned_count: Option<u64>,
    /// The raw JSON of `LastEvaluatedKey`; absent on the last page.
    pub last_evaluated_key: Option<Vec<u8>>,
    /// `ConsumedCapacity.CapacityUnits`, when the request asked for it.
    pub consumed_capacity: Option<f64>,
}

/// One attribute of the item being encoded.
#[derive(Clone, Copy)]
struct Attr<'a> {
    name: RawStr<'a>,
    /// The typed value object, `{"S":"x"}`, for the key of a reject.
    object: &'a [u8],
    /// Its column's field in `Encoder::fields` (empty when it has no column).
    field: Span,
    /// Its `"name":value` member of the document column in `Encoder::fields`, if it has one.
    member: Option<Span>,
}

/// A range of `Encoder::fields`.
#[derive(Clone, Copy, Default)]
struct Span {
    start: u32,
    end: u32,
}

pub(crate) fn bad_body(offset: usize, why: &str) -> CoreError {
    CoreError::BadBody { offset, why: why.to_string() }
}

/// Encodes bodies for one layout. Holds only reusable buffers: make one per call or per thread.
pub struct Encoder<'l, 'a> {
    pub(crate) layout: &'l Layout,
    attrs: Vec<Attr<'a>>,
    /// For each column, 1 + the index in `attrs` of its value, or 0.
    slots: Vec<u32>,
    /// The current item's fields and document members, converted as they were read.
    fields: Vec<u8>,
    pub(crate) scratch: Scratch,
    name: Vec<u8>,
    /// The attribute names of the previous item, by position, with their layout entries: items of
    /// one table mostly list attributes in the same order, so a comparison replaces a hash lookup.
    predicted: Vec<(&'a [u8], Option<u32>)>,
    pub(crate) out: Encoded,
}

impl<'l, 'a> Encoder<'l, 'a> {
    pub fn new(layout: &'l Layout) -> Self {
        Self::with_buffer(layout, Vec::new())
    }

    /// An encoder that writes rows into `rows` (cleared first), so a caller can reuse one buffer
    /// across pages instead of faulting in fresh memory for each.
    pub fn with_buffer(layout: &'l Layout, mut rows: Vec<u8>) -> Self {
        rows.clear();
        Encoder {
            layout,
            attrs: Vec::new(),
            slots: vec![0; layout.columns.len()],
            fields: Vec::new(),
            scratch: Scratch::default(),
            name: Vec::new(),
            predicted: Vec::new(),
            out: Encoded { rows, ..Encoded::default() },
        }
    }

    /// Encode the raw body of a Scan response.
    pub fn scan_page(mut self, body: &'a [u8]) -> CoreResult<ScanPage> {
        // Rows are smaller than the JSON they come from: one reservation covers the page.
        self.out.rows.reserve(body.len());
        let mut r = Reader::new(body);
        let mut page = ScanPage::default();
        let mut saw_items = false;
        let mut error_type: Option<String> = None;
        let mut message = String::new();
        r.members(|r, key| -> CoreResult<()> {
            match key.raw {
                b"Items" => {
                    self.items(r)?;
                    saw_items = true;
                }
                b"Count" => page.count = Some(r.unsigned()?),
                b"ScannedCount" => page.scanned_count = Some(r.unsigned()?),
                b"LastEvaluatedKey" => {
                    let at = r.pos;
                    let span = r.value_span()?;
                    if span.first() != Some(&b'{') {
                        return Err(bad_body(at, "LastEvaluatedKey is not an object"));
                    }
                    page.last_evaluated_key = Some(span.to_vec());
                }
                b"ConsumedCapacity" => page.consumed_capacity = consumed_capacity(r)?,
                b"__type" | b"message" | b"Message" => {
                    let s = r.string()?;
                    let text = String::from_utf8_lossy(s.decoded(&mut self.name).unwrap_or(s.raw)).into_owned();
                    if key.raw == b"__type" {
                        error_type = Some(text);
                    } else {
                        message = text;
                    }
                }
                _ => r.skip_value()?,
            }
            Ok(())
        })?;
        if !r.at_end() {
            return Err(bad_body(r.pos, "unexpected data after the response object"));
        }
        if let Some(t) = error_type {
            // The code is what follows the last '#' (com.amazonaws.dynamodb.v20120810#Code).
            let code = t.rsplit('#').next().unwrap_or(&t).to_string();
            return Err(CoreError::ServiceError { code, message });
        }
        if !saw_items && page.count.is_none() {
            return Err(bad_body(0, "no Items and no Count: this is not a Scan response"));
        }
        page.encoded = self.finish();
        Ok(page)
    }

    /// Encode one item given as a DynamoDB attribute map (a stream image or an export line's Item).
    pub fn item(mut self, body: &'a [u8]) -> CoreResult<Encoded> {
        let mut r = Reader::new(body);
        if r.peek() != Some(b'{') {
            return Err(bad_body(r.pos, "an item must be a JSON object"));
        }
        self.one_item(&mut r)?;
        if !r.at_end() {
            return Err(bad_body(r.pos, "unexpected data after the item"));
        }
        Ok(self.finish())
    }

    /// Encode lines of a DynamoDB export data file in DYNAMODB_JSON, decompressed: one
    /// `{"Item":{…}}` a line, `body` holding whole lines. A line that is not such an object makes
    /// the whole body unreadable (the file is damaged); an item that cannot be stored is a reject.
    pub fn export_lines(mut self, body: &'a [u8]) -> CoreResult<Encoded> {
        self.out.rows.reserve(body.len());
        let mut r = Reader::new(body);
        while !r.at_end() {
            let line = r.pos;
            if r.peek() != Some(b'{') {
                return Err(bad_body(line, "an export line is not a JSON object"));
            }
            let mut items = 0;
            r.members(|r, key| -> CoreResult<()> {
                if key.raw == b"Item" {
                    items += 1;
                    self.one_item(r)?;
                } else {
                    r.skip_value()?;
                }
                Ok(())
            })?;
            if items != 1 {
                return Err(bad_body(line, "an export line holds no Item, or more than one"));
            }
        }
        Ok(self.finish())
    }

    pub(crate) fn finish(mut self) -> Encoded {
        if !self.out.unknown.is_empty() {
            self.out.rows.clear();
            self.out.row_count = 0;
            self.out.rejects.clear();
        }
        self.out
    }

    fn items(&mut self, r: &mut Reader<'a>) -> JsonResult<()> {
        r.eat(b'[', "Items is not an array")?;
        if r.eat_if(b']') {
            return Ok(());
        }
        loop {
            self.one_item(r)?;
            if r.eat_if(b',') {
                continue;
            }
            r.eat(b']', "expected ',' or ']' in Items")?;
            return Ok(());
        }
    }

    pub(crate) fn one_item(&mut self, r: &mut Reader<'a>) -> JsonResult<()> {
        self.out.item_count += 1;
        r.ws();
        let start = r.pos;
        let verdict = self.read_item(r)?;
        let item = &r.buf[start..r.pos];
        match verdict {
            // Once an attribute is missing from the layout the page is encoded again after the
            // columns are added: writing rows now would be wasted work.
            Ok(()) if !self.out.unknown.is_empty() => {}
            Ok(()) => self.write_row(),
            Err(reason) => {
                let key = self.key_json();
                self.out.rejects.push(Reject { key, item: item.to_vec(), reason: reason.into_owned() });
            }
        }
        self.slots.fill(0);
        self.attrs.clear();
        self.fields.clear();
        Ok(())
    }

    /// Read the item, converting each attribute into its field. Syntax errors end the whole call;
    /// anything else about the item is a reject, and the rest of the item is only checked for
    /// syntax.
    fn read_item(&mut self, r: &mut Reader<'a>) -> JsonResult<Result<(), Reason>> {
        if r.peek() != Some(b'{') {
            r.skip_value()?;
            return Ok(Err("item is not a JSON object".into()));
        }
        r.pos += 1;
        let mut verdict: Result<(), Reason> = Ok(());
        let mut more = !r.eat_if(b'}');
        while more {
            let name = r.string()?;
            r.eat(b':', "expected ':'")?;
            r.ws();
            let object_start = r.pos;
            let mut attr = Attr { name, object: &[], field: Span::default(), member: None };
            if verdict.is_ok() {
                if let Err(why) = self.read_attribute(r, &mut attr) {
                    // Find the next attribute: skip the whole object, checking its syntax.
                    r.pos = object_start;
                    r.skip_value()?;
                    verdict = Err(why);
                }
            } else {
                r.skip_value()?;
            }
            attr.object = &r.buf[object_start..r.pos];
            self.attrs.push(attr);
            more = r.eat_if(b',');
            if !more {
                r.eat(b'}', "expected ',' or '}' in an item")?;
            }
        }
        Ok(verdict.and_then(|()| self.check_keys()))
    }

    /// Read one typed value object into its column's field and, where it belongs there, its
    /// member of the document column; note it when the layout lacks its column.
    fn read_attribute(&mut self, r: &mut Reader<'a>, attr: &mut Attr<'a>) -> Result<(), Reason> {
        let ty = typed::open(r, &mut self.name).map_err(|_| Reason::from("attribute value is malformed"))??;
        let value_start = r.pos;
        let entry = self.attribute_entry(attr.name)?;
        let name: &[u8] = if attr.name.escaped { &self.name } else { attr.name.raw };
        let col_ty = ty.column_type();
        let known = entry.map(|e| self.layout.attributes_at(e));
        if let Some(key_ty) = known.and_then(|k| k.key) {
            if col_ty != Some(key_ty) {
                return Err(format!(
                    "key attribute {:?} has type {}, the key schema says {}",
                    String::from_utf8_lossy(name),
                    ty.tag(),
                    key_ty.sql()
                )
                .into());
            }
        }
        let column = known.and_then(|k| col_ty.and_then(|t| k.column_for(t)));
        let named = |why: Reason| Reason::from(format!("attribute {:?}: {why}", String::from_utf8_lossy(name)));
        let mut consumed = false;
        if let Some(col) = column {
            let slot = &mut self.slots[usize::from(col)];
            if *slot != 0 {
                return Err(format!("attribute {:?} appears twice", String::from_utf8_lossy(name)).into());
            }
            *slot = self.attrs.len() as u32 + 1;
            let start = self.fields.len();
            let col_ty = self.layout.columns[usize::from(col)].ty;
            pgcopy::write_field(col_ty, ty, r, &mut self.fields, &mut self.scratch).map_err(named)?;
            attr.field = span(start, self.fields.len());
            consumed = true;
        }
        let to_document = match self.layout.mode {
            Mode::Jsonb => true,
            Mode::Columns => self.layout.document.is_some() && column.is_none() && ty != DynType::Null,
        };
        if to_document {
            // Only key and registered columns in jsonb mode are also in the document: scalars,
            // cheap to read a second time.
            r.pos = value_start;
            let start = self.fields.len();
            jsonb::write_string(attr.name, &mut self.fields, &mut self.scratch)?;
            self.fields.push(b':');
            jsonb::write_from(ty, r, &mut self.fields, &mut self.scratch, 0).map_err(named)?;
            attr.member = Some(span(start, self.fields.len()));
            consumed = true;
        }
        if let (None, Some(new_ty), Mode::Columns, None) = (column, col_ty, self.layout.mode, &self.layout.document) {
            if name.is_empty() {
                return Err("empty attribute name cannot be a column".into());
            }
            // A value that could never be stored must not create a column: convert it now, and
            // reject the item instead.
            let start = self.fields.len();
            pgcopy::write_field(new_ty, ty, r, &mut self.fields, &mut self.scratch).map_err(named)?;
            self.fields.truncate(start);
            consumed = true;
            if !self.out.unknown.iter().any(|(n, t)| n.as_bytes() == name && *t == new_ty) {
                // Valid UTF-8: the reader checked the name as it read it, and escapes decode to UTF-8.
                self.out.unknown.push((String::from_utf8_lossy(name).into_owned(), new_ty));
            }
        }
        if !consumed {
            // NULL without a column: nothing is stored.
            r.skip_value().map_err(|_| Reason::from("attribute value is malformed"))?;
        }
        typed::close(r)
    }

    /// The layout entry of an attribute name. Items of one table mostly list attributes in the
    /// same order, so a comparison with the previous item's name at this position replaces the
    /// hash lookup. An escaped name is decoded into `self.name`.
    fn attribute_entry(&mut self, name: RawStr<'a>) -> Result<Option<u32>, Reason> {
        if name.escaped {
            self.name.clear();
            crate::json::unescape(name.raw, &mut self.name)
                .map_err(|e| Reason::from(format!("attribute name: {e}")))?;
            // Only an escape can produce U+0000: the reader refuses raw control characters.
            pgcopy::nul::check(&self.name, "attribute name", "column names and jsonb keys")?;
            return Ok(self.layout.attribute_index(&self.name));
        }
        let position = self.attrs.len();
        Ok(match self.predicted.get(position) {
            Some(&(seen, entry)) if seen == name.raw => entry,
            _ => {
                let entry = self.layout.attribute_index(name.raw);
                self.predicted.truncate(position);
                self.predicted.push((name.raw, entry));
                entry
            }
        })
    }

    fn check_keys(&self) -> Result<(), Reason> {
        for ((name, _), &col) in self.layout.keys.iter().zip(&self.layout.key_columns) {
            if self.slots[usize::from(col)] == 0 {
                return Err(format!("key attribute {name:?} is missing").into());
            }
        }
        Ok(())
    }

    /// Put the row together from the fields converted while reading, in layout order.
    fn write_row(&mut self) {
        let out = &mut self.out.rows;
        out.extend_from_slice(&(self.layout.width() as i16).to_be_bytes());
        for &slot in &self.slots {
            if slot == 0 {
                pgcopy::write_null(out);
            } else {
                let f = self.attrs[slot as usize - 1].field;
                out.extend_from_slice(&self.fields[f.start as usize..f.end as usize]);
            }
        }
        if self.layout.document.is_some() {
            let mut members = self.attrs.iter().filter_map(|a| a.member).peekable();
            if members.peek().is_none() && self.layout.mode == Mode::Columns {
                pgcopy::write_null(out);
            } else {
                let at = out.len();
                out.extend_from_slice(&[0, 0, 0, 0, 1]);
                out.push(b'{');
                for (i, m) in members.enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(&self.fields[m.start as usize..m.end as usize]);
                }
                out.push(b'}');
                let len = (out.len() - at - 4) as i32;
                out[at..at + 4].copy_from_slice(&len.to_be_bytes());
            }
        }
        self.out.row_count += 1;
    }

    /// The key attributes of the current item as DynamoDB JSON, for the reject table.
    /// Only attributes of the key schema's type count: one of another type is not the key.
    fn key_json(&mut self) -> Vec<u8> {
        let mut out = vec![b'{'];
        for (name, ty) in &self.layout.keys {
            let found = self.attrs.iter().find(|a| {
                a.name.decoded(&mut self.name).is_ok_and(|n| n == name.as_bytes())
                    && typed::open(&mut Reader::new(a.object), &mut self.scratch.text).is_ok_and(|t| t == Ok(*ty))
            });
            if let Some(a) = found {
                if out.len() > 1 {
                    out.push(b',');
                }
                write_escaped(name.as_bytes(), &mut out);
                out.push(b':');
                out.extend_from_slice(a.object);
            }
        }
        out.push(b'}');
        out
    }
}

fn span(start: usize, end: usize) -> Span {
    Span { start: start as u32, end: end as u32 }
}

fn consumed_capacity(r: &mut Reader<'_>) -> JsonResult<Option<f64>> {
    if r.peek() == Some(b'n') {
        r.skip_value()?;
        return Ok(None);
    }
    let mut units = None;
    r.members(|r, key| {
        if key.raw == b"CapacityUnits" {
            units = Some(r.double()?);
        } else {
            r.skip_value()?;
        }
        Ok::<(), crate::json::SyntaxError>(())
    })?;
    Ok(units)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{key_columns, Column};

    fn layout(extra: &[(&str, ColumnType)]) -> Layout {
        let keys = vec![("pk".to_string(), DynType::S), ("sk".to_string(), DynType::N)];
        let mut cols = key_columns(&keys, false);
        for (a, t) in extra {
            cols.push(Column { attribute: (*a).into(), ty: *t, name: (*a).into() });
        }
        Layout::new(Mode::Columns, keys, cols, None, false).unwrap()
    }

    /// Split binary COPY rows into fields (None for NULL).
    fn fields(rows: &[u8]) -> Vec<Vec<Option<Vec<u8>>>> {
        let mut out = Vec::new();
        let mut p = 0;
        while p < rows.len() {
            let n = i16::from_be_bytes([rows[p], rows[p + 1]]);
            p += 2;
            let mut row = Vec::new();
            for _ in 0..n {
                let len = i32::from_be_bytes(rows[p..p + 4].try_into().unwrap());
                p += 4;
                if len < 0 {
                    row.push(None);
                } else {
                    row.push(Some(rows[p..p + len as usize].to_vec()));
                    p += len as usize;
                }
            }
            out.push(row);
        }
        out
    }

    fn page(items: &str) -> String {
        format!(
            r#"{{"Items":[{items}],"Count":2,"ScannedCount":3,"ConsumedCapacity":{{"TableName":"t","CapacityUnits":1.5}}}}"#
        )
    }

    #[test]
    fn encodes_rows_in_layout_order() {
        let l = layout(&[("t", ColumnType::Text), ("b", ColumnType::Boolean), ("x", ColumnType::Bytea)]);
        let body = page(
            r#"{"b":{"BOOL":true},"sk":{"N":"1"},"pk":{"S":"a\nb"},"x":{"B":"aGk="}}, {"pk":{"S":"c"},"sk":{"N":"2"},"z":{"NULL":true}}"#,
        );
        let p = Encoder::new(&l).scan_page(body.as_bytes()).unwrap();
        assert_eq!((p.count, p.scanned_count, p.consumed_capacity), (Some(2), Some(3), Some(1.5)));
        assert_eq!(p.last_evaluated_key, None);
        let e = p.encoded;
        assert!(e.unknown.is_empty() && e.rejects.is_empty());
        assert_eq!((e.row_count, e.item_count), (2, 2));
        let rows = fields(&e.rows);
        assert_eq!(rows[0][0].as_deref(), Some(&b"a\nb"[..]));
        assert_eq!(rows[0][2], None);
        assert_eq!(rows[0][3].as_deref(), Some(&[1u8][..]));
        assert_eq!(rows[0][4].as_deref(), Some(&b"hi"[..]));
        assert_eq!(rows[1][0].as_deref(), Some(&b"c"[..]));
        assert_eq!(rows[1][2..], [None, None, None]);
    }

    #[test]
    fn reports_unknown_attributes_and_holds_rows() {
        let l = layout(&[("ip", ColumnType::Text)]);
        let body = page(
            r#"{"pk":{"S":"a"},"sk":{"N":"1"},"ip":{"BOOL":true},"new":{"SS":["x"]},"n":{"NULL":true}}, {"pk":{"S":"b"},"sk":{"N":"1"},"new":{"SS":["y"]}}"#,
        );
        let e = Encoder::new(&l).scan_page(body.as_bytes()).unwrap().encoded;
        assert_eq!(e.unknown, [("ip".to_string(), ColumnType::Boolean), ("new".to_string(), ColumnType::TextArray)]);
        assert!(e.rows.is_empty() && e.row_count == 0 && e.rejects.is_empty());
    }

    #[test]
    fn an_unknown_attribute_that_cannot_be_stored_creates_no_column() {
        let l = layout(&[]);
        let body = page(r#"{"pk":{"S":"a"},"sk":{"N":"1"},"bad":{"S":"x\u0000"}}, {"pk":{"S":"b"},"sk":{"N":"2"}}"#);
        let e = Encoder::new(&l).scan_page(body.as_bytes()).unwrap().encoded;
        assert!(e.unknown.is_empty(), "{:?}", e.unknown);
        assert_eq!((e.row_count, e.rejects.len()), (1, 1));
        assert!(e.rejects[0].reason.contains("\"bad\""), "{}", e.rejects[0].reason);
    }

    #[test]
    fn rejects_items_and_goes_on() {
        let l = layout(&[("t", ColumnType::Text), ("n", ColumnType::Numeric)]);
        let cases = [
            (r#"{"pk":{"S":"a"},"sk":{"N":"1"},"t":{"S":"x\u0000"}}"#, "U+0000"),
            (r#"{"pk":{"S":"a"},"sk":{"N":"1"},"n":{"N":"1e"}}"#, "malformed number"),
            (r#"{"pk":{"S":"a"}}"#, "\"sk\" is missing"),
            ("{}", "\"pk\" is missing"),
            (r#"{"pk":{"N":"1"},"sk":{"N":"1"}}"#, "key attribute \"pk\" has type N"),
            (r#"{"pk":{"S":"a"},"sk":{"N":"1"},"t":{"S":"x"},"t":{"S":"y"}}"#, "appears twice"),
            (r#"{"pk":{"S":"a"},"sk":{"N":"1"},"t":{"Q":"x"}}"#, "unknown attribute type"),
            (r#"{"pk":{"S":"a"},"sk":{"N":"1"},"t":{"S":"x","N":"1"}}"#, "more than one type"),
            (r#"{"pk":{"S":"a"},"sk":{"N":"1"},"t":"x"}"#, "not a typed object"),
            (r#"{"pk":{"S":"a"},"sk":{"N":"1"},"a\u0000b":{"S":"x"}}"#, "attribute name contains U+0000"),
            (r#""not an item""#, "not a JSON object"),
        ];
        for (item, why) in cases {
            let body = page(&format!(r#"{item},{{"pk":{{"S":"ok"}},"sk":{{"N":"9"}}}}"#));
            let e = Encoder::new(&l).scan_page(body.as_bytes()).unwrap().encoded;
            assert_eq!(e.row_count, 1, "{item}");
            assert_eq!(e.rejects.len(), 1, "{item}");
            let r = &e.rejects[0];
            assert!(r.reason.contains(why), "{item}: {}", r.reason);
            assert_eq!(r.item, item.as_bytes());
            assert_eq!(fields(&e.rows)[0][0].as_deref(), Some(&b"ok"[..]));
        }
        let body = page(r#"{"sk":{"N":"1"},"pk":{"S":"k"},"n":{"N":"x"}}"#);
        let e = Encoder::new(&l).scan_page(body.as_bytes()).unwrap().encoded;
        assert_eq!(e.rejects[0].key, br#"{"pk":{"S":"k"},"sk":{"N":"1"}}"#);
        // A key attribute of another type is not part of the key, wherever it comes in the item.
        for item in [r#"{"pk":{"N":"1"},"sk":{"N":"1"}}"#, r#"{"t":{"Q":"x"},"pk":{"N":"1"},"sk":{"N":"1"}}"#] {
            let e = Encoder::new(&l).scan_page(page(item).as_bytes()).unwrap().encoded;
            assert_eq!(e.rejects[0].key, br#"{"sk":{"N":"1"}}"#, "{item}");
        }
    }

    #[test]
    fn bad_bodies_are_one_error() {
        let l = layout(&[]);
        for bad in [
            &b""[..],
            b"[]",
            b"{",
            b"{\"Items\":[{\"pk\":{\"S\":\"a\"}",
            b"{\"Items\":{}}",
            b"{\"Count\":1} x",
            b"\xff\xfe",
            b"{\"Other\":1}",
            b"{\"Items\":[],\"Count\":-1}",
            b"null",
        ] {
            assert!(matches!(Encoder::new(&l).scan_page(bad), Err(CoreError::BadBody { .. })), "{bad:?}");
        }
        let err = Encoder::new(&l)
            .scan_page(br#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"slow down"}"#)
            .unwrap_err();
        assert_eq!(
            err,
            CoreError::ServiceError {
                code: "ProvisionedThroughputExceededException".into(),
                message: "slow down".into()
            }
        );
        let p =
            Encoder::new(&l).scan_page(br#"{"Count":0,"ScannedCount":0,"LastEvaluatedKey":{"pk":{"S":"z"}}}"#).unwrap();
        assert_eq!(p.last_evaluated_key.as_deref(), Some(&br#"{"pk":{"S":"z"}}"#[..]));
    }

    #[test]
    fn export_lines_encode_like_a_scan_page() {
        let l = layout(&[("t", ColumnType::Text)]);
        let items = [r#"{"pk":{"S":"a"},"sk":{"N":"1"},"t":{"S":"x"}}"#, r#"{"sk":{"N":"2"},"pk":{"S":"b"}}"#];
        let lines = format!("{{\"Item\":{}}}\n{{\"Item\":{}}}\n", items[0], items[1]);
        let e = Encoder::new(&l).export_lines(lines.as_bytes()).unwrap();
        let p = Encoder::new(&l).scan_page(page(&items.join(",")).as_bytes()).unwrap().encoded;
        assert_eq!((e.rows, e.row_count, e.item_count), (p.rows, 2, 2));
        // A reject is one item, not the file; a line that is not an export line is the file.
        let bad = format!("{{\"Item\":{}}}\n{{\"Item\":{{\"pk\":{{\"S\":\"c\"}}}}}}\n", items[0]);
        let e = Encoder::new(&l).export_lines(bad.as_bytes()).unwrap();
        assert_eq!((e.row_count, e.rejects.len()), (1, 1));
        assert!(Encoder::new(&l).export_lines(b"").unwrap().rows.is_empty());
        for broken in
            [&b"[1]\n"[..], b"{\"Keys\":{}}\n", b"{\"Item\":{\"pk\":{\"S\":\"a\"}}", b"{\"Item\":{},\"Item\":{}}"]
        {
            assert!(matches!(Encoder::new(&l).export_lines(broken), Err(CoreError::BadBody { .. })), "{broken:?}");
        }
    }

    #[test]
    fn jsonb_mode_keeps_the_whole_item() {
        let keys = vec![("pk".to_string(), DynType::S)];
        let l = Layout::new(Mode::Jsonb, keys.clone(), key_columns(&keys, false), Some("data".into()), false).unwrap();
        let e =
            Encoder::new(&l).item(br#"{"pk":{"S":"a"},"n":{"N":"1.50"},"z":{"NULL":true},"s":{"SS":["x"]}}"#).unwrap();
        let rows = fields(&e.rows);
        assert!(e.unknown.is_empty());
        let data = rows[0][1].clone().unwrap();
        assert_eq!(data[0], 1);
        assert_eq!(&data[1..], br#"{"pk":"a","n":1.50,"z":null,"s":["x"]}"#);
    }

    #[test]
    fn overflow_column_takes_attributes_without_columns() {
        let keys = vec![("pk".to_string(), DynType::S)];
        let mut cols = key_columns(&keys, false);
        cols.push(Column { attribute: "a".into(), ty: ColumnType::Text, name: "a".into() });
        let l = Layout::new(Mode::Columns, keys, cols, Some("overflow".into()), false).unwrap();
        let e =
            Encoder::new(&l).item(br#"{"pk":{"S":"k"},"a":{"BOOL":false},"b":{"N":"2"},"c":{"NULL":true}}"#).unwrap();
        assert!(e.unknown.is_empty());
        let rows = fields(&e.rows);
        assert_eq!(rows[0][1], None);
        assert_eq!(&rows[0][2].clone().unwrap()[1..], br#"{"a":false,"b":2}"#);
        let e = Encoder::new(&l).item(br#"{"pk":{"S":"k"},"a":{"S":"v"}}"#).unwrap();
        assert_eq!(fields(&e.rows)[0][2], None);
    }

    #[test]
    fn sets_become_arrays() {
        let l = layout(&[("ns", ColumnType::NumericArray), ("bs", ColumnType::ByteaArray)]);
        let e =
            Encoder::new(&l).item(br#"{"pk":{"S":"a"},"sk":{"N":"1"},"ns":{"NS":["1","2"]},"bs":{"BS":[]}}"#).unwrap();
        let rows = fields(&e.rows);
        let ns = rows[0][2].clone().unwrap();
        let word = |b: &[u8], i: usize| i32::from_be_bytes(b[4 * i..4 * i + 4].try_into().unwrap());
        assert_eq!((word(&ns, 0), word(&ns, 1), word(&ns, 2), word(&ns, 3), word(&ns, 4)), (1, 0, 1700, 2, 1));
        let bs = rows[0][3].clone().unwrap();
        assert_eq!((word(&bs, 0), word(&bs, 2), bs.len()), (0, 17, 12));
    }
}
