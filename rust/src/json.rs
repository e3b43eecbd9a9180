//! A minimal zero-copy JSON reader, specialised for DynamoDB response bodies.
//!
//! Values are not materialised: the reader validates syntax as the encoders walk the input, and
//! hands out byte ranges of it (a skipped value, a string). Strings are returned raw
//! (still escaped) with a flag telling whether they contain escapes, so the common case copies
//! bytes without decoding. UTF-8 is checked where it can occur, inside strings, as they are read:
//! anywhere else JSON's grammar admits only ASCII, so a body read without error is valid UTF-8.

/// A syntax error: where, and what was expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntaxError {
    pub offset: usize,
    pub why: &'static str,
}

pub type JsonResult<T> = Result<T, SyntaxError>;

/// A JSON string as it appears in the input, without its quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawStr<'a> {
    pub raw: &'a [u8],
    /// True when `raw` contains a backslash escape and must be decoded before use.
    pub escaped: bool,
}

impl<'a> RawStr<'a> {
    /// The decoded bytes, borrowed when there is nothing to decode, else written into `scratch`.
    pub fn decoded<'s>(&self, scratch: &'s mut Vec<u8>) -> Result<&'s [u8], &'static str>
    where
        'a: 's,
    {
        if self.escaped {
            scratch.clear();
            unescape(self.raw, scratch)?;
            Ok(scratch.as_slice())
        } else {
            Ok(self.raw)
        }
    }
}

