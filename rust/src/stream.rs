//! DynamoDB Streams GetRecords bodies to what one apply transaction needs.
//!
//! The bodies of one transaction (several per shard, of several shards) are collapsed per key:
//! only the last change of each key counts (records of one key arrive in order within a shard), so a key is either upserted with its last new image, deleted,
//! or, when the stream carries no new image (KEYS_ONLY, OLD_IMAGE), listed for fetching.
//! Upserts are full binary COPY rows for the layout; deletes are rows of the key columns only.

use std::collections::HashMap;

use crate::encoder::{bad_body, Encoded, Encoder, Reject};
use crate::error::{CoreError, CoreResult, Reason};
use crate::json::{JsonResult, RawStr, Reader, SyntaxError};
use crate::pgcopy;
use crate::typed;
use crate::types::DynType;

/// GetRecords responses of one transaction, collapsed per key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamBatch {
    /// Rows of the last new image of each upserted key; with their unknown attributes and rejects.
    /// Complete only when `upserts.unknown` is empty.
    pub upserts: Encoded,
    /// Rows holding only the key columns (in key order) of the keys whose last change is REMOVE,
    /// or an image that is rejected (its key then has no row, as after a load).
    pub deletes: Vec<u8>,
    pub delete_count: u64,
    /// The `Keys` (DynamoDB JSON) of keys whose last change carries no new image: fetch them.
    pub fetch: Vec<Vec<u8>>,
    /// Records in the responses.
    pub records: u64,
}

/// Where one GetRecords response leaves its shard.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamPosition {
    /// Records in the response.
    pub records: u64,
    pub last_sequence_number: Option<String>,
    /// `ApproximateCreationDateTime` of the last record (epoch seconds).
    pub last_created: Option<f64>,
    /// None when the shard is closed and has been read to its end.
    pub next_shard_iterator: Option<String>,
}

/// Read a GetRecords response for where it leaves its shard, without encoding its images.
pub fn position(body: &[u8]) -> CoreResult<StreamPosition> {
    read_body(body, &mut Vec::new())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Upsert,
    Remove,
}

struct Record<'a> {
    op: Op,
    keys: &'a [u8],
    new_image: Option<&'a [u8]>,
}

impl<'a> Encoder<'_, 'a> {
    /// Encode GetRecords response bodies, in the order given, into one batch: the last change of
    /// each key over all of them wins. Bodies of one shard come in their order; bodies of shards
    /// read side by side hold disjoint keys (a key's changes are in one open shard at a time).
    pub fn records(mut self, bodies: &[&'a [u8]]) -> CoreResult<StreamBatch> {
        let mut batch = StreamBatch::default();
        let mut records: Vec<Record<'a>> = Vec::new();
        for body in bodies {
            read_body(body, &mut records)?;
        }
        batch.records = records.len() as u64;

        // The last change of each key wins; keys are compared as their encoded key columns, so
        // escapes and spellings that decode alike are one key.
        let mut keys: Vec<Result<Vec<u8>, Reason>> = Vec::with_capacity(records.len());
        let mut last: HashMap<Vec<u8>, usize> = HashMap::with_capacity(records.len());
        for (i, rec) in records.iter().enumerate() {
            let key = self.key_row(rec.keys);
            if let Ok(k) = &key {
                last.insert(k.clone(), i);
            }
            keys.push(key);
        }
        for (i, (rec, key)) in records.iter().zip(keys).enumerate() {
            let key = match key {
                Ok(k) => k,
                Err(reason) => {
                    let item = rec.new_image.unwrap_or(rec.keys).to_vec();
                    self.out.rejects.push(Reject { key: rec.keys.to_vec(), item, reason: reason.into_owned() });
                    continue;
                }
            };
            if last.get(&key) != Some(&i) {
                continue;
            }
            match (rec.op, rec.new_image) {
                (Op::Remove, _) => self.push_delete(&key, &mut batch),
                (Op::Upsert, Some(image)) => {
                    let rejected = self.out.rejects.len();
                    self.one_item(&mut Reader::new(image))?;
                    if self.out.rejects.len() > rejected {
                        // The row of an older image must not stay as if it were the item: a
                        // rejected item has no row, as after a load.
                        self.push_delete(&key, &mut batch);
                    }
                }
                (Op::Upsert, None) => batch.fetch.push(rec.keys.to_vec()),
            }
        }
        // Items counted by the item encoder are the upserted ones; the batch counts records.
        batch.upserts = self.finish();
        Ok(batch)
    }

    fn push_delete(&self, key: &[u8], batch: &mut StreamBatch) {
        batch.deletes.extend_from_slice(&(self.layout.keys.len() as i16).to_be_bytes());
        batch.deletes.extend_from_slice(key);
        batch.delete_count += 1;
    }

    /// The key columns of a `Keys` map, as binary COPY fields in key order.
    fn key_row(&mut self, keys: &[u8]) -> Result<Vec<u8>, Reason> {
        let mut out = Vec::new();
        for (name, ty) in &self.layout.keys {
            let col_ty = ty.column_type().ok_or_else(|| Reason::from("key type without a column type"))?;
            let value = find_attribute(keys, name.as_bytes(), *ty)
                .ok_or_else(|| Reason::from(format!("key attribute {name:?} is missing from Keys")))?;
            pgcopy::write_field(col_ty, *ty, &mut Reader::new(value), &mut out, &mut self.scratch)
                .map_err(|why| Reason::from(format!("key attribute {name:?}: {why}")))?;
        }
        Ok(out)
    }
}

