//! PostgreSQL binary COPY: the stream header and trailer, and one writer per column type.
//!
//! Each `write_*` function reads one DynamoDB value (the JSON text after its type tag, already
//! checked for syntax) and appends one complete field (length + payload) to the row buffer.
//! Rows are emitted without the header so that encoded pages concatenate under one COPY.
//!
//! Submodules: `scratch` (buffers reused across values), `numeric` (DynamoDB numbers to
//! PostgreSQL's numeric), `jsonb` (L and M values as jsonb), `nul` (the one U+0000 check). None
//! of them uses this module.

pub mod jsonb;
pub(crate) mod nul;
pub mod numeric;
mod scratch;

pub use scratch::Scratch;

use crate::base64;
use crate::error::Reason;
use crate::json::{RawStr, Reader};
use crate::types::{ColumnType, DynType};

/// `PGCOPY\n\377\r\n\0`, flags (no OIDs), header extension length 0.
pub const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// A field count of -1 ends the stream.
pub const TRAILER: &[u8] = b"\xff\xff";

/// Start a field whose length is not known yet; returns the position to patch.
#[inline]
fn open_field(out: &mut Vec<u8>) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    at
}

#[inline]
fn close_field(out: &mut [u8], at: usize) {
    let len = (out.len() - at - 4) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

pub fn write_null(out: &mut Vec<u8>) {
    out.extend_from_slice(&(-1i32).to_be_bytes());
}

/// Read a JSON string that a value of type `what` must be.
#[allow(clippy::inline_always)] // a RawStr passed to a call is copied through memory, and the copy stalls
#[inline(always)]
fn expect_string<'a>(r: &mut Reader<'a>, what: &'static str) -> Result<RawStr<'a>, Reason> {
    r.string().map_err(|_| Reason::from(format!("{what} value is not a JSON string")))
}

/// Text without U+0000, which PostgreSQL `text` cannot hold. Only an escape can produce one: the
/// reader refuses raw control characters.
#[allow(clippy::inline_always)] // a RawStr passed to a call is copied through memory, and the copy stalls
#[inline(always)]
fn append_text(s: RawStr<'_>, out: &mut Vec<u8>) -> Result<(), Reason> {
    if !s.escaped {
        out.extend_from_slice(s.raw);
        return Ok(());
    }
    let start = out.len();
    crate::json::unescape(s.raw, out).map_err(Reason::from)?;
    nul::check(&out[start..], "string", "text")
}

#[allow(clippy::inline_always)] // a RawStr passed to a call is copied through memory, and the copy stalls
#[inline(always)]
fn append_number(s: RawStr<'_>, out: &mut Vec<u8>, scratch: &mut Scratch) -> Result<(), Reason> {
    let text = s.decoded(&mut scratch.text).map_err(Reason::from)?;
    if let Some(n) = numeric::short(text) {
        numeric::write_binary_short(n, out);
        return Ok(());
    }
    let d = numeric::parse(text, &mut scratch.digits)?;
    numeric::write_binary(&d, out);
    Ok(())
}

#[allow(clippy::inline_always)] // a RawStr passed to a call is copied through memory, and the copy stalls
#[inline(always)]
fn append_binary(s: RawStr<'_>, out: &mut Vec<u8>, scratch: &mut Scratch) -> Result<(), Reason> {
    let text = s.decoded(&mut scratch.text).map_err(Reason::from)?;
    base64::decode(text, out).map_err(Reason::from)
}

/// Read one value of DynamoDB type `dyn_ty` (the JSON after its type tag) and append it as one
/// field of column type `ty`. The reader ends after the value; on an error it is left anywhere in it.
#[inline]
pub fn write_field(
    ty: ColumnType,
    dyn_ty: DynType,
    r: &mut Reader<'_>,
    out: &mut Vec<u8>,
    scratch: &mut Scratch,
) -> Result<(), Reason> {
    let at = open_field(out);
    match ty {
        ColumnType::Text => append_text(expect_string(r, "S")?, out)?,
        ColumnType::Numeric => append_number(expect_string(r, "N")?, out, scratch)?,
        ColumnType::Bytea => append_binary(expect_string(r, "B")?, out, scratch)?,
        ColumnType::Boolean => {
            let b = r.boolean().map_err(|_| Reason::from("BOOL value is not true or false"))?;
            out.push(u8::from(b));
        }
        ColumnType::TextArray | ColumnType::NumericArray | ColumnType::ByteaArray => {
            write_array(ty, r, out, scratch)?;
        }
        ColumnType::Jsonb => {
            // jsonb's binary format: a version byte, then the JSON text.
            out.push(1);
            jsonb::write_from(dyn_ty, r, out, scratch, 0)?;
        }
    }
    close_field(out, at);
    Ok(())
}

/// A one-dimensional array (a DynamoDB set), in `array_recv`'s format.
fn write_array(ty: ColumnType, r: &mut Reader<'_>, out: &mut Vec<u8>, scratch: &mut Scratch) -> Result<(), Reason> {
    let what = match ty {
        ColumnType::TextArray => "SS",
        ColumnType::NumericArray => "NS",
        _ => "BS",
    };
    let oid = ty.element_oid().ok_or_else(|| Reason::from(format!("{ty:?} is not an array type")))?;
    if !r.eat_if(b'[') {
        return Err(format!("{what} value is not a JSON array").into());
    }
    let header = out.len();
    out.extend_from_slice(&1i32.to_be_bytes()); // ndim
    out.extend_from_slice(&0i32.to_be_bytes()); // no NULL elements
    out.extend_from_slice(&oid.to_be_bytes());
    out.extend_from_slice(&0i32.to_be_bytes()); // length, patched below
    out.extend_from_slice(&1i32.to_be_bytes()); // lower bound
    let mut n = 0i32;
    if !r.eat_if(b']') {
        loop {
            let s = expect_string(r, what)?;
            let at = open_field(out);
            match ty {
                ColumnType::TextArray => append_text(s, out)?,
                ColumnType::NumericArray => append_number(s, out, scratch)?,
                _ => append_binary(s, out, scratch)?,
            }
            close_field(out, at);
            n += 1;
            if r.eat_if(b']') {
                break;
            }
            r.eat(b',', "").map_err(|_| Reason::from(format!("{what} value is not a JSON array")))?;
        }
    }
    if n == 0 {
        // An empty array has no dimensions.
        out.truncate(header);
        out.extend_from_slice(&0i32.to_be_bytes());
        out.extend_from_slice(&0i32.to_be_bytes());
        out.extend_from_slice(&oid.to_be_bytes());
    } else {
        out[header + 12..header + 16].copy_from_slice(&n.to_be_bytes());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::typed;

    /// One field written from a typed value object, as the item encoder would write it.
    fn field(ty: ColumnType, typed_json: &str) -> Result<Vec<u8>, Reason> {
        let mut r = Reader::new(typed_json.as_bytes());
        let dyn_ty = typed::open(&mut r, &mut Vec::new()).unwrap()?;
        let mut out = b"row".to_vec();
        write_field(ty, dyn_ty, &mut r, &mut out, &mut Scratch::default())?;
        typed::close(&mut r)?;
        assert_eq!(&out[..3], b"row", "a field is appended, never written over what precedes it");
        let len = i32::from_be_bytes(out[3..7].try_into().unwrap());
        assert_eq!(len as usize, out.len() - 7, "the length prefix covers exactly the payload");
        Ok(out[7..].to_vec())
    }

    fn words(b: &[u8]) -> Vec<i32> {
        b.chunks(4).map(|c| i32::from_be_bytes(c.try_into().unwrap())).collect()
    }

    #[test]
    fn the_stream_header_and_trailer_are_postgres_own() {
        // Signature (11 bytes), flags (4), header extension length (4): COPY's binary format.
        assert_eq!(HEADER.len(), 19);
        assert_eq!(&HEADER[..11], b"PGCOPY\n\xff\r\n\0");
        assert_eq!(TRAILER, (-1i16).to_be_bytes());
        let mut out = Vec::new();
        write_null(&mut out);
        assert_eq!(out, (-1i32).to_be_bytes());
    }

    #[test]
    fn scalars() {
        assert_eq!(field(ColumnType::Text, r#"{"S":"a\nb é"}"#).unwrap(), "a\nb é".as_bytes());
        assert_eq!(field(ColumnType::Text, r#"{"S":""}"#).unwrap(), b"");
        assert_eq!(field(ColumnType::Bytea, r#"{"B":"aGk="}"#).unwrap(), b"hi");
        assert_eq!(field(ColumnType::Boolean, r#"{"BOOL":true}"#).unwrap(), [1]);
        assert_eq!(field(ColumnType::Boolean, r#"{"BOOL":false}"#).unwrap(), [0]);
        // numeric_recv: ndigits, weight, sign, dscale, then base-10000 digits.
        let n = field(ColumnType::Numeric, r#"{"N":"-12.5"}"#).unwrap();
        let halves: Vec<i16> = n.chunks(2).map(|c| i16::from_be_bytes(c.try_into().unwrap())).collect();
        assert_eq!(halves, [2, 0, 0x4000, 1, 12, 5000]);
        assert_eq!(field(ColumnType::Jsonb, r#"{"M":{"k":{"N":"1"}}}"#).unwrap(), b"\x01{\"k\":1}");
        assert_eq!(field(ColumnType::Jsonb, r#"{"L":[]}"#).unwrap(), b"\x01[]");
    }

    #[test]
    fn sets_are_one_dimensional_arrays_of_the_element_type() {
        let ss = field(ColumnType::TextArray, r#"{"SS":["a","bc"]}"#).unwrap();
        // ndim 1, no NULLs, element OID 25 (text), 2 elements from index 1, then each element.
        assert_eq!(words(&ss[..20]), [1, 0, 25, 2, 1]);
        assert_eq!(&ss[20..], b"\0\0\0\x01a\0\0\0\x02bc");
        let ns = field(ColumnType::NumericArray, r#"{"NS":["1"]}"#).unwrap();
        assert_eq!(words(&ns[..20]), [1, 0, 1700, 1, 1]);
        let bs = field(ColumnType::ByteaArray, r#"{"BS":["AA=="]}"#).unwrap();
        assert_eq!((words(&bs[..20]), &bs[20..]), (vec![1, 0, 17, 1, 1], &b"\0\0\0\x01\0"[..]));
        // An empty array has no dimensions at all, only its element type.
        assert_eq!(words(&field(ColumnType::TextArray, r#"{"SS":[]}"#).unwrap()), [0, 0, 25]);
    }

    #[test]
    fn values_that_cannot_be_stored_are_reasons() {
        for (ty, value, why) in [
            (ColumnType::Text, r#"{"S":"a\u0000"}"#, "U+0000"),
            (ColumnType::Text, r#"{"S":1}"#, "not a JSON string"),
            (ColumnType::Numeric, r#"{"N":"1e"}"#, "malformed"),
            (ColumnType::Numeric, r#"{"N":"1e131072"}"#, "range"),
            (ColumnType::Bytea, r#"{"B":"***"}"#, "base64"),
            (ColumnType::Boolean, r#"{"BOOL":"yes"}"#, "true or false"),
            (ColumnType::TextArray, r#"{"SS":"a"}"#, "not a JSON array"),
            (ColumnType::TextArray, r#"{"SS":["a",1]}"#, "not a JSON string"),
            (ColumnType::TextArray, r#"{"SS":["\u0000"]}"#, "U+0000"),
            (ColumnType::NumericArray, r#"{"NS":["x"]}"#, "malformed"),
            (ColumnType::Jsonb, r#"{"M":{"k":{"S":"\u0000"}}}"#, "U+0000"),
        ] {
            let reason = field(ty, value).unwrap_err();
            assert!(reason.contains(why), "{value}: {reason}");
        }
    }
}
