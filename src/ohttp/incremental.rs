//! A Binary HTTP request (RFC 9292) read as its bytes arrive, for chunked Oblivious
//! HTTP: [`read_head`] takes the control data and header section once they are whole;
//! [`Content`] then passes the content through as it comes and checks that the message
//! ends where a message may end.
//!
//! Why not the `bhttp` crate's `stream` feature (0.7.2): its length-prefixed reader
//! allocates the length the wire declares before reading it (`vec![0; len]`, no bound
//! by default), and after a partial read it returns `Pending` without arranging a
//! wake-up. Both matter for input from anyone; this reader holds at most one head
//! ([`MAX_HEAD_BYTES`]) or one trailer field, and never allocates what it has not read.
//!
//! Truncation (RFC 9292 §3.8), as the whole-message reader in `inner.rs` decides it: a
//! message may end right after its header section (no content), after its content's
//! terminator (a trailer cut at a field boundary), or in its padding; never inside its
//! content.

use bhttp::Message;
use bytes::Bytes;

use crate::envelope::ohttp::chunked::read_varint;

/// The most bytes a request head (control data and header section) may take.
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The most bytes a trailer section may take (it is read and dropped).
const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// Why the message cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed;

/// What the head says about the content that follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    KnownLength,
    Indeterminate,
}

/// Takes the next varint, or returns `Ok(None)` (more bytes needed) from the caller.
macro_rules! need {
    ($e:expr) => {
        match $e {
            Some(v) => v,
            None => return Ok(None),
        }
    };
}

/// A cursor over what has arrived.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn varint(&mut self) -> Option<u64> {
        let (v, used) = read_varint(&self.bytes[self.at..])?;
        self.at += used;
        Some(v)
    }

    /// A length-prefixed string of at most `max` bytes: `Err` past `max`, `Ok(None)` if
    /// it has not all arrived.
    fn prefixed(&mut self, max: usize) -> Result<Option<&'a [u8]>, Malformed> {
        let start = self.at;
        let Some(len) = self.varint() else {
            return Ok(None);
        };
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= max)
            .ok_or(Malformed)?;
        let Some(bytes) = self.bytes.get(self.at..self.at + len) else {
            self.at = start;
            return Ok(None);
        };
        self.at += len;
        Ok(Some(bytes))
    }
}

/// The request's head in one call (a buffer that grows between calls goes to one
/// [`HeadReader`]).
#[cfg(test)]
pub(crate) fn read_head(bytes: &[u8]) -> Result<Option<(Message, Content, usize)>, Malformed> {
    HeadReader::default().read(bytes)
}

/// Reads a request head from a buffer that grows between calls, taking each whole item
/// (the framing, each control string, each field) once: a head that arrives a byte at a
/// time costs time linear in its length, not quadratic.
#[derive(Debug, Default)]
pub(crate) struct HeadReader {
    /// Bytes of the buffer taken so far (whole items only).
    at: usize,
    framing: Option<Framing>,
    /// Method, scheme, authority, path, as they come.
    control: Vec<Vec<u8>>,
    fields: Vec<(Vec<u8>, Vec<u8>)>,
}

impl HeadReader {
    /// The head, once `bytes` (everything received so far, from the message's first
    /// byte) holds all of it: its message (without content), the reader of its content, and
    /// how many bytes it took.
    pub(crate) fn read(
        &mut self,
        bytes: &[u8],
    ) -> Result<Option<(Message, Content, usize)>, Malformed> {
        let max = MAX_HEAD_BYTES;
        let outcome = self.resume(bytes, max)?;
        // Past the bound whether or not it is whole, so that where the bytes were split
        // never changes the outcome.
        let too_long = match &outcome {
            Some((_, _, used)) => *used > max,
            None => bytes.len() > max,
        };
        if too_long {
            return Err(Malformed);
        }
        Ok(outcome)
    }

    fn resume(
        &mut self,
        bytes: &[u8],
        max: usize,
    ) -> Result<Option<(Message, Content, usize)>, Malformed> {
        let mut c = Cursor { bytes, at: self.at };
        let framing = match self.framing {
            Some(framing) => framing,
            None => {
                let framing = match need!(c.varint()) {
                    0 => Framing::KnownLength,
                    2 => Framing::Indeterminate,
                    _ => return Err(Malformed),
                };
                self.framing = Some(framing);
                self.at = c.at;
                framing
            }
        };
        while self.control.len() < 4 {
            let item = need!(c.prefixed(max)?).to_vec();
            self.control.push(item);
            self.at = c.at;
        }
        match framing {
            Framing::KnownLength => {
                let section = need!(c.prefixed(max)?);
                let mut fields = Cursor {
                    bytes: section,
                    at: 0,
                };
                while fields.at < section.len() {
                    // Inside a whole section, a field cut short is malformed, not "more".
                    let name = fields.prefixed(max)?.ok_or(Malformed)?;
                    let value = fields.prefixed(max)?.ok_or(Malformed)?;
                    self.field(name, value)?;
                }
                self.at = c.at;
            }
            Framing::Indeterminate => loop {
                let name = need!(c.prefixed(max)?);
                if name.is_empty() {
                    self.at = c.at;
                    break;
                }
                let value = need!(c.prefixed(max)?);
                self.field(name, value)?;
                self.at = c.at;
            },
        }
        let [method, scheme, authority, path]: [Vec<u8>; 4] = std::mem::take(&mut self.control)
            .try_into()
            .map_err(|_| Malformed)?;
        let mut message = Message::request(method, scheme, authority, path);
        for (name, value) in std::mem::take(&mut self.fields) {
            message.put_header(name, value);
        }
        Ok(Some((message, Content::new(framing), self.at)))
    }

