//! PostgreSQL text COPY rows from the encoder's binary COPY rows.
//!
//! The dry run prints a script psql can run, and psql takes inline COPY data only in text format.
//! Rendering the binary rows (rather than converting DynamoDB values a second way) keeps a single
//! conversion from DynamoDB to PostgreSQL values: the script loads exactly what migrate would.

use std::fmt::Write as _;

use crate::error::{CoreError, CoreResult};
use crate::types::ColumnType;

/// Big-endian reads over one buffer, failing on a short read.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> CoreResult<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or_else(|| bad("truncated"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn i16(&mut self) -> CoreResult<i16> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }

    fn i32(&mut self) -> CoreResult<i32> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }

    fn done(&self) -> bool {
        self.pos == self.buf.len()
    }
}

fn bad(why: &str) -> CoreError {
    CoreError::BadBody { offset: 0, why: format!("binary COPY rows: {why}") }
}

/// Append the text COPY form of binary COPY `rows` (no header) whose fields have `types`;
/// returns the number of rows. A trailer (field count -1) ends the input early.
pub fn rows_to_text(rows: &[u8], types: &[ColumnType], out: &mut Vec<u8>) -> CoreResult<usize> {
    let mut c = Cursor { buf: rows, pos: 0 };
    let mut n = 0;
    let mut value = String::new();
    while !c.done() {
        let fields = c.i16()?;
        if fields == -1 {
            break;
        }
        if usize::try_from(fields).ok() != Some(types.len()) {
            return Err(bad(&format!("a row has {fields} fields, the layout {}", types.len())));
        }
        for (i, &ty) in types.iter().enumerate() {
            if i > 0 {
                out.push(b'\t');
            }
            let len = c.i32()?;
            if len < 0 {
                out.extend_from_slice(b"\\N");
                continue;
            }
            let payload = c.take(len as usize)?;
            value.clear();
            render(ty, payload, &mut value)?;
            copy_escape(value.as_bytes(), out);
        }
        out.push(b'\n');
        n += 1;
    }
    Ok(n)
}

/// A value's text as PostgreSQL's output function writes it.
fn render(ty: ColumnType, payload: &[u8], out: &mut String) -> CoreResult<()> {
    match ty {
        ColumnType::Text => out.push_str(utf8(payload)?),
        ColumnType::Numeric => numeric(payload, out)?,
        ColumnType::Bytea => hex(payload, out),
        ColumnType::Boolean => out.push(if payload == [1] { 't' } else { 'f' }),
        ColumnType::Jsonb => match payload.split_first() {
            Some((1, json)) => out.push_str(utf8(json)?),
            _ => return Err(bad("jsonb without version 1")),
        },
        ColumnType::TextArray | ColumnType::NumericArray | ColumnType::ByteaArray => array(ty, payload, out)?,
    }
    Ok(())
}

fn utf8(b: &[u8]) -> CoreResult<&str> {
    std::str::from_utf8(b).map_err(|_| bad("text is not UTF-8"))
}

fn hex(payload: &[u8], out: &mut String) {
    out.push_str("\\x");
    for b in payload {
        let _ = write!(out, "{b:02x}");
    }
}

/// `numeric_out`: base-10000 digits with a weight, shown with exactly `dscale` decimals.
fn numeric(payload: &[u8], out: &mut String) -> CoreResult<()> {
    let mut c = Cursor { buf: payload, pos: 0 };
    let ndigits = c.i16()?;
    let weight = i32::from(c.i16()?);
    let sign = c.i16()? as u16;
    let dscale = c.i16()?;
    if sign == 0xC000 {
        out.push_str("NaN");
        return Ok(());
    }
    let digits = (0..ndigits).map(|_| c.i16()).collect::<CoreResult<Vec<i16>>>()?;
    let group = |w: i32| -> i16 {
        // The group of weight `w` is digits[weight - w].
        usize::try_from(weight - w).ok().and_then(|i| digits.get(i)).copied().unwrap_or(0)
    };
    if sign == 0x4000 && !digits.is_empty() {
        out.push('-');
    }
    if digits.is_empty() || weight < 0 {
        out.push('0');
    } else {
        let _ = write!(out, "{}", group(weight));
        for w in (0..weight).rev() {
            let _ = write!(out, "{:04}", group(w));
        }
    }
    if dscale > 0 {
        out.push('.');
        let mut left = usize::from(dscale as u16);
        let mut w = -1;
        while left > 0 {
            let four = format!("{:04}", group(w));
            let take = left.min(4);
            out.push_str(&four[..take]);
            left -= take;
            w -= 1;
        }
    }
    Ok(())
}

