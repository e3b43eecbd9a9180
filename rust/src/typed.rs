//! The one reader of DynamoDB's typed value objects, `{"TAG": value}`.
//!
//! The item encoder and the jsonb writer convert the value as they read it, and the stream decoder
//! looks up key attributes: all of them open and close the object here, so a malformed one is
//! judged alike wherever it appears (top level, inside L or M, in `Keys`).

use crate::error::Reason;
use crate::json::{JsonResult, Reader};
use crate::types::DynType;

/// One typed value: its type and the JSON text after the tag.
#[derive(Clone, Copy)]
pub struct Typed<'a> {
    pub ty: DynType,
    pub value: &'a [u8],
}

/// Read `{"TAG":` and leave the reader at the value. The outer error is a syntax error (the body
/// cannot be read); the inner one says why the object is not a typed value (the item is rejected).
/// `scratch` holds the tag when it had to be unescaped.
#[inline]
pub fn open(r: &mut Reader<'_>, scratch: &mut Vec<u8>) -> JsonResult<Result<DynType, Reason>> {
    if let Some((ty, len)) = compact_tag(r.buf, r.pos) {
        r.pos += len;
        return Ok(Ok(ty));
    }
    open_slowly(r, scratch)
}

/// Little-endian word of the first bytes of `s` (at most 8), for comparing prefixes in one step.
const fn word(s: &[u8]) -> u64 {
    let mut w = 0u64;
    let mut i = 0;
    while i < s.len() {
        w |= (s[i] as u64) << (8 * i);
        i += 1;
    }
    w
}

const fn mask(len: usize) -> u64 {
    if len == 8 {
        u64::MAX
    } else {
        (1u64 << (8 * len)) - 1
    }
}

/// Every tag as DynamoDB writes it, in compact JSON: `{"S":` and the like.
const COMPACT_TAGS: [(u64, u64, DynType, usize); 10] = {
    const fn tag(s: &[u8], ty: DynType) -> (u64, u64, DynType, usize) {
        (word(s), mask(s.len()), ty, s.len())
    }
    [
        tag(b"{\"S\":", DynType::S),
        tag(b"{\"N\":", DynType::N),
        tag(b"{\"M\":", DynType::M),
        tag(b"{\"L\":", DynType::L),
        tag(b"{\"SS\":", DynType::SS),
        tag(b"{\"BOOL\":", DynType::Bool),
        tag(b"{\"NULL\":", DynType::Null),
        tag(b"{\"B\":", DynType::B),
        tag(b"{\"NS\":", DynType::NS),
        tag(b"{\"BS\":", DynType::BS),
    ]
};

/// The type and length of a compact tag at `pos`: one 8-byte load and a few compares, where the
/// general path reads the object, the string and the colon token by token.
#[inline]
fn compact_tag(buf: &[u8], pos: usize) -> Option<(DynType, usize)> {
    // A tag is always followed by its value and the object's `}`, so 8 bytes are there.
    let w = u64::from_le_bytes(buf.get(pos..pos + 8)?.try_into().ok()?);
    COMPACT_TAGS.iter().find(|&&(tag, mask, _, _)| w & mask == tag).map(|&(_, _, ty, len)| (ty, len))
}

/// Any spelling of the tag: blanks, escapes.
fn open_slowly(r: &mut Reader<'_>, scratch: &mut Vec<u8>) -> JsonResult<Result<DynType, Reason>> {
    if !r.eat_if(b'{') {
        return Ok(Err("attribute value is not a typed object like {\"S\": …}".into()));
    }
    if r.peek() != Some(b'"') {
        return Ok(Err("attribute value has no type".into()));
    }
    let tag = r.string()?;
    r.eat(b':', "expected ':'")?;
    let tag = match tag.decoded(scratch) {
        Ok(t) => t,
        Err(why) => return Ok(Err(format!("attribute type: {why}").into())),
    };
    Ok(DynType::from_tag(tag)
        .ok_or_else(|| format!("unknown attribute type {:?}", String::from_utf8_lossy(tag)).into()))
}

/// After the value: the object's `}`, or why the object is not one typed value.
pub fn close(r: &mut Reader<'_>) -> Result<(), Reason> {
    if r.eat_if(b'}') {
        Ok(())
    } else {
        Err("attribute value has more than one type".into())
    }
}

/// Read a whole typed object, keeping its value's span (syntax-checked) without converting it.
pub fn read<'a>(r: &mut Reader<'a>, scratch: &mut Vec<u8>) -> JsonResult<Result<Typed<'a>, Reason>> {
    let ty = match open(r, scratch)? {
        Ok(ty) => ty,
        Err(why) => return Ok(Err(why)),
    };
    r.ws();
    let start = r.pos;
    r.skip_value()?;
    let value = &r.buf[start..r.pos];
    Ok(close(r).map(|()| Typed { ty, value }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(json: &str) -> JsonResult<Result<(DynType, String), Reason>> {
        let mut r = Reader::new(json.as_bytes());
        let t = read(&mut r, &mut Vec::new())?;
        Ok(t.map(|t| (t.ty, String::from_utf8(t.value.to_vec()).unwrap())))
    }

    #[test]
    fn reads_the_type_and_the_value_span() {
        assert_eq!(typed(r#"{"S":"a\"b"}"#).unwrap().unwrap(), (DynType::S, r#""a\"b""#.into()));
        assert_eq!(typed(r#"{ "N" : "1" }"#).unwrap().unwrap(), (DynType::N, r#""1""#.into()));
        assert_eq!(typed(r#"{"\u0053S":["x"]}"#).unwrap().unwrap(), (DynType::SS, r#"["x"]"#.into()));
        let (ty, value) = typed(r#"{"M":{"k":{"L":[]}}}"#).unwrap().unwrap();
        assert_eq!((ty, value.as_str()), (DynType::M, r#"{"k":{"L":[]}}"#));
    }

    #[test]
    fn a_malformed_object_is_a_reason_and_bad_json_a_syntax_error() {
        for (json, why) in [
            (r#""S""#, "not a typed object"),
            ("{}", "has no type"),
            (r#"{"Q":"x"}"#, "unknown attribute type \"Q\""),
            (r#"{"S":"x","N":"1"}"#, "more than one type"),
        ] {
            let reason = typed(json).unwrap().unwrap_err();
            assert!(reason.contains(why), "{json}: {reason}");
        }
        assert!(typed(r#"{"S" "x"}"#).is_err());
        assert!(typed(r#"{"S":"x"#).is_err());
    }
}
