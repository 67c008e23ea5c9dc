//! One stream connection's protocol state, without its socket: the bytes
//! read but not yet framed, the replies waiting for earlier ones (so
//! replies leave in request order whatever order the tasks finish in), the
//! output not yet written, and where the connection is in its life.
//!
//! The socket side (`stream.rs`) reads with [`Session::read_with`] and
//! writes from [`Session::output`]; everything in between is methods of
//! [`Session`] that return what the owner must do, so the state machine
//! is tested here with plain bytes. An idle connection holds no buffers:
//! they are taken from a [`Buffers`] pool while data is in flight and
//! given back when everything is empty.

use std::collections::VecDeque;
use std::io;
use std::ops::Range;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::protocol::frame::{Frame, Framer};
use crate::spare;

/// Unsent output above which a connection is not read further.
pub const MAX_PENDING_OUTPUT: usize = 1 << 20;
/// How long a lingering close waits for the client's EOF.
pub const LINGER: Duration = Duration::from_secs(2);
/// Bytes read from a socket at a time.
pub const READ_CHUNK: usize = 64 * 1024;
/// Buffers larger than this count in full against the budget, and are
/// given up as soon as they are empty.
const BIG_BUFFER: usize = 2 * READ_CHUNK;
/// Buffers larger than one read are not kept for reuse when a connection
/// goes idle, so one large request does not pin memory.
const KEEP_CAPACITY: usize = READ_CHUNK;
/// Idle buffer sets kept for reuse (at most 8 MiB of them).
const POOLED: usize = 64;

/// A moment, as milliseconds since the process first asked, in four
/// bytes: a connection keeps two of them, and an idle connection should
/// take little memory. Differences use wrapping arithmetic, exact for
/// anything shorter than 24 days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tick(u32);

impl Tick {
    pub fn of(now: Instant) -> Tick {
        static BASE: OnceLock<Instant> = OnceLock::new();
        let base = *BASE.get_or_init(Instant::now);
        // Truncated to 32 bits on purpose: see the type's documentation.
        Tick(now.saturating_duration_since(base).as_millis() as u32)
    }

    /// The time from `self` to `now` (zero if `now` is earlier).
    pub fn until(self, now: Instant) -> Duration {
        let d = Tick::of(now).0.wrapping_sub(self.0);
        if d > u32::MAX / 2 {
            Duration::ZERO
        } else {
            Duration::from_millis(u64::from(d))
        }
    }

    pub fn after(self, d: Duration) -> Tick {
        Tick(self.0.wrapping_add(d.as_millis() as u32))
    }

    /// Whether `now` is at or past this moment.
    pub fn reached(self, now: Instant) -> bool {
        Tick::of(now).0.wrapping_sub(self.0) <= u32::MAX / 2
    }
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading requests and writing replies.
    Open,
    /// No more requests will be read (EOF, `quit`, idle timeout, drain, an
    /// HTTP `Connection: close`): finish the replies owed, then close.
    Finishing,
    /// Write side shut down; reading and discarding until the client's EOF
    /// or the deadline, so it gets the last replies rather than a reset.
    Lingering { until: Tick },
}

/// The buffers of a connection with data in flight.
#[derive(Debug, Default)]
pub struct Flight {
    /// Bytes read: `input[start..]` not framed yet. Reads append to it in
    /// its spare capacity, never zeroed first: what the buffer takes in
    /// memory is what it holds, not what it reserved.
    input: Vec<u8>,
    start: usize,
    framer: Framer,
    out: Vec<u8>,
    sent: usize,
    /// Replies of requests `first_seq..`: None while the task runs.
    slots: VecDeque<Option<Vec<u8>>>,
    first_seq: u64,
    slot_bytes: usize,
}

impl Flight {
    fn is_empty(&self) -> bool {
        self.start == self.input.len()
            && self.sent == self.out.len()
            && self.slots.is_empty()
            && !self.framer.is_discarding()
    }

    fn reset(&mut self) {
        self.start = 0;
        self.input.clear();
        self.framer = Framer::default();
        self.out.clear();
        self.sent = 0;
        self.slot_bytes = 0;
        if self.input.capacity() > KEEP_CAPACITY {
            self.input = Vec::new();
        }
        if self.out.capacity() > KEEP_CAPACITY {
            self.out = Vec::new();
        }
    }
}

/// Buffer sets of idle connections, kept for the next one with data.
#[derive(Default)]
pub struct Buffers {
    // Boxed: a session holds its buffers as one pointer, and they move
    // between sessions and this pool without being copied.
    #[allow(clippy::vec_box)]
    free: Vec<Box<Flight>>,
}

