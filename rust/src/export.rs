//! An export data file (gzip JSON Lines) inflated a chunk of whole lines at a time.
//!
//! DynamoDB writes each data file as gzip; a file may hold several gzip members one after the
//! other. The lines come out in chunks of about `chunk` bytes, cut after a newline (a line longer
//! than that comes whole), so memory stays bounded however well the file compresses.

use std::io::{BufRead, BufReader, ErrorKind, Read};

use flate2::bufread::MultiGzDecoder;

use crate::error::{CoreError, CoreResult};

/// Inflated bytes read at a time.
const READ: usize = 256 << 10;

pub struct ExportLines<R: Read> {
    decoder: MultiGzDecoder<BufReader<R>>,
    /// Inflated bytes not handed out yet: less than a chunk, or one long line in the making.
    pending: Vec<u8>,
    /// Lines still to leave out (loaded already).
    skip: u64,
    chunk: usize,
    /// Inflated bytes so far (for the offset of an error).
    inflated: usize,
    ended: bool,
}

impl<R: Read> ExportLines<R> {
    /// The lines of the gzip file `reader` holds, from the one after the first `skip`.
    pub fn new(reader: R, skip: u64, chunk: usize) -> Self {
        ExportLines {
            decoder: MultiGzDecoder::new(BufReader::with_capacity(READ, reader)),
            pending: Vec::new(),
            skip,
            chunk: chunk.max(1),
            inflated: 0,
            ended: false,
        }
    }

    /// The next chunk of whole lines (the last line of the file may lack its newline); None once
    /// every line is out. An error says the file is not whole gzip.
    pub fn next_chunk(&mut self) -> CoreResult<Option<Vec<u8>>> {
        loop {
            let cut = if self.ended { self.pending.len() } else { self.cut() };
            if cut > 0 {
                let rest = self.pending.split_off(cut);
                let mut chunk = std::mem::replace(&mut self.pending, rest);
                self.leave_out_skipped(&mut chunk);
                if !chunk.is_empty() {
                    return Ok(Some(chunk));
                }
                continue;
            }
            if self.ended {
                return Ok(None);
            }
            self.inflate()?;
        }
    }

    /// Where to cut `pending` for a chunk: after its last newline within `chunk` bytes, or after
    /// the first one past that (a long line); 0 while it holds no chunk yet.
    fn cut(&self) -> usize {
        if self.pending.len() < self.chunk {
            return 0;
        }
        if let Some(at) = memchr::memrchr(b'\n', &self.pending[..self.chunk]) {
            return at + 1;
        }
        memchr::memchr(b'\n', &self.pending[self.chunk..]).map_or(0, |at| self.chunk + at + 1)
    }

    fn inflate(&mut self) -> CoreResult<()> {
        if self.inflated == 0 && self.decoder.get_mut().fill_buf().is_ok_and(<[u8]>::is_empty) {
            // An empty partition's file may hold no bytes at all rather than an empty gzip stream.
            self.ended = true;
            return Ok(());
        }
        let start = self.pending.len();
        self.pending.resize(start + READ, 0);
        let read = loop {
            match self.decoder.read(&mut self.pending[start..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    self.pending.truncate(start);
                    let why = if e.kind() == ErrorKind::UnexpectedEof {
                        "the gzip stream ends before its end: the file is cut short".to_owned()
                    } else {
                        format!("not gzip, or damaged: {e}")
                    };
                    return Err(CoreError::BadGzip { offset: self.inflated, why });
                }
            }
        };
        self.pending.truncate(start + read);
        self.inflated += read;
        self.ended = read == 0;
        Ok(())
    }

