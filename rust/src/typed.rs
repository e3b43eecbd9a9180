//! The one reader of DynamoDB's typed value objects, `{"TAG": value}`.
//!
//! The item encoder keeps the value's span, the jsonb writer converts the value as it reads it,
//! and the stream decoder looks up key attributes: all three open and close the object here, so a
//! malformed one is judged alike wherever it appears (top level, inside L or M, in `Keys`).

use crate::error::Reason;
use crate::json::{JsonResult, RawStr, Reader};
use crate::types::DynType;

/// One typed value: its type, the JSON text after the tag, and that text read as a string when it
/// is one (S, N and B values are strings; reading them once saves the writers a second pass).
#[derive(Clone, Copy)]
pub struct Typed<'a> {
    pub ty: DynType,
    pub value: &'a [u8],
    pub text: Option<RawStr<'a>>,
}

/// Read `{"TAG":` and leave the reader at the value. The outer error is a syntax error (the body
/// cannot be read); the inner one says why the object is not a typed value (the item is rejected).
/// `scratch` holds the tag when it had to be unescaped.
pub fn open(r: &mut Reader<'_>, scratch: &mut Vec<u8>) -> JsonResult<Result<DynType, Reason>> {
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
    let text = if r.peek() == Some(b'"') {
        Some(r.string()?)
    } else {
        r.skip_value()?;
        None
    };
    let value = &r.buf[start..r.pos];
    Ok(close(r).map(|()| Typed { ty, value, text }))
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