/// Read one response's records into `records` (their slices borrowed from `body`); returns
/// where the response leaves its shard.
fn read_body<'a>(body: &'a [u8], records: &mut Vec<Record<'a>>) -> CoreResult<StreamPosition> {
    let mut position = StreamPosition::default();
    let first = records.len();
    let mut r = Reader::new(body);
    let mut saw_records = false;
    r.members(|r, key| -> CoreResult<()> {
        match key.raw {
            b"Records" => {
                saw_records = true;
                read_records(r, records, &mut position)?;
            }
            b"NextShardIterator" => {
                if r.peek() == Some(b'n') {
                    r.skip_value()?;
                } else {
                    position.next_shard_iterator = Some(text(r.string()?));
                }
            }
            b"__type" => {
                let code = text(r.string()?);
                let code = code.rsplit('#').next().unwrap_or(&code).to_string();
                return Err(CoreError::ServiceError { code, message: String::new() });
            }
            _ => r.skip_value()?,
        }
        Ok(())
    })?;
    if !r.at_end() {
        return Err(bad_body(r.pos, "unexpected data after the response object"));
    }
    if !saw_records {
        return Err(bad_body(0, "no Records: this is not a GetRecords response"));
    }
    position.records = (records.len() - first) as u64;
    Ok(position)
}

fn text(s: RawStr<'_>) -> String {
    let mut scratch = Vec::new();
    String::from_utf8_lossy(s.decoded(&mut scratch).unwrap_or(s.raw)).into_owned()
}

/// Find `name` of type `ty` in an attribute map; returns its value text.
fn find_attribute<'a>(map: &'a [u8], name: &[u8], ty: DynType) -> Option<&'a [u8]> {
    let mut r = Reader::new(map);
    r.eat(b'{', "").ok()?;
    if r.eat_if(b'}') {
        return None;
    }
    let mut scratch = Vec::new();
    loop {
        let key = r.string().ok()?;
        r.eat(b':', "").ok()?;
        if key.decoded(&mut scratch).ok()? == name {
            let found = typed::read(&mut r, &mut scratch).ok()?.ok()?;
            return (found.ty == ty).then_some(found.value);
        }
        r.skip_value().ok()?;
        if !r.eat_if(b',') {
            return None;
        }
    }
}

fn read_records<'a>(r: &mut Reader<'a>, out: &mut Vec<Record<'a>>, position: &mut StreamPosition) -> JsonResult<()> {
    r.eat(b'[', "Records is not an array")?;
    if r.eat_if(b']') {
        return Ok(());
    }
    loop {
        out.push(read_record(r, position)?);
        if r.eat_if(b',') {
            continue;
        }
        r.eat(b']', "expected ',' or ']' in Records")?;
        return Ok(());
    }
}