    fn leave_out_skipped(&mut self, chunk: &mut Vec<u8>) {
        let mut at = 0;
        while self.skip > 0 && at < chunk.len() {
            at = memchr::memchr(b'\n', &chunk[at..]).map_or(chunk.len(), |n| at + n + 1);
            self.skip -= 1;
        }
        chunk.drain(..at);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::write::GzEncoder;
    use flate2::Compression;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn chunks(file: &[u8], skip: u64, chunk: usize) -> CoreResult<Vec<Vec<u8>>> {
        let mut lines = ExportLines::new(file, skip, chunk);
        let mut out = Vec::new();
        while let Some(c) = lines.next_chunk()? {
            out.push(c);
        }
        Ok(out)
    }

    fn numbered(n: usize) -> Vec<u8> {
        (0..n).flat_map(|i| format!("{{\"Item\":{{\"k\":{{\"N\":\"{i}\"}}}}}}\n").into_bytes()).collect()
    }

    #[test]
    fn chunks_are_whole_lines_and_add_up_to_the_file() {
        let data = numbered(10_000);
        let out = chunks(&gzip(&data), 0, 1000).unwrap();
        assert!(out.len() > 100);
        for c in &out {
            assert!(c.ends_with(b"\n") && c.len() <= 1000, "{} bytes", c.len());
        }
        assert_eq!(out.concat(), data);
    }

    #[test]
    fn skipped_lines_are_left_out() {
        let data = numbered(1000);
        let lines: Vec<&[u8]> = data.split_inclusive(|&b| b == b'\n').collect();
        for skip in [0, 1, 37, 999, 1000, 5000] {
            let want = lines[skip.min(lines.len())..].concat();
            assert_eq!(chunks(&gzip(&data), skip as u64, 64).unwrap().concat(), want, "skip {skip}");
        }
    }

    #[test]
    fn a_line_longer_than_a_chunk_comes_whole() {
        let long = format!("{{\"Item\":{{\"k\":{{\"S\":\"{}\"}}}}}}\n", "x".repeat(5000));
        let data = [numbered(3), long.clone().into_bytes(), numbered(2)].concat();
        let out = chunks(&gzip(&data), 0, 100).unwrap();
        assert!(out.iter().any(|c| c == long.as_bytes()));
        assert_eq!(out.concat(), data);
    }

    #[test]
    fn several_members_an_empty_file_and_a_last_line_without_newline() {
        let data = numbered(5);
        let two = [gzip(&data), gzip(b"{\"Item\":{}}")].concat();
        assert_eq!(chunks(&two, 0, 1 << 20).unwrap().concat(), [&data[..], b"{\"Item\":{}}"].concat());
        assert!(chunks(&gzip(b""), 0, 10).unwrap().is_empty());
        assert!(chunks(b"", 0, 10).unwrap().is_empty());
    }

    #[test]
    fn memory_stays_about_a_chunk_however_well_the_file_compresses() {
        let line = b"{\"Item\":{\"k\":{\"S\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}}}\n";
        let data = line.repeat(400_000); // 20 MB that gzip to a few hundred kB
        let file = gzip(&data);
        assert!(file.len() < data.len() / 50, "{} bytes of gzip", file.len());
        let mut lines = ExportLines::new(&file[..], 0, 64 << 10);
        let (mut total, mut most) = (0, 0);
        while let Some(c) = lines.next_chunk().unwrap() {
            total += c.len();
            most = most.max(lines.pending.capacity());
        }
        assert_eq!(total, data.len());
        assert!(most <= 2 * ((64 << 10) + READ), "{most} bytes held");
    }

    #[test]
    fn a_file_cut_short_or_not_gzip_is_an_error() {
        let file = gzip(&numbered(1000));
        let cut = chunks(&file[..file.len() / 2], 0, 100).unwrap_err();
        assert!(cut.to_string().contains("cut short"), "{cut}");
        let mut damaged = file.clone();
        let middle = damaged.len() / 2;
        damaged[middle] ^= 0xff;
        assert!(chunks(&damaged, 0, 100).is_err());
        assert!(chunks(b"{\"Item\":{}}\n", 0, 100).unwrap_err().to_string().contains("not gzip"));
    }
}