    /// Keeps a field; more than an inner request may have is refused here already.
    fn field(&mut self, name: &[u8], value: &[u8]) -> Result<(), Malformed> {
        if self.fields.len() >= super::inner::MAX_FIELDS {
            return Err(Malformed);
        }
        self.fields.push((name.to_vec(), value.to_vec()));
        Ok(())
    }
}

/// Where the content reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Known-length: the content's length comes next (or the message ends: no content).
    Length,
    /// Known-length: this much content is still to come.
    Data(u64),
    /// Known-length: the trailer section's length comes next (or the end).
    TrailerLength,
    /// Indeterminate: a chunk length comes next; `any` once a chunk was read (ending
    /// here would cut the content).
    ChunkLength { any: bool },
    /// Indeterminate: this much of the current chunk is still to come.
    Chunk(u64),
    /// Indeterminate: a trailer field (or its terminator) comes next; bytes so far.
    Trailer(usize),
    /// Only zero bytes may follow.
    Padding,
}

/// Passes a request's content through as it arrives.
#[derive(Debug)]
pub(crate) struct Content {
    state: State,
}

impl Content {
    fn new(framing: Framing) -> Self {
        let state = match framing {
            Framing::KnownLength => State::Length,
            Framing::Indeterminate => State::ChunkLength { any: false },
        };
        Self { state }
    }

    /// Reads what it can of `bytes`, appending the content in it to `out`; returns how
    /// many bytes it took (the rest is an item not whole yet: keep it, add to it, call
    /// again).
    pub(crate) fn read(&mut self, bytes: &[u8], out: &mut Vec<Bytes>) -> Result<usize, Malformed> {
        let mut c = Cursor { bytes, at: 0 };
        while self.step(&mut c, out)? && c.at < bytes.len() {}
        Ok(c.at)
    }

