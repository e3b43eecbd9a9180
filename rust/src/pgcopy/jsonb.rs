//! DynamoDB's typed JSON to plain JSON, for `jsonb` (L and M values, and whole items in jsonb mode).
//!
//! S becomes a string, N a JSON number with its exact digits, B its base64 text, sets arrays,
//! BOOL and NULL themselves. Strings are copied as they are when they need no re-escaping.

use super::nul;
use super::numeric;
use super::scratch::Scratch;
use crate::base64;
use crate::error::Reason;
use crate::json::{write_escaped, RawStr, Reader};
use crate::typed;
use crate::types::DynType;

/// Deepest L/M nesting accepted. DynamoDB allows 32 levels; the margin admits what it might grow to
/// while keeping recursion bounded.
pub const MAX_DEPTH: usize = 64;

fn shape(ty: DynType) -> Reason {
    format!("{} value has the wrong JSON shape", ty.tag()).into()
}

/// Write a string as JSON: copied when it has no escapes (the reader refused raw control
/// characters, so it is fit for PostgreSQL's JSON parser), else decoded and re-escaped, which also
/// normalises escapes PostgreSQL would refuse. U+0000 cannot be stored in jsonb and is a reject.
#[allow(clippy::inline_always)] // a RawStr passed to a call is copied through memory, and the copy stalls
#[inline(always)]
pub fn write_string(s: RawStr<'_>, out: &mut Vec<u8>, scratch: &mut Scratch) -> Result<(), Reason> {
    if !s.escaped {
        out.push(b'"');
        out.extend_from_slice(s.raw);
        out.push(b'"');
        return Ok(());
    }
    scratch.text.clear();
    crate::json::unescape(s.raw, &mut scratch.text).map_err(Reason::from)?;
    nul::check(&scratch.text, "string", "jsonb")?;
    write_escaped(&scratch.text, out);
    Ok(())
}

#[allow(clippy::inline_always)] // a RawStr passed to a call is copied through memory, and the copy stalls
#[inline(always)]
fn write_number(s: RawStr<'_>, out: &mut Vec<u8>, scratch: &mut Scratch) -> Result<(), Reason> {
    let text = s.decoded(&mut scratch.text).map_err(Reason::from)?;
    // A short number is in numeric's range: copy it as it is when JSON reads it the same way.
    if numeric::short(text).is_some() && numeric::is_json_number(text) {
        out.extend_from_slice(text);
        return Ok(());
    }
    let d = numeric::parse(text, &mut scratch.digits)?;
    if numeric::is_json_number(text) {
        out.extend_from_slice(text);
    } else {
        numeric::write_json(&d, out);
    }
    Ok(())
}

#[allow(clippy::inline_always)] // a RawStr passed to a call is copied through memory, and the copy stalls
#[inline(always)]
fn write_base64(s: RawStr<'_>, out: &mut Vec<u8>, scratch: &mut Scratch) -> Result<(), Reason> {
    let text = s.decoded(&mut scratch.text).map_err(Reason::from)?;
    base64::validate(text, &mut scratch.bytes).map_err(Reason::from)?;
    out.push(b'"');
    out.extend_from_slice(text);
    out.push(b'"');
    Ok(())
}