impl Buffers {
    fn take(&mut self) -> Box<Flight> {
        self.free.pop().unwrap_or_default()
    }

    fn give(&mut self, mut f: Box<Flight>) {
        if self.free.len() < POOLED {
            f.reset();
            self.free.push(f);
        }
    }
}

/// A line framed from a connection's input: where it is, until the owner
/// says it is done with it ([`Session::consumed`]).
#[derive(Debug)]
pub enum Framed {
    /// `input[range]` is a complete line (without its newline).
    Line(Range<usize>),
    /// A line over the limit was discarded; `json` if it started with `{`.
    TooLong { json: bool },
}

/// Why a connection does not take requests right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    None,
    /// `max_inflight_per_conn` tasks out.
    Inflight,
    /// Unsent output over [`MAX_PENDING_OUTPUT`].
    Output,
}

pub struct Session {
    /// Unique for the daemon's lifetime: a result for a connection that
    /// has gone never reaches a new one that reuses its slot.
    id: u64,
    phase: Phase,
    /// The client sent EOF.
    eof: bool,
    flight: Option<Box<Flight>>,
    /// Sequence number of the next reply slot.
    next_seq: u64,
    /// Tasks in the scheduler or on a worker.
    inflight: u32,
    /// Bytes of this connection's tasks counted against the budget.
    task_bytes: usize,
    /// Last moment the connection made progress (a complete request read,
    /// or output written).
    last_active: Tick,
}