pub struct Reader<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    #[cold]
    #[inline(never)]
    pub fn err<T>(&self, why: &'static str) -> JsonResult<T> {
        Err(SyntaxError { offset: self.pos, why })
    }

    #[inline]
    pub fn ws(&mut self) {
        while let Some(&b) = self.buf.get(self.pos) {
            if b == b' ' || b == b'\n' || b == b'\r' || b == b'\t' {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    /// The next non-blank byte, without consuming it.
    #[inline]
    pub fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.buf.get(self.pos).copied()
    }

    /// Consume `b` (after blanks) or fail with `why`.
    #[inline]
    pub fn eat(&mut self, b: u8, why: &'static str) -> JsonResult<()> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            self.err(why)
        }
    }

    /// Consume `b` if it is next (after blanks).
    #[inline]
    pub fn eat_if(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    pub fn at_end(&mut self) -> bool {
        self.ws();
        self.pos >= self.buf.len()
    }

    /// Read a string (after blanks); escapes are checked for syntax but left encoded. Raw control
    /// characters are invalid JSON (DynamoDB escapes them), so a string copied as it is can never
    /// hold U+0000 or anything PostgreSQL's JSON parser refuses.
    #[allow(clippy::inline_always)] // inlined into every caller: +20% on benches/encode.py
    #[inline(always)]
    pub fn string(&mut self) -> JsonResult<RawStr<'a>> {
        if self.peek() != Some(b'"') {
            return self.err("expected a string");
        }
        let start = self.pos + 1;
        // Most strings (names, type tags, values) are plain ASCII: find the quote and be done.
        let mut end = find_special::<true>(self.buf, start);
        let mut escaped = false;
        if self.buf.get(end) != Some(&b'"') {
            // Both paths meet on scalars, not on a RawStr: a struct built in memory on one path
            // and read whole after the merge stalled the load (store forwarding) on every string.
            (end, escaped) = self.string_rest(end)?;
        }
        self.pos = end + 1;
        Ok(RawStr { raw: &self.buf[start..end], escaped })
    }

    /// The rest of a string from its first escape, non-ASCII byte or control character at `pos`:
    /// the position of its closing quote, and whether it holds an escape.
    #[inline(never)]
    fn string_rest(&mut self, pos: usize) -> JsonResult<(usize, bool)> {
        self.pos = pos;
        let mut escaped = false;
        loop {
            match self.buf.get(self.pos) {
                Some(b'"') => return Ok((self.pos, escaped)),
                Some(0x80..) => {
                    // A run up to the next quote, escape or control character: those are ASCII,
                    // so they never cut a character in two, and the run is valid alone or not.
                    let end = find_special::<false>(self.buf, self.pos);
                    if let Err(e) = std::str::from_utf8(&self.buf[self.pos..end]) {
                        self.pos += e.valid_up_to();
                        return self.err("invalid UTF-8 in a string");
                    }
                    self.pos = end;
                    continue;
                }
                Some(b'\\') => {
                    escaped = true;
                    match self.buf.get(self.pos + 1) {
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.pos += 2,
                        Some(b'u') => {
                            let hex = self.buf.get(self.pos + 2..self.pos + 6);
                            if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                                return self.err("invalid \\u escape");
                            }
                            self.pos += 6;
                        }
                        _ => return self.err("invalid escape"),
                    }
                }
                Some(_) => return self.err("control character in a string"),
                None => return self.err("unterminated string"),
            }
            self.pos = find_special::<true>(self.buf, self.pos);
        }
    }

    /// Read a JSON number token and return its text.
    pub fn number(&mut self) -> JsonResult<&'a [u8]> {
        self.ws();
        let start = self.pos;
        match number_end(self.buf, start) {
            Ok(end) => {
                self.pos = end;
                Ok(&self.buf[start..end])
            }
            Err(at) => {
                self.pos = at;
                self.err("invalid number")
            }
        }
    }

    /// Read an unsigned integer (as `Count` and `ScannedCount` are).
    pub fn unsigned(&mut self) -> JsonResult<u64> {
        let text = self.number()?;
        std::str::from_utf8(text)
            .ok()
            .and_then(|t| t.parse::<u64>().ok())
            .map_or_else(|| self.err("expected an unsigned integer"), Ok)
    }

    /// Read a number as a double (as capacity units are).
    pub fn double(&mut self) -> JsonResult<f64> {
        let text = self.number()?;
        std::str::from_utf8(text)
            .ok()
            .and_then(|t| t.parse::<f64>().ok())
            .map_or_else(|| self.err("expected a number"), Ok)
    }

    fn literal(&mut self, word: &'static [u8]) -> JsonResult<()> {
        if self.buf[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            self.err("invalid literal")
        }
    }

    /// Read `true` or `false`.
    pub fn boolean(&mut self) -> JsonResult<bool> {
        match self.peek() {
            Some(b't') => self.literal(b"true").map(|()| true),
            Some(b'f') => self.literal(b"false").map(|()| false),
            _ => self.err("expected true or false"),
        }
    }

    /// Skip one value of any kind, checking its syntax. Iterative, so nesting depth costs no stack.
    pub fn skip_value(&mut self) -> JsonResult<()> {
        // Scalars (most values) need no container bookkeeping.
        match self.peek() {
            Some(b'{' | b'[') => self.skip_container(),
            Some(b'"') => self.string().map(|_| ()),
            _ => self.scalar(),
        }
    }

    fn scalar(&mut self) -> JsonResult<()> {
        match self.peek() {
            Some(b't') => self.literal(b"true"),
            Some(b'f') => self.literal(b"false"),
            Some(b'n') => self.literal(b"null"),
            Some(b'-' | b'0'..=b'9') => self.number().map(|_| ()),
            Some(_) => self.err("expected a value"),
            None => self.err("unexpected end of input"),
        }
    }

    fn skip_container(&mut self) -> JsonResult<()> {
        // One bit per open container, 1 = object; the first 64 levels live in `top`, deeper ones
        // (never seen in DynamoDB data, which nests to about 70 JSON levels) spill into `spill`.
        let mut top = 0u64;
        let mut depth = 0usize;
        let mut spill: Vec<u64> = Vec::new();
        let push = |top: &mut u64, depth: &mut usize, spill: &mut Vec<u64>, object: bool| {
            if *depth > 0 && *depth % 64 == 0 {
                spill.push(*top);
                *top = 0;
            }
            *top |= u64::from(object) << (*depth % 64);
            *depth += 1;
        };
        'value: loop {
            match self.peek() {
                Some(b'{') => {
                    self.pos += 1;
                    if !self.eat_if(b'}') {
                        self.string()?;
                        self.eat(b':', "expected ':'")?;
                        push(&mut top, &mut depth, &mut spill, true);
                        continue 'value;
                    }
                }
                Some(b'[') => {
                    self.pos += 1;
                    if !self.eat_if(b']') {
                        push(&mut top, &mut depth, &mut spill, false);
                        continue 'value;
                    }
                }
                Some(b'"') => {
                    self.string()?;
                }
                _ => self.scalar()?,
            }
            // After a complete value: close containers until one continues with a comma.
            loop {
                if depth == 0 {
                    return Ok(());
                }
                let in_object = top >> ((depth - 1) % 64) & 1 == 1;
                match self.peek() {
                    Some(b',') => {
                        self.pos += 1;
                        if in_object {
                            self.string()?;
                            self.eat(b':', "expected ':'")?;
                        }
                        continue 'value;
                    }
                    Some(b'}') if in_object => self.pos += 1,
                    Some(b']') if !in_object => self.pos += 1,
                    None => return self.err("unexpected end of input"),
                    _ => return self.err("expected ',' or the end of a container"),
                }
                depth -= 1;
                top &= !(1u64 << (depth % 64));
                if depth > 0 && depth % 64 == 0 {
                    top = spill.pop().unwrap_or(0);
                }
            }
        }
    }

    /// Read an object member by member: `f` gets each key with the reader at its value, which it
    /// must consume. Errors of `f` end the walk.
    pub fn members<E: From<SyntaxError>>(
        &mut self,
        mut f: impl FnMut(&mut Self, RawStr<'a>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.eat(b'{', "expected a JSON object")?;
        if self.eat_if(b'}') {
            return Ok(());
        }
        loop {
            let key = self.string()?;
            self.eat(b':', "expected ':'")?;
            f(self, key)?;
            if !self.eat_if(b',') {
                self.eat(b'}', "expected ',' or '}'")?;
                return Ok(());
            }
        }
    }

    /// Skip one value and return its bytes.
    pub fn value_span(&mut self) -> JsonResult<&'a [u8]> {
        self.ws();
        let start = self.pos;
        self.skip_value()?;
        Ok(&self.buf[start..self.pos])
    }
}