/// Read one value of type `ty` (the JSON after its tag) and write it as plain JSON.
pub fn write_from(
    ty: DynType,
    r: &mut Reader<'_>,
    out: &mut Vec<u8>,
    scratch: &mut Scratch,
    depth: usize,
) -> Result<(), Reason> {
    match ty {
        DynType::S => write_string(r.string().map_err(|_| shape(ty))?, out, scratch),
        DynType::N => write_number(r.string().map_err(|_| shape(ty))?, out, scratch),
        DynType::B => write_base64(r.string().map_err(|_| shape(ty))?, out, scratch),
        DynType::Bool => {
            let b = r.boolean().map_err(|_| shape(ty))?;
            out.extend_from_slice(if b { b"true" } else { b"false" });
            Ok(())
        }
        DynType::Null => {
            r.boolean().map_err(|_| shape(ty))?;
            out.extend_from_slice(b"null");
            Ok(())
        }
        DynType::SS | DynType::NS | DynType::BS | DynType::L => {
            if depth >= MAX_DEPTH {
                return Err(too_deep());
            }
            if !r.eat_if(b'[') {
                return Err(shape(ty));
            }
            out.push(b'[');
            if !r.eat_if(b']') {
                loop {
                    match ty {
                        DynType::L => write_typed(r, out, scratch, depth + 1)?,
                        DynType::SS => write_from(DynType::S, r, out, scratch, depth)?,
                        DynType::NS => write_from(DynType::N, r, out, scratch, depth)?,
                        _ => write_from(DynType::B, r, out, scratch, depth)?,
                    }
                    if r.eat_if(b']') {
                        break;
                    }
                    r.eat(b',', "").map_err(|_| shape(ty))?;
                    out.push(b',');
                }
            }
            out.push(b']');
            Ok(())
        }
        DynType::M => {
            if depth >= MAX_DEPTH {
                return Err(too_deep());
            }
            if !r.eat_if(b'{') {
                return Err(shape(ty));
            }
            out.push(b'{');
            if !r.eat_if(b'}') {
                loop {
                    let key = r.string().map_err(|_| shape(ty))?;
                    write_string(key, out, scratch)?;
                    r.eat(b':', "").map_err(|_| shape(ty))?;
                    out.push(b':');
                    write_typed(r, out, scratch, depth + 1)?;
                    if r.eat_if(b'}') {
                        break;
                    }
                    r.eat(b',', "").map_err(|_| shape(ty))?;
                    out.push(b',');
                }
            }
            out.push(b'}');
            Ok(())
        }
    }
}

#[cold]
fn too_deep() -> Reason {
    format!("value nested deeper than {MAX_DEPTH} levels").into()
}

/// Read one typed value object (`{"S":"x"}`) and write its plain JSON.
pub fn write_typed(r: &mut Reader<'_>, out: &mut Vec<u8>, scratch: &mut Scratch, depth: usize) -> Result<(), Reason> {
    // Values reach here from spans the item reader has checked: a syntax error would be a shape
    // problem of the value, not of the body.
    let ty = typed::open(r, &mut scratch.text).map_err(|_| Reason::from("attribute value is malformed"))??;
    write_from(ty, r, out, scratch, depth)?;
    typed::close(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(typed: &str) -> Result<String, Reason> {
        let mut out = Vec::new();
        write_typed(&mut Reader::new(typed.as_bytes()), &mut out, &mut Scratch::default(), 0)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn converts_every_type() {
        let typed = r#"{"M":{"s":{"S":"a\"b"},"n":{"N":"+.50"},"b":{"B":"aGk="},"t":{"BOOL":true},
            "z":{"NULL":true},"ss":{"SS":["x","y"]},"ns":{"NS":["1","2.0"]},"bs":{"BS":["AA=="]},
            "l":{"L":[{"N":"1E-130"},{"L":[]},{"M":{}}]}}}"#;
        assert_eq!(
            plain(typed).unwrap(),
            r#"{"s":"a\"b","n":50e-2,"b":"aGk=","t":true,"z":null,"ss":["x","y"],"ns":[1,2.0],"bs":["AA=="],"l":[1E-130,[],{}]}"#
        );
    }

    #[test]
    fn re_escapes_what_postgres_rejects() {
        assert_eq!(plain(r#"{"S":"a\tb"}"#).unwrap(), r#""a\tb""#);
        assert_eq!(plain(r#"{"S":"\u00e9\/"}"#).unwrap(), "\"é/\"");
        assert!(plain(r#"{"S":"a\u0000"}"#).unwrap_err().contains("U+0000"));
        assert!(plain(r#"{"M":{"k\u0000":{"S":"v"}}}"#).unwrap_err().contains("U+0000"));
        assert!(plain(r#"{"S":"\ud800"}"#).is_err());
    }

    #[test]
    fn rejects_bad_shapes() {
        for bad in [
            r#"{"S":1}"#,
            r#"{"N":"1x"}"#,
            r#"{"B":"***"}"#,
            r#"{"BOOL":"yes"}"#,
            r#"{"SS":"a"}"#,
            r#"{"NS":["a"]}"#,
            r#"{"L":{}}"#,
            r#"{"M":[]}"#,
            r#"{"X":1}"#,
            r#"{"S":"a","N":"1"}"#,
            r"{}",
            r#""S""#,
        ] {
            assert!(plain(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bounds_depth() {
        let nest = |n: usize| "{\"L\":[".repeat(n) + &"]}".repeat(n);
        assert!(plain(&nest(MAX_DEPTH)).is_ok());
        assert!(plain(&nest(MAX_DEPTH + 1)).unwrap_err().contains("deeper"));
    }
}
