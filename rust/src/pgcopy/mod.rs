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
mod nul;
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
fn expect_string<'a>(r: &mut Reader<'a>, what: &'static str) -> Result<RawStr<'a>, Reason> {
    r.string().map_err(|_| Reason::from(format!("{what} value is not a JSON string")))
}

/// Text without U+0000, which PostgreSQL `text` cannot hold. Only an escape can produce one: the
/// reader refuses raw control characters.
fn append_text(s: RawStr<'_>, out: &mut Vec<u8>) -> Result<(), Reason> {
    if !s.escaped {
        out.extend_from_slice(s.raw);
        return Ok(());
    }
    let start = out.len();
    crate::json::unescape(s.raw, out).map_err(Reason::from)?;
    nul::check(&out[start..], "text")
}

fn append_number(s: RawStr<'_>, out: &mut Vec<u8>, scratch: &mut Scratch) -> Result<(), Reason> {
    let text = s.decoded(&mut scratch.text).map_err(Reason::from)?;
    let d = numeric::parse(text, &mut scratch.digits)?;
    numeric::write_binary(&d, out);
    Ok(())
}

fn append_binary(s: RawStr<'_>, out: &mut Vec<u8>, scratch: &mut Scratch) -> Result<(), Reason> {
    let text = s.decoded(&mut scratch.text).map_err(Reason::from)?;
    base64::decode(text, out).map_err(Reason::from)
}

/// Append one field of column type `ty` from the value text `v` (of DynamoDB type `dyn_ty`);
/// `text` is the value already read as a string, when it is one.
pub fn write_field(
    ty: ColumnType,
    dyn_ty: DynType,
    v: &[u8],
    text: Option<RawStr<'_>>,
    out: &mut Vec<u8>,
    scratch: &mut Scratch,
) -> Result<(), Reason> {
    let mut r = Reader::new(v);
    let string = |what: &'static str| text.ok_or_else(|| Reason::from(format!("{what} value is not a JSON string")));
    let at = open_field(out);
    match ty {
        ColumnType::Text => append_text(string("S")?, out)?,
        ColumnType::Numeric => append_number(string("N")?, out, scratch)?,
        ColumnType::Bytea => append_binary(string("B")?, out, scratch)?,
        ColumnType::Boolean => {
            let b = r.boolean().map_err(|_| Reason::from("BOOL value is not true or false"))?;
            out.push(u8::from(b));
        }
        ColumnType::TextArray | ColumnType::NumericArray | ColumnType::ByteaArray => {
            write_array(ty, &mut r, out, scratch)?;
        }
        ColumnType::Jsonb => {
            // jsonb's binary format: a version byte, then the JSON text.
            out.push(1);
            jsonb::write_value(dyn_ty, v, out, scratch, 0)?;
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