impl Session {
    pub fn new(id: u64, now: Instant) -> Session {
        Session {
            id,
            phase: Phase::Open,
            eof: false,
            flight: None,
            next_seq: 0,
            inflight: 0,
            task_bytes: 0,
            last_active: Tick::of(now),
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn eof(&self) -> bool {
        self.eof
    }

    pub fn inflight(&self) -> usize {
        self.inflight as usize
    }

    /// How long the connection has made no progress.
    pub fn idle_for(&self, now: Instant) -> Duration {
        self.last_active.until(now)
    }

    pub fn touch(&mut self, now: Instant) {
        self.last_active = Tick::of(now);
    }

    /// Bytes this connection holds: its buffers, its replies, its tasks.
    pub fn held(&self) -> usize {
        // A buffer of one read or less counts what it holds: reads go to
        // spare capacity, never zeroed first, so an idle reserve takes no
        // memory. A larger one counts all it took: it grew because it
        // was filled.
        let counted = |v: &Vec<u8>, done: usize| {
            if v.capacity() > BIG_BUFFER {
                v.capacity()
            } else {
                v.len() - done
            }
        };
        let buffers = self.flight.as_ref().map_or(0, |f| {
            counted(&f.input, f.start) + counted(&f.out, f.sent) + f.slot_bytes
        });
        buffers + self.task_bytes
    }

    /// Bytes of input not framed yet.
    pub fn unframed(&self) -> usize {
        self.flight.as_ref().map_or(0, |f| f.input.len() - f.start)
    }

    /// Whether the connection may take more requests, and if not why.
    pub fn hold(&self, max_inflight: usize) -> Hold {
        if self.inflight() >= max_inflight {
            Hold::Inflight
        } else if self.pending_output() > MAX_PENDING_OUTPUT {
            Hold::Output
        } else {
            Hold::None
        }
    }

    /// Whether reading the socket can still bring requests.
    pub fn reading(&self) -> bool {
        self.phase == Phase::Open && !self.eof
    }

    /// Reads into the input: `read` appends at most `want` bytes (`max`,
    /// at most one [`READ_CHUNK`]) to the buffer it is given, whose spare
    /// capacity is at least that, and returns how many. The buffer never
    /// grows past `limit` (the longest line, and a read) unless the
    /// unframed input needs it.
    pub fn read_with(
        &mut self,
        buffers: &mut Buffers,
        max: usize,
        limit: usize,
        read: impl FnOnce(&mut Vec<u8>, usize) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let f = self.flight.get_or_insert_with(|| buffers.take());
        if f.start == f.input.len() {
            f.input.clear();
            f.start = 0;
            if f.input.capacity() > BIG_BUFFER {
                // A big request is over: its buffer goes (kept for the
                // next big line if it is one of those).
                spare::give_line(std::mem::take(&mut f.input));
            }
        } else if f.start > 0 && f.start >= f.input.capacity() / 2 {
            // Move the unframed tail to the front rather than grow.
            f.input.drain(..f.start);
            f.start = 0;
        }
        let want = max.clamp(1, READ_CHUNK);
        let len = f.input.len();
        if f.input.capacity() - len < want {
            // Doubling keeps a big line's reads amortized (and a large
            // buffer is remapped, not copied, when it grows).
            let target = (2 * f.input.capacity()).min(limit).max(len + want);
            if target >= spare::BIG
                && let Some(mut kept) = spare::take_line(target)
            {
                kept.extend_from_slice(&f.input);
                f.input = kept;
            }
            f.input.reserve_exact(target - len);
        }
        let n = read(&mut f.input, want)?;
        debug_assert!(f.input.len() == len + n && n <= want);
        Ok(n)
    }

    /// The client's EOF: an unterminated last line will be framed as a line.
    pub fn saw_eof(&mut self) {
        self.eof = true;
    }

    /// The next complete line, or None. `max` is `max_line_bytes`.
    pub fn next_frame(&mut self, max: usize) -> Option<Framed> {
        let eof = self.eof;
        let f = self.flight.as_mut()?;
        let mut pos = f.start;
        let frame = f.framer.next(&f.input, &mut pos, max, eof);
        let at = f.start;
        f.start = pos;
        Some(match frame? {
            Frame::Line(line) => {
                let offset = line.as_ptr() as usize - f.input.as_ptr() as usize;
                debug_assert!(offset >= at);
                Framed::Line(offset..offset + line.len())
            }
            Frame::TooLong { json } => Framed::TooLong { json },
        })
    }

    /// Puts a line [`Session::next_frame`] returned back, to be framed
    /// again later.
    pub fn unframe(&mut self, start: usize) {
        if let Some(f) = self.flight.as_mut() {
            f.start = start;
            f.framer = Framer::default();
        }
    }

    /// The input bytes of a line [`Session::next_frame`] returned.
    pub fn line(&self, range: Range<usize>) -> &[u8] {
        self.flight.as_ref().map_or(&[][..], |f| &f.input[range])
    }

    /// Takes the whole input buffer out, when the line `range` is the only
    /// thing in it that matters: for a big line, the buffer moves to the
    /// worker instead of the line being copied. The unframed rest, if
    /// any, is copied into a new buffer.
    pub fn take_line_buffer(&mut self, range: &Range<usize>) -> Option<Vec<u8>> {
        let f = self.flight.as_mut()?;
        if f.start < range.end {
            return None;
        }
        let rest = f.input[f.start..].to_vec();
        let mut line = std::mem::take(&mut f.input);
        line.truncate(range.end);
        f.start = 0;
        f.input = rest;
        Some(line)
    }

    /// Input will not be framed any more (after `quit`, a close, an HTTP
    /// error): drop what is left.
    pub fn discard_input(&mut self) {
        if let Some(f) = self.flight.as_mut() {
            f.start = f.input.len();
        }
    }

    /// HTTP: the whole unframed input, to parse a request from.
    pub fn unframed_input(&self) -> &[u8] {
        self.flight.as_ref().map_or(&[][..], |f| &f.input[f.start..])
    }

    /// HTTP: `n` bytes of the unframed input were one request.
    pub fn consume(&mut self, n: usize) {
        if let Some(f) = self.flight.as_mut() {
            f.start = (f.start + n).min(f.input.len());
        }
    }

    /// Appends a reply that is ready now, behind any still owed.
    pub fn reply_now(&mut self, buffers: &mut Buffers, write: impl FnOnce(&mut Vec<u8>)) {
        let f = self.flight.get_or_insert_with(|| buffers.take());
        if f.slots.is_empty() {
            write(&mut f.out);
        } else {
            let mut v = Vec::new();
            write(&mut v);
            f.slot_bytes += v.len();
            f.slots.push_back(Some(v));
            self.next_seq += 1;
        }
    }

    /// Reserves the place of a reply that a task will produce, and counts
    /// the task's `bytes`.
    pub fn reserve(&mut self, buffers: &mut Buffers, bytes: usize) -> u64 {
        let f = self.flight.get_or_insert_with(|| buffers.take());
        if f.slots.is_empty() {
            f.first_seq = self.next_seq;
        }
        f.slots.push_back(None);
        self.next_seq += 1;
        self.inflight += 1;
        self.task_bytes += bytes;
        self.next_seq - 1
    }

    /// Fills a reserved place (its task held `bytes`) and moves every
    /// reply now in order to the output. False when there is no such
    /// place (a stale result).
    pub fn fill(&mut self, seq: u64, bytes: usize, reply: Vec<u8>) -> bool {
        let Some(f) = self.flight.as_mut() else {
            return false;
        };
        let Some(i) = seq.checked_sub(f.first_seq) else {
            return false;
        };
        let Some(slot @ None) = f.slots.get_mut(i as usize) else {
            return false;
        };
        f.slot_bytes += reply.len();
        *slot = Some(reply);
        self.inflight -= 1;
        self.task_bytes -= bytes;
        while let Some(Some(_)) = f.slots.front() {
            if let Some(Some(r)) = f.slots.pop_front() {
                f.slot_bytes -= r.len();
                if f.out.len() == f.sent {
                    f.out.clear();
                    f.sent = 0;
                }
                if f.out.is_empty() && r.len() > READ_CHUNK {
                    // A big reply becomes the output as it is.
                    f.out = r;
                } else {
                    f.out.extend_from_slice(&r);
                }
            }
            f.first_seq += 1;
        }
        true
    }

    /// Output not yet written.
    pub fn output(&self) -> &[u8] {
        self.flight.as_ref().map_or(&[][..], |f| &f.out[f.sent..])
    }

    pub fn pending_output(&self) -> usize {
        self.output().len()
    }

    /// `n` bytes of the output were written.
    pub fn wrote(&mut self, n: usize, now: Instant) {
        if let Some(f) = self.flight.as_mut() {
            f.sent += n;
            if f.sent == f.out.len() {
                f.out.clear();
                f.sent = 0;
                if f.out.capacity() > BIG_BUFFER {
                    f.out = Vec::new();
                }
            } else if f.out.capacity() > BIG_BUFFER && f.sent >= f.out.len() / 2 {
                // Half of a big reply is out: what is written goes, so a
                // client that stops reading holds only what it has not
                // read.
                f.out.drain(..f.sent);
                f.out.shrink_to_fit();
                f.sent = 0;
            }
        }
        if n > 0 {
            self.last_active = Tick::of(now);
        }
    }

    /// Whether every reply owed has been written.
    pub fn all_sent(&self) -> bool {
        self.flight
            .as_ref()
            .is_none_or(|f| f.slots.is_empty() && f.sent == f.out.len())
    }

    /// Gives the buffers back when nothing is in flight.
    pub fn release_idle(&mut self, buffers: &mut Buffers) {
        if self.flight.as_ref().is_some_and(|f| f.is_empty())
            && let Some(f) = self.flight.take()
        {
            buffers.give(f);
        }
    }

    /// No more requests will be read.
    pub fn finish(&mut self) {
        if self.phase == Phase::Open {
            self.phase = Phase::Finishing;
        }
    }

    /// What a finishing connection should do now that its output may be
    /// written: keep going, or end (closing at once after the client's
    /// EOF, else lingering).
    pub fn ending(&self) -> Ending {
        // After the client's EOF, once every line is framed, nothing more
        // can come: the connection finishes like one that said `quit`.
        let done_reading = self.phase == Phase::Open && self.eof && self.unframed() == 0;
        if !(self.phase == Phase::Finishing || done_reading) || !self.all_sent() {
            return Ending::No;
        }
        if self.eof { Ending::Close } else { Ending::Linger }
    }

    /// Starts the lingering close (the caller shuts the write side down).
    pub fn linger(&mut self, now: Instant, buffers: &mut Buffers) {
        self.phase = Phase::Lingering {
            until: Tick::of(now).after(LINGER),
        };
        if let Some(f) = self.flight.take() {
            buffers.give(f);
        }
    }
}

/// What to do with a connection whose replies may be done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    No,
    Close,
    Linger,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One read of what `bytes` starts with; returns how much was read.
    fn feed(s: &mut Session, b: &mut Buffers, bytes: &[u8]) -> usize {
        s.read_with(b, bytes.len(), 1 << 30, |v, want| {
            let k = want.min(bytes.len());
            v.extend_from_slice(&bytes[..k]);
            Ok(k)
        })
        .unwrap()
    }

    /// Drives a session with `chunks` of input as a socket would, answering
    /// each line with its own text (upper-cased), some at once and some
    /// through a reserved slot filled later and out of order; returns
    /// everything written.
    fn drive(chunks: &[Vec<u8>], slot_every: usize, max_line: usize) -> Vec<u8> {
        let now = Instant::now();
        let mut b = Buffers::default();
        let mut s = Session::new(1, now);
        let mut written = Vec::new();
        let mut owed: Vec<(u64, Vec<u8>)> = Vec::new();
        let mut n = 0;
        let last = chunks.len().saturating_sub(1);
        for (i, chunk) in chunks.iter().enumerate() {
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                let k = feed(&mut s, &mut b, rest);
                rest = &rest[k..];
            }
            if i == last {
                s.saw_eof();
            }
            while let Some(fr) = s.next_frame(max_line) {
                let reply = match fr {
                    Framed::Line(r) => {
                        let mut v = s.line(r).to_ascii_uppercase();
                        v.push(b'\n');
                        v
                    }
                    Framed::TooLong { .. } => b"TOO-LONG\n".to_vec(),
                };
                n += 1;
                if n % slot_every == 0 {
                    let seq = s.reserve(&mut b, 3);
                    owed.push((seq, reply));
                } else {
                    s.reply_now(&mut b, |o| o.extend_from_slice(&reply));
                }
            }
            // Results arrive in reverse order.
            while let Some((seq, r)) = owed.pop() {
                assert!(s.fill(seq, 3, r));
            }
            let out = s.output().to_vec();
            s.wrote(out.len(), now);
            written.extend_from_slice(&out);
            s.release_idle(&mut b);
        }
        assert_eq!(s.held(), 0);
        assert_eq!(s.inflight(), 0);
        written
    }