    /// One item; `false` when more bytes are needed.
    fn step(&mut self, c: &mut Cursor<'_>, out: &mut Vec<Bytes>) -> Result<bool, Malformed> {
        let rest = c.bytes.len() - c.at;
        match self.state {
            State::Length | State::ChunkLength { .. } => {
                let Some(len) = c.varint() else {
                    return Ok(false);
                };
                self.state = match (self.state, len) {
                    (State::Length, 0) => State::TrailerLength,
                    (State::Length, n) => State::Data(n),
                    (_, 0) => State::Trailer(0),
                    (_, n) => State::Chunk(n),
                };
            }
            State::Data(left) | State::Chunk(left) => {
                if rest == 0 {
                    return Ok(false);
                }
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(rest);
                out.push(Bytes::copy_from_slice(&c.bytes[c.at..c.at + take]));
                c.at += take;
                let left = left - take as u64;
                self.state = match (self.state, left) {
                    (State::Data(_), 0) => State::TrailerLength,
                    (State::Data(_), n) => State::Data(n),
                    (_, 0) => State::ChunkLength { any: true },
                    (_, n) => State::Chunk(n),
                };
            }
            State::TrailerLength => {
                let Some(_section) = c.prefixed(MAX_TRAILER_BYTES)? else {
                    return Ok(false);
                };
                self.state = State::Padding;
            }
            State::Trailer(seen) => {
                let start = c.at;
                let Some(name) = c.prefixed(MAX_TRAILER_BYTES)? else {
                    return Ok(false);
                };
                if name.is_empty() {
                    self.state = State::Padding;
                } else {
                    let Some(_value) = c.prefixed(MAX_TRAILER_BYTES)? else {
                        c.at = start;
                        return Ok(false);
                    };
                    let seen = seen + (c.at - start);
                    if seen > MAX_TRAILER_BYTES {
                        return Err(Malformed);
                    }
                    self.state = State::Trailer(seen);
                }
            }
            State::Padding => {
                if c.bytes[c.at..].iter().any(|&b| b != 0) {
                    return Err(Malformed);
                }
                c.at = c.bytes.len();
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// At the end of the message, with `left` (what [`Content::read`] did not take):
    /// whether it may end here.
    pub(crate) fn finish(&self, left: &[u8]) -> Result<(), Malformed> {
        if !left.is_empty() {
            return Err(Malformed);
        }
        match self.state {
            State::Length
            | State::TrailerLength
            | State::ChunkLength { any: false }
            | State::Trailer(_)
            | State::Padding => Ok(()),
            State::Data(_) | State::Chunk(_) | State::ChunkLength { any: true } => Err(Malformed),
        }
    }
}

/// Reads a whole message fed in pieces of `step` bytes, as the gateway does: its head
/// (re-encoded, known-length, without content) and its content, or `None` if it may not
/// end where `bytes` does. For tests and the fuzz target (the result must not depend on
/// `step`).
pub(crate) fn read_in_pieces(bytes: &[u8], step: usize) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut pending = Vec::new();
    let mut head = None;
    let mut reader = HeadReader::default();
    let mut body = Vec::new();
    for piece in bytes.chunks(step.max(1)).chain(std::iter::once(&[][..])) {
        pending.extend_from_slice(piece);
        if head.is_none()
            && let Some((m, content, used)) = reader.read(&pending).ok()?
        {
            pending.drain(..used);
            head = Some((m, content));
        }
        if let Some((_, content)) = &mut head {
            let mut out = Vec::new();
            let used = content.read(&pending, &mut out).ok()?;
            pending.drain(..used);
            out.iter().for_each(|b| body.extend_from_slice(b));
        }
    }
    let (message, content) = head?;
    content.finish(&pending).ok()?;
    let mut encoded = Vec::new();
    message
        .write_bhttp(bhttp::Mode::KnownLength, &mut encoded)
        .ok()?;
    Some((encoded, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(bytes: &[u8], step: usize) -> Option<(Message, Vec<u8>)> {
        let (head, body) = read_in_pieces(bytes, step)?;
        let message = Message::read_bhttp(&mut std::io::Cursor::new(&head)).ok()?;
        Some((message, body))
    }

    fn encoded(mode: bhttp::Mode, content: &[u8]) -> Vec<u8> {
        let mut m = Message::request(
            b"POST".to_vec(),
            b"https".to_vec(),
            b"api.example.com".to_vec(),
            b"/1/upload".to_vec(),
        );
        m.put_header("content-type", "application/json");
        m.put_header("x-a", "1");
        m.write_content(content);
        m.put_trailer("x-t", "2");
        let mut out = Vec::new();
        m.write_bhttp(mode, &mut out).unwrap();
        out
    }

    #[test]
    fn both_framings_read_whole_in_any_pieces() {
        let content = vec![9u8; 5000];
        for mode in [bhttp::Mode::KnownLength, bhttp::Mode::IndeterminateLength] {
            let bytes = encoded(mode, &content);
            for step in [1, 2, 7, 100, bytes.len()] {
                let (m, body) = read_all(&bytes, step).unwrap_or_else(|| panic!("{mode:?} {step}"));
                assert_eq!(body, content);
                assert_eq!(m.control().path(), Some(&b"/1/upload"[..]));
                assert_eq!(m.header().get(b"x-a"), Some(&b"1"[..]));
            }
            // With padding: still whole; a non-zero byte after it: not.
            let mut padded = bytes.clone();
            padded.extend([0, 0, 0]);
            assert!(read_all(&padded, 3).is_some());
            padded.push(1);
            assert!(read_all(&padded, 3).is_none());
        }
    }

    #[test]
    fn a_message_cut_inside_its_content_is_never_whole() {
        let content = vec![5u8; 300];
        for mode in [bhttp::Mode::KnownLength, bhttp::Mode::IndeterminateLength] {
            let bytes = encoded(mode, &content);
            let (_, _, head_len) = read_head(&bytes).unwrap().unwrap();
            for cut in head_len + 1..bytes.len() {
                let whole = read_all(&bytes[..cut], 64);
                // Whole only once the content (and its terminator) are all there.
                if let Some((_, body)) = whole {
                    assert_eq!(body, content, "{mode:?} cut at {cut} passed as whole");
                }
            }
            // Cut right after the head: a message without content (§3.8).
            assert_eq!(read_all(&bytes[..head_len], 64).unwrap().1, b"");
        }
    }

    #[test]
    fn hostile_heads_are_refused_without_allocating_their_claims() {
        // A response, an unknown framing, a method claiming 2^62 bytes.
        assert!(matches!(read_head(&[1]), Err(Malformed)));
        assert!(matches!(read_head(&[9]), Err(Malformed)));
        let mut huge = vec![2];
        huge.extend([0xff; 8]);
        assert!(matches!(read_head(&huge), Err(Malformed)));
        // Fields that never end: refused once past the bound.
        let mut endless = vec![2, 4, b'P', b'O', b'S', b'T', 0, 0, 1, b'/'];
        while endless.len() <= MAX_HEAD_BYTES {
            endless.extend([1, b'a', 1, b'b']);
        }
        assert!(matches!(read_head(&endless), Err(Malformed)));
        // Incomplete but within bounds: more needed.
        assert!(read_head(&endless[..100]).unwrap().is_none());
        // A known-length section whose last field is cut inside it.
        let bad = [0, 0, 0, 0, 1, b'/', 3, 1, b'a', 5];
        assert!(matches!(read_head(&bad), Err(Malformed)));
    }
}