/// The end of the number in JSON's grammar that starts at `start` (`-?(0|[1-9]d*)(.d+)?([eE][+-]?d+)?`),
/// or where it stops being one.
pub fn number_end(b: &[u8], start: usize) -> Result<usize, usize> {
    let digits = |mut p: usize| {
        while b.get(p).is_some_and(u8::is_ascii_digit) {
            p += 1;
        }
        p
    };
    let mut p = start + usize::from(b.get(start) == Some(&b'-'));
    p = match b.get(p) {
        Some(b'0') => p + 1,
        Some(b'1'..=b'9') => digits(p),
        _ => return Err(p),
    };
    if b.get(p) == Some(&b'.') {
        let end = digits(p + 1);
        if end == p + 1 {
            return Err(end);
        }
        p = end;
    }
    if matches!(b.get(p), Some(b'e' | b'E')) {
        p += 1 + usize::from(matches!(b.get(p + 1), Some(b'+' | b'-')));
        let end = digits(p);
        if end == p {
            return Err(end);
        }
        p = end;
    }
    Ok(p)
}

const LOW_BITS: u64 = 0x0101_0101_0101_0101;
const HIGH_BITS: u64 = 0x8080_8080_8080_8080;

/// Nonzero where a byte of `w` is zero; the lowest flagged byte is exact (higher ones may not be).
#[inline]
fn zero_bytes(w: u64) -> u64 {
    w.wrapping_sub(LOW_BITS) & !w & HIGH_BITS
}

/// The position of the first `"`, `\\` or control character at or after `pos` (or the end), and
/// with `NON_ASCII` of the first byte above 0x7F too. Eight bytes at a time: most strings in a
/// Scan page are short, where calling memchr costs more than it saves.
#[allow(clippy::inline_always)] // see Reader::string
#[inline(always)]
fn find_special<const NON_ASCII: bool>(buf: &[u8], mut pos: usize) -> usize {
    while let Some(chunk) = buf.get(pos..pos + 8) {
        let w = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        let mut found = zero_bytes(w ^ (LOW_BITS * u64::from(b'"')))
            | zero_bytes(w ^ (LOW_BITS * u64::from(b'\\')))
            | (w.wrapping_sub(LOW_BITS * 0x20) & !w & HIGH_BITS);
        if NON_ASCII {
            found |= w & HIGH_BITS;
        }
        if found != 0 {
            return pos + (found.trailing_zeros() / 8) as usize;
        }
        pos += 8;
    }
    while let Some(&b) = buf.get(pos) {
        if b == b'"' || b == b'\\' || b < 0x20 || (NON_ASCII && b >= 0x80) {
            break;
        }
        pos += 1;
    }
    pos
}