fn read_record<'a>(r: &mut Reader<'a>, position: &mut StreamPosition) -> JsonResult<Record<'a>> {
    let mut op = None;
    let mut keys = None;
    let mut new_image = None;
    r.ws();
    let at = r.pos;
    r.members(|r, key| {
        match key.raw {
            b"eventName" => {
                op = match r.string()?.raw {
                    b"INSERT" | b"MODIFY" => Some(Op::Upsert),
                    b"REMOVE" => Some(Op::Remove),
                    _ => return r.err("unknown eventName"),
                };
            }
            b"dynamodb" => r.members(|r, field| {
                match field.raw {
                    b"Keys" => keys = Some(r.value_span()?),
                    b"NewImage" => new_image = Some(r.value_span()?),
                    b"SequenceNumber" => position.last_sequence_number = Some(text(r.string()?)),
                    b"ApproximateCreationDateTime" => position.last_created = Some(r.double()?),
                    _ => r.skip_value()?,
                }
                Ok::<(), SyntaxError>(())
            })?,
            _ => r.skip_value()?,
        }
        Ok::<(), SyntaxError>(())
    })?;
    match (op, keys) {
        (Some(op), Some(keys)) if keys.first() == Some(&b'{') => Ok(Record { op, keys, new_image }),
        _ => Err(SyntaxError { offset: at, why: "a record without eventName or Keys" }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{key_columns, Layout, Mode};
    use crate::types::DynType;

    fn layout() -> Layout {
        let keys = vec![("pk".to_string(), DynType::S), ("sk".to_string(), DynType::N)];
        let mut cols = key_columns(&keys, false);
        cols.push(crate::layout::Column {
            attribute: "v".into(),
            ty: crate::types::ColumnType::Text,
            name: "v".into(),
        });
        Layout::new(Mode::Columns, keys, cols, None, false).unwrap()
    }

    fn rec(name: &str, pk: &str, sk: u32, seq: u32, image: Option<&str>) -> String {
        let keys = format!(r#"{{"pk":{{"S":"{pk}"}},"sk":{{"N":"{sk}"}}}}"#);
        let new = image.map_or(String::new(), |v| {
            format!(r#","NewImage":{{"pk":{{"S":"{pk}"}},"sk":{{"N":"{sk}"}},"v":{{"S":"{v}"}}}}"#)
        });
        format!(
            r#"{{"eventID":"e{seq}","eventName":"{name}","eventVersion":"1.1","dynamodb":{{"ApproximateCreationDateTime":1700000000.0,"Keys":{keys}{new},"SequenceNumber":"{seq:0>21}","SizeBytes":10,"StreamViewType":"NEW_IMAGE"}}}}"#
        )
    }

    #[test]
    fn collapses_per_key_last_change_wins() {
        let l = layout();
        let body = format!(
            r#"{{"Records":[{},{},{},{},{}],"NextShardIterator":"it-2"}}"#,
            rec("INSERT", "a", 1, 1, Some("x")),
            rec("MODIFY", "a", 1, 2, Some("y")),
            rec("INSERT", "b", 1, 3, Some("z")),
            rec("REMOVE", "b", 1, 4, None),
            rec("MODIFY", "c", 2, 5, None),
        );
        let b = Encoder::new(&l).records(&[body.as_bytes()]).unwrap();
        assert_eq!(b.records, 5);
        assert_eq!((b.upserts.row_count, b.delete_count), (1, 1));
        assert_eq!(b.fetch, vec![br#"{"pk":{"S":"c"},"sk":{"N":"2"}}"#.to_vec()]);
        let p = position(body.as_bytes()).unwrap();
        assert_eq!(p.records, 5);
        assert_eq!(p.last_sequence_number.as_deref(), Some("000000000000000000005"));
        assert_eq!(p.next_shard_iterator.as_deref(), Some("it-2"));
        assert!(b.upserts.rows.windows(1).any(|w| w == b"y"));
        assert!(!b.upserts.rows.windows(1).any(|w| w == b"x"));
        // A delete row: two fields, the key columns.
        assert_eq!(&b.deletes[..2], &2i16.to_be_bytes());
        assert_eq!(&b.deletes[2..7], &[0, 0, 0, 1, b'b']);
    }

    #[test]
    fn collapses_over_bodies_in_their_order() {
        let l = layout();
        let first = format!(
            r#"{{"Records":[{},{}],"NextShardIterator":"it-2"}}"#,
            rec("INSERT", "a", 1, 1, Some("x")),
            rec("INSERT", "b", 1, 2, Some("w")),
        );
        let second = format!(
            r#"{{"Records":[{},{}],"NextShardIterator":"it-3"}}"#,
            rec("MODIFY", "a", 1, 3, Some("y")),
            rec("REMOVE", "b", 1, 4, None),
        );
        let b = Encoder::new(&l).records(&[first.as_bytes(), second.as_bytes()]).unwrap();
        assert_eq!((b.records, b.upserts.row_count, b.delete_count), (4, 1, 1));
        assert!(b.upserts.rows.windows(1).any(|w| w == b"y"));
        assert!(!b.upserts.rows.windows(1).any(|w| w == b"x"));
        // The other order: the later body's changes win.
        let b = Encoder::new(&l).records(&[second.as_bytes(), first.as_bytes()]).unwrap();
        assert_eq!((b.records, b.upserts.row_count, b.delete_count), (4, 2, 0));
        assert!(Encoder::new(&l).records(&[]).unwrap().records == 0);
        // One bad body fails the batch.
        assert!(Encoder::new(&l).records(&[first.as_bytes(), br#"{"Items":[]}"#]).is_err());
    }

    #[test]
    fn end_of_shard_and_errors() {
        let p = position(br#"{"Records":[],"NextShardIterator":null}"#).unwrap();
        assert_eq!((p.records, p.next_shard_iterator), (0, None));
        let p = position(br#"{"Records":[]}"#).unwrap();
        assert_eq!(p.next_shard_iterator, None);
        assert!(matches!(
            position(br#"{"__type":"x#ExpiredIteratorException","message":"m"}"#),
            Err(CoreError::ServiceError { .. })
        ));
        assert!(position(br#"{"Items":[]}"#).is_err());
        assert!(position(br#"{"Records":[{"eventName":"INSERT"}]}"#).is_err());
        let l = layout();
        assert!(Encoder::new(&l).records(&[br#"{"Records":[{"eventName":"INSERT"}]}"#]).is_err());
    }

    #[test]
    fn unknown_attributes_and_bad_keys() {
        let keys = vec![("pk".to_string(), DynType::S), ("sk".to_string(), DynType::N)];
        let l = Layout::new(Mode::Columns, keys.clone(), key_columns(&keys, false), None, false).unwrap();
        let body = format!(r#"{{"Records":[{}]}}"#, rec("INSERT", "a", 1, 1, Some("x")));
        let b = Encoder::new(&l).records(&[body.as_bytes()]).unwrap();
        assert_eq!(b.upserts.unknown.len(), 1);
        // An image that cannot be stored is a reject, and its key's row (of an older image) goes.
        let l = layout();
        let body = format!(r#"{{"Records":[{}]}}"#, rec("MODIFY", "a", 1, 1, Some("x\\u0000")));
        let b = Encoder::new(&l).records(&[body.as_bytes()]).unwrap();
        assert_eq!((b.upserts.row_count, b.upserts.rejects.len(), b.delete_count), (0, 1, 1));
        assert_eq!(&b.deletes[2..7], &[0, 0, 0, 1, b'a']);
        let bad = format!(r#"{{"Records":[{}]}}"#, rec("REMOVE", "a\\u0000", 1, 1, None));
        let b = Encoder::new(&l).records(&[bad.as_bytes()]).unwrap();
        assert_eq!((b.delete_count, b.upserts.rejects.len()), (0, 1));
        assert!(b.upserts.rejects[0].reason.contains("U+0000"));
    }
}