    fn chunked(stream: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
        cuts.sort_unstable();
        let mut out = Vec::new();
        let mut at = 0;
        for c in cuts {
            out.push(stream[at..c].to_vec());
            at = c;
        }
        out.push(stream[at..].to_vec());
        out
    }

    #[test]
    fn lines_across_reads_and_replies_in_order() {
        let got = drive(&[b"ab".to_vec(), b"c\r\nd\n".to_vec(), b"e".to_vec()], 2, 100);
        assert_eq!(got, b"ABC\nD\nE\n");
    }

    #[test]
    fn over_long_lines_are_refused_and_the_connection_goes_on() {
        let got = drive(
            &[b"0123456789".to_vec(), b"0123".to_vec(), b"456\nok\n".to_vec()],
            5,
            8,
        );
        assert_eq!(got, b"TOO-LONG\nOK\n");
    }

    #[test]
    fn idle_sessions_hold_no_buffers() {
        let now = Instant::now();
        let mut b = Buffers::default();
        let mut s = Session::new(1, now);
        feed(&mut s, &mut b, b"ping\n");
        let Some(Framed::Line(r)) = s.next_frame(100) else {
            panic!()
        };
        assert_eq!(s.line(r), b"ping");
        s.reply_now(&mut b, |o| o.extend_from_slice(b"OK pong\n"));
        assert!(s.held() >= 8, "{}", s.held());
        s.wrote(8, now);
        s.release_idle(&mut b);
        assert!(s.flight.is_none());
        assert_eq!(b.free.len(), 1);
    }