fn hex4(h: &[u8]) -> u32 {
    h.iter().fold(0, |acc, &c| {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => c - b'A' + 10,
        };
        (acc << 4) | u32::from(d)
    })
}

/// Decode the escapes of a raw JSON string (already checked for syntax by [`Reader::string`]).
/// A lone surrogate cannot be UTF-8 and is an error.
pub fn unescape(raw: &[u8], out: &mut Vec<u8>) -> Result<(), &'static str> {
    let mut i = 0;
    while i < raw.len() {
        let Some(j) = memchr::memchr(b'\\', &raw[i..]) else {
            out.extend_from_slice(&raw[i..]);
            break;
        };
        out.extend_from_slice(&raw[i..i + j]);
        i += j;
        let c = raw[i + 1];
        i += 2;
        let ch = match c {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            _ => {
                let hi = hex4(&raw[i..i + 4]);
                i += 4;
                let code = if (0xD800..0xDC00).contains(&hi) {
                    if raw.get(i..i + 2) != Some(b"\\u") || raw.len() < i + 6 {
                        return Err("lone UTF-16 surrogate in a \\u escape");
                    }
                    let lo = hex4(&raw[i + 2..i + 6]);
                    if !(0xDC00..0xE000).contains(&lo) {
                        return Err("lone UTF-16 surrogate in a \\u escape");
                    }
                    i += 6;
                    0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                } else if (0xDC00..0xE000).contains(&hi) {
                    return Err("lone UTF-16 surrogate in a \\u escape");
                } else {
                    hi
                };
                char::from_u32(code).ok_or("invalid \\u escape")?
            }
        };
        let mut tmp = [0u8; 4];
        out.extend_from_slice(ch.encode_utf8(&mut tmp).as_bytes());
    }
    Ok(())
}