/// `array_out` for a one-dimensional array without NULLs; text elements always quoted.
fn array(ty: ColumnType, payload: &[u8], out: &mut String) -> CoreResult<()> {
    let mut c = Cursor { buf: payload, pos: 0 };
    let ndim = c.i32()?;
    let _has_null = c.i32()?;
    let _oid = c.i32()?;
    out.push('{');
    if ndim == 1 {
        let n = c.i32()?;
        let _lower = c.i32()?;
        let mut element = String::new();
        for i in 0..n {
            if i > 0 {
                out.push(',');
            }
            let len = c.i32()?;
            let payload = c.take(usize::try_from(len).map_err(|_| bad("NULL in a set"))?)?;
            element.clear();
            match ty {
                ColumnType::NumericArray => {
                    numeric(payload, out)?;
                    continue;
                }
                ColumnType::TextArray => element.push_str(utf8(payload)?),
                _ => hex(payload, &mut element),
            }
            out.push('"');
            for ch in element.chars() {
                if ch == '"' || ch == '\\' {
                    out.push('\\');
                }
                out.push(ch);
            }
            out.push('"');
        }
    } else if ndim != 0 {
        return Err(bad("a set with more than one dimension"));
    }
    out.push('}');
    Ok(())
}

/// Text COPY's escaping: backslash, and the delimiter and line ends as backslash sequences.
fn copy_escape(value: &[u8], out: &mut Vec<u8>) {
    for &b in value {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pgcopy::numeric;

    fn numeric_text(s: &str) -> String {
        let mut digits = Vec::new();
        let d = numeric::parse(s.as_bytes(), &mut digits).unwrap();
        let mut bin = Vec::new();
        numeric::write_binary(&d, &mut bin);
        let mut out = String::new();
        super::numeric(&bin, &mut out).unwrap();
        out
    }

    #[test]
    fn numbers_render_as_numeric_out() {
        for (input, shown) in [
            ("0", "0"),
            ("0.00", "0.00"),
            ("1", "1"),
            ("-1", "-1"),
            ("10000", "10000"),
            ("123456789.5", "123456789.5"),
            ("0.0001", "0.0001"),
            ("-0.5", "-0.5"),
            ("1.50", "1.50"),
            ("1.5E+3", "1500"),
            ("1E-5", "0.00001"),
            ("12345678901234567890.123456789", "12345678901234567890.123456789"),
        ] {
            assert_eq!(numeric_text(input), shown, "{input}");
        }
        assert_eq!(numeric_text("1E-130"), format!("0.{}1", "0".repeat(129)));
        assert_eq!(numeric_text("9.9999999999999999999999999999999999999E+125").len(), 126);
    }

    fn field(payload: &[u8]) -> Vec<u8> {
        let mut v = (payload.len() as i32).to_be_bytes().to_vec();
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn rows_escape_and_null() {
        let mut rows = 3i16.to_be_bytes().to_vec();
        rows.extend(field(b"a\tb\nc\\d"));
        rows.extend((-1i32).to_be_bytes());
        rows.extend(field(&[1, b'{', b'"', b'k', b'"', b':', b'1', b'}']));
        rows.extend((-1i16).to_be_bytes());
        let mut out = Vec::new();
        let n = rows_to_text(&rows, &[ColumnType::Text, ColumnType::Numeric, ColumnType::Jsonb], &mut out).unwrap();
        assert_eq!(n, 1);
        assert_eq!(out, b"a\\tb\\nc\\\\d\t\\N\t{\"k\":1}\n");
    }

    #[test]
    fn arrays_and_bytea() {
        let mut arr = Vec::new();
        for v in [1i32, 0, 25, 2, 1] {
            arr.extend(v.to_be_bytes());
        }
        arr.extend(field(b"x\"y"));
        arr.extend(field(b"a,b"));
        let mut out = String::new();
        render(ColumnType::TextArray, &arr, &mut out).unwrap();
        assert_eq!(out, r#"{"x\"y","a,b"}"#);
        out.clear();
        render(ColumnType::Bytea, &[0, 255], &mut out).unwrap();
        assert_eq!(out, "\\x00ff");
        let mut empty = Vec::new();
        for v in [0i32, 0, 25] {
            empty.extend(v.to_be_bytes());
        }
        out.clear();
        render(ColumnType::TextArray, &empty, &mut out).unwrap();
        assert_eq!(out, "{}");
    }

    #[test]
    fn short_or_misshapen_rows_are_errors() {
        let mut out = Vec::new();
        assert!(rows_to_text(&2i16.to_be_bytes(), &[ColumnType::Text], &mut out).is_err());
        let mut rows = 1i16.to_be_bytes().to_vec();
        rows.extend(field(b"abc")[..5].iter());
        assert!(rows_to_text(&rows, &[ColumnType::Text], &mut out).is_err());
    }
}
