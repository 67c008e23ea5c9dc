//! Line framing for stream transports, with the `too-long` rule: a line over
//! the limit is answered once and the rest of it, up to the next newline,
//! is discarded without being buffered, so the connection stays usable.

use super::first_non_blank;

#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A complete line without its `\n` (and without a trailing `\r`).
    Line(&'a [u8]),
    /// A line over the limit; `json` when it started with `{`, so the error
    /// can be answered in JSON.
    TooLong { json: bool },
}

#[derive(Debug, Default)]
pub struct Framer {
    /// Inside an over-long line: drop bytes until the next newline.
    discarding: bool,
    /// Bytes after the read position already searched for a newline, so a
    /// long line arriving in pieces is scanned once.
    scanned: usize,
}

impl Framer {
    /// The next frame of `buf[*pos..]`, advancing `*pos` past what it used.
    /// `eof`: the peer will send nothing more, so an unterminated last line
    /// counts as a line.
    pub fn next<'a>(&mut self, buf: &'a [u8], pos: &mut usize, max: usize, eof: bool) -> Option<Frame<'a>> {
        loop {
            let rest = &buf[*pos..];
            if rest.is_empty() {
                self.scanned = 0;
                // At EOF nothing more of a discarded line can come.
                self.discarding &= !eof;
                return None;
            }
            if self.discarding {
                match memchr(b'\n', rest) {
                    Some(i) => {
                        *pos += i + 1;
                        self.discarding = false;
                        continue;
                    }
                    None => {
                        *pos = buf.len();
                        // At EOF nothing more of the line can come.
                        self.discarding = !eof;
                        return None;
                    }
                }
            }
            let from = self.scanned.min(rest.len());
            match memchr(b'\n', &rest[from..]) {
                Some(i) => {
                    let end = from + i;
                    self.scanned = 0;
                    *pos += end + 1;
                    let line = &rest[..end];
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    if line.len() > max {
                        return Some(Frame::TooLong {
                            json: first_non_blank(line) == Some(b'{'),
                        });
                    }
                    return Some(Frame::Line(line));
                }
                // A '\r' at the very end may be the start of a "\r\n" and
                // not part of the line.
                None if rest.len() > max + usize::from(rest.last() == Some(&b'\r')) => {
                    let json = first_non_blank(rest) == Some(b'{');
                    self.discarding = !eof;
                    self.scanned = 0;
                    *pos = buf.len();
                    return Some(Frame::TooLong { json });
                }
                None if eof => {
                    self.scanned = 0;
                    *pos = buf.len();
                    let line = rest.strip_suffix(b"\r").unwrap_or(rest);
                    return Some(Frame::Line(line));
                }
                None => {
                    self.scanned = rest.len();
                    return None;
                }
            }
        }
    }

    /// Whether the framer is dropping the tail of an over-long line.
    pub fn is_discarding(&self) -> bool {
        self.discarding
    }
}

/// Position of the first `needle` in `hay`: the framer's hot path on large
/// requests, so the memchr crate's SIMD search.
pub fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    memchr::memchr(needle, hay)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(chunks: &[&[u8]], max: usize) -> Vec<String> {
        let mut f = Framer::default();
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            buf.extend_from_slice(c);
            let eof = i + 1 == chunks.len();
            let mut pos = 0;
            while let Some(fr) = f.next(&buf, &mut pos, max, eof) {
                out.push(match fr {
                    Frame::Line(l) => String::from_utf8_lossy(l).into_owned(),
                    Frame::TooLong { json } => format!("TOO-LONG json={json}"),
                });
            }
            buf.drain(..pos);
        }
        out
    }

    #[test]
    fn splits_lines_across_reads() {
        assert_eq!(frames(&[b"ab", b"c\r\nd\n", b"e"], 100), ["abc", "d", "e"]);
    }

    #[test]
    fn over_long_lines_are_discarded_up_to_the_newline() {
        let got = frames(&[b"0123456789", b"0123", b"456\nok\n"], 8);
        assert_eq!(got, ["TOO-LONG json=false", "ok"]);
        let got = frames(&[b" {\"op\":\"max\",\"values\":[1]}\nping\n"], 8);
        assert_eq!(got, ["TOO-LONG json=true", "ping"]);
    }

    #[test]
    fn a_line_exactly_at_the_limit_passes() {
        assert_eq!(frames(&[b"12345678\n"], 8), ["12345678"]);
    }
}