/// Append `s` (valid UTF-8) to `out` as a JSON string with quotes, escaping what JSON requires.
pub fn write_escaped(s: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in s.iter().enumerate() {
        let esc: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => {
                out.extend_from_slice(&s[start..i]);
                let hex = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(hex[usize::from(b >> 4)]);
                out.push(hex[usize::from(b & 15)]);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&s[start..i]);
        out.extend_from_slice(esc);
        start = i + 1;
    }
    out.extend_from_slice(&s[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skip(s: &str) -> JsonResult<usize> {
        let mut r = Reader::new(s.as_bytes());
        r.skip_value()?;
        Ok(r.pos)
    }

    #[test]
    fn skips_nested_values() {
        let s = r#"{"a":[1,-2.5e3,{"b":null}],"c":"x\"y","d":true} tail"#;
        assert_eq!(skip(s).unwrap(), s.len() - 5);
        assert_eq!(skip("[]").unwrap(), 2);
        assert_eq!(skip(" {} ").unwrap(), 3);
    }

    #[test]
    fn rejects_bad_syntax() {
        for bad in [
            "{",
            "[1,]",
            "{\"a\"}",
            "{\"a\":}",
            "[1 2]",
            "tru",
            "\"abc",
            "01x",
            "-",
            "1.",
            "1e",
            "{,}",
            "\"\\x\"",
            "\"\\u12\"",
            "[}",
            "{]",
        ] {
            let mut r = Reader::new(bad.as_bytes());
            let ok = r.skip_value().is_ok() && r.at_end();
            assert!(!ok, "{bad} should not parse");
        }
    }

    #[test]
    fn deep_nesting_uses_no_stack() {
        let s = "[".repeat(100_000) + &"]".repeat(100_000);
        assert_eq!(skip(&s).unwrap(), s.len());
        // Objects and arrays mixed across the 64-level boundaries of the bit stack.
        let open: String = (0..200).map(|i| if i % 3 == 0 { "{\"k\":" } else { "[1," }).collect();
        let close: String = (0..200).rev().map(|i| if i % 3 == 0 { "}" } else { "]" }).collect();
        let s = open + "null" + &close;
        assert_eq!(skip(&s).unwrap(), s.len());
        let wrong: String = s.replacen('}', "]", 1);
        assert!(skip(&wrong).is_err());
    }

    #[test]
    fn finds_specials_at_every_offset() {
        for len in 0..40 {
            for special in [b'"', b'\\', b'\n', 0u8, 0x1f] {
                let mut buf = vec![b'a'; len];
                buf.push(special);
                buf.extend_from_slice(b"xyz\"");
                assert_eq!(find_special::<true>(&buf, 0), len, "{len} {special}");
                assert_eq!(find_special::<false>(&buf, 0), len, "{len} {special}");
            }
            let mut high = "é".repeat(len).into_bytes();
            high.push(b'"');
            assert_eq!(find_special::<false>(&high, 0), high.len() - 1);
            assert_eq!(find_special::<true>(&high, 0), 0);
            let mut late = vec![b'a'; len];
            late.push(0xC3);
            assert_eq!(find_special::<true>(&late, 0), len);
        }
        assert!(Reader::new(b"\"a\x01b\"").string().is_err());
        assert!(Reader::new(b"\"a\x00b\"").string().is_err());
    }

    #[test]
    fn strings_are_checked_to_be_utf8() {
        for good in ["\"é\"", "\"Café Zürich\"", "\"東京 \\n 😀\"", "\"a\\u00e9b é\""] {
            let s = Reader::new(good.as_bytes()).string().unwrap();
            assert_eq!(s.escaped, good.contains('\\'), "{good}");
        }
        for bad in [
            &b"\"\xff\""[..],
            b"\"ab\x80\"",
            b"\"\xc3\"",
            b"\"\xe6\x97\\n\"",
            b"\"\xed\xa0\x80\"",
            b"\"\xc0\xaf\"",
            b"\"\xf4\x90\x80\x80\"",
            b"\"ok \\n \xf0\x9f\x98\"",
        ] {
            let err = Reader::new(bad).string().unwrap_err();
            assert_eq!(err.why, "invalid UTF-8 in a string", "{bad:?}");
        }
        // Outside strings only ASCII is JSON.
        assert!(Reader::new(b"[1,\xc3\xa9]").skip_value().is_err());
    }

    #[test]
    fn strings_report_escapes() {
        let mut r = Reader::new(br#""plain" "a\nb""#);
        assert_eq!(r.string().unwrap(), RawStr { raw: b"plain", escaped: false });
        let s = r.string().unwrap();
        assert!(s.escaped);
        let mut scratch = Vec::new();
        assert_eq!(s.decoded(&mut scratch).unwrap(), b"a\nb");
    }

    #[test]
    fn unescapes_unicode() {
        let mut out = Vec::new();
        unescape(br"\u00e9\ud83d\ude00\/\u0000", &mut out).unwrap();
        assert_eq!(out, "é😀/\0".as_bytes());
        for lone in [&br"\ud83d"[..], br"\ude00", br"\ud83dx", br"\ud83d\u0041"] {
            assert!(unescape(lone, &mut Vec::new()).is_err());
        }
    }

    #[test]
    fn escapes_for_json() {
        let mut out = Vec::new();
        write_escaped(b"a\"b\\c\nd\x01\x1f\xc3\xa9", &mut out);
        assert_eq!(out, b"\"a\\\"b\\\\c\\nd\\u0001\\u001f\xc3\xa9\"");
    }

    #[test]
    fn reads_scalars() {
        let mut r = Reader::new(b" 42 128.5 true false");
        assert_eq!(r.unsigned().unwrap(), 42);
        assert!((r.double().unwrap() - 128.5).abs() < f64::EPSILON);
        assert!(r.boolean().unwrap());
        assert!(!r.boolean().unwrap());
        assert!(Reader::new(b"-1").unsigned().is_err());
    }
}