    #[test]
    fn a_big_line_moves_to_its_task_without_a_copy() {
        let now = Instant::now();
        let mut b = Buffers::default();
        let mut s = Session::new(1, now);
        let line = vec![b'7'; 300_000];
        let mut stream = line.clone();
        stream.extend_from_slice(b"\nnext");
        let mut rest = &stream[..];
        while !rest.is_empty() {
            let k = feed(&mut s, &mut b, rest);
            rest = &rest[k..];
        }
        let Some(Framed::Line(r)) = s.next_frame(1 << 20) else {
            panic!()
        };
        let buf = s.take_line_buffer(&r).unwrap();
        assert_eq!(&buf[r], &line[..]);
        assert_eq!(s.unframed_input(), b"next");
    }

    #[test]
    fn a_finishing_session_ends_once_its_replies_are_written() {
        let now = Instant::now();
        let mut b = Buffers::default();
        let mut s = Session::new(1, now);
        let seq = s.reserve(&mut b, 0);
        s.finish();
        assert_eq!(s.ending(), Ending::No);
        assert!(s.fill(seq, 0, b"OK bye\n".to_vec()));
        assert!(!s.fill(seq, 0, b"again\n".to_vec()), "a slot is filled once");
        assert_eq!(s.ending(), Ending::No);
        s.wrote(7, now);
        assert_eq!(s.ending(), Ending::Linger);
        s.saw_eof();
        assert_eq!(s.ending(), Ending::Close);
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_replies(
            lines in prop::collection::vec("[a-z #{},]{0,30}", 1..30),
            cuts in prop::collection::vec(0usize..2000, 0..12),
            slot_every in 1usize..5,
            crlf in any::<bool>(),
        ) {
            let eol = if crlf { "\r\n" } else { "\n" };
            let stream = lines.join(eol).into_bytes();
            let whole = drive(std::slice::from_ref(&stream), slot_every, 20);
            let parts = drive(&chunked(&stream, &cuts), slot_every, 20);
            prop_assert_eq!(whole, parts);
        }
    }
}
