//! One dispatch for every transport: a parsed request (or its refusal)
//! from a TCP, TLS, HTTP or UDP client, and the place its reply goes.
//!
//! The loop answers at once what it can (refusals, `ping`, `info`, `help`,
//! `quit`, and tiny list requests while both queues are empty: the inline
//! rule of `crate::tasks`); everything else becomes a task with a reserved
//! reply slot. A task's answer comes back through [`Server::finish`],
//! written in its request's format into the slot it reserved.

use std::rc::Rc;
use std::time::{Duration, Instant};

use super::Server;
use super::record::Asked;
use crate::config::Proto;
use crate::ops::{self, Exec, InfoValue, LoopOp, OPS, Output, PI_MAX_CHUNKS};
use crate::protocol::{Args, Code, Failure, Format, Id, Name, Payload, Rejection, Request, Syntax};
use crate::reply;
use crate::tasks::{Finished, TaskWork, queue_full};

/// Bytes a task counts against `max_buffered_bytes` besides its payload:
/// its reply, its bookkeeping.
pub const TASK_BYTES: usize = 256;

/// A list request's values: the text they are in, borrowed for the time of
/// the dispatch (a request the loop computes at once needs no copy), or a
/// payload already owned (a big line moved from its connection's buffer).
pub enum ValuesArg<'a> {
    Borrowed(&'a [u8], Syntax),
    Owned(Payload),
}

impl ValuesArg<'_> {
    fn text(&self) -> (&[u8], Syntax) {
        match self {
            ValuesArg::Borrowed(text, syntax) => (text, *syntax),
            ValuesArg::Owned(p) => (p.values(), p.syntax),
        }
    }

    fn into_payload(self) -> Payload {
        match self {
            ValuesArg::Borrowed(text, syntax) => Payload {
                bytes: text.to_vec(),
                span: 0..text.len(),
                syntax,
            },
            ValuesArg::Owned(p) => p,
        }
    }
}

/// Where a request came from, and so where its reply goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// A stream connection, by slab key and lifetime-unique id.
    Conn { key: usize, id: u64 },
    /// Line `line` of UDP datagram batch `batch` (id `id`).
    Udp { batch: usize, id: u64, line: usize },
}

/// A request's origin as the dispatch needs it.
pub struct Origin {
    pub place: Place,
    pub proto: Proto,
    pub peer: Rc<str>,
    /// Mutual TLS: the user the client certificate names, and whether a
    /// request may name another.
    pub cert_user: Option<(Name, bool)>,
}

/// Where a task's reply goes. Each variant carries the unique id of its
/// sink, checked on delivery, so a reply can never reach another client
/// that happens to reuse a slot.
#[derive(Debug, Clone, Copy)]
pub enum Sink {
    Conn { key: usize, id: u64, seq: u64 },
    Udp { batch: usize, id: u64, line: usize },
}

/// What answering a task needs besides its result.
pub struct Answer {
    sink: Sink,
    format: Format,
    id: Option<Id>,
    /// Bytes counted against `max_buffered_bytes` while the task lives.
    held: usize,
    asked: Asked,
}

impl Server {
    /// Dispatches one request (see the module's documentation).
    pub(super) fn dispatch(
        &mut self,
        origin: &Origin,
        parsed: Result<Request, Rejection>,
        payload: Option<ValuesArg>,
        now: Instant,
    ) {
        let parsed = self.identify(origin, parsed);
        let parsed = if self.refusing(now) {
            Err(Rejection::of(&parsed, Failure::shutting_down()))
        } else {
            parsed
        };
        let req = match parsed {
            Ok(req) => req,
            Err(rej) => return self.refuse(origin, &rej),
        };
        let count = match &req.args {
            Args::Values { count, .. } => *count,
            _ => 0,
        };
        let mut asked = Asked {
            proto: origin.proto,
            peer: Rc::clone(&origin.peer),
            user: req.user,
            id: req.id,
            op: Some(req.op),
            count,
            values: Vec::new(),
            quiet: false,
            counted: false,
        };
        match (OPS[req.op].exec, &req.args) {
            (Exec::Loop(op), _) => {
                let output = self.loop_op(op);
                self.answer_now(origin.place, req.format, req.id.as_ref(), Ok(&output));
                self.books
                    .record(&asked, Ok(&output), Duration::ZERO, Duration::ZERO);
                if let (LoopOp::Quit, Place::Conn { key, .. }) = (op, origin.place) {
                    self.end_requests(key);
                }
            }
            (Exec::Users, _) => {
                // `users` sees its own request.
                self.books.count_now(&mut asked);
                let held = self.books.users.rendered_size() + TASK_BYTES;
                self.enqueue(origin.place, req.format, asked, TaskWork::Users, 1, held, now);
            }
            (Exec::List(exec), _) => {
                let Some(payload) = payload else {
                    return self.refuse(origin, &Rejection::of(&Ok(req), Failure::internal()));
                };
                let cost = ops::cost(OPS[req.op].args, count, 0);
                let (text, syntax) = payload.text();
                if self.tasks.may_inline(cost) {
                    let started = Instant::now();
                    let result = ops::compute_list(exec, text, syntax);
                    let run = started.elapsed();
                    self.answer_now(origin.place, req.format, req.id.as_ref(), result.as_ref());
                    let raw = Some((text, syntax));
                    self.books
                        .record_with(&asked, raw, result.as_ref(), Duration::ZERO, run);
                    return;
                }
                asked.values = self.books.values_to_log(text, syntax);
                let payload = payload.into_payload();
                // The line, and the parsed values the worker will make of it.
                let held = payload.bytes.capacity() + 8 * count + TASK_BYTES;
                let work = TaskWork::List {
                    exec,
                    payload: Some(payload),
                };
                self.enqueue(origin.place, req.format, asked, work, cost, held, now);
            }
            (Exec::Pi, &Args::Pi { samples, chunks }) => {
                let chunks = chunks.unwrap_or_else(|| {
                    // At most 1024 here, so the conversion cannot fail.
                    (self.pool.size() as u64).min(samples).clamp(1, PI_MAX_CHUNKS) as u32
                });
                let cost = ops::cost(OPS[req.op].args, 0, samples);
                let held = TASK_BYTES + 32 * chunks as usize;
                self.enqueue(
                    origin.place,
                    req.format,
                    asked,
                    TaskWork::Pi { samples, chunks },
                    cost,
                    held,
                    now,
                );
            }
            (Exec::Pi, _) => self.refuse(origin, &Rejection::of(&Ok(req), Failure::internal())),
        }
    }

    /// The bytes a request's task will hold (0 for what the loop answers
    /// at once): what the budget counts for it from dispatch to answer.
    pub(super) fn task_bytes(&self, req: &Request, line_len: usize) -> usize {
        match (OPS[req.op].exec, &req.args) {
            (Exec::Users, _) => self.books.users.rendered_size() + TASK_BYTES,
            (Exec::List(_), &Args::Values { count, .. }) => {
                if self.tasks.may_inline(ops::cost(OPS[req.op].args, count, 0)) {
                    0
                } else {
                    line_len + 8 * count + TASK_BYTES
                }
            }
            (Exec::Pi, &Args::Pi { chunks, .. }) => {
                TASK_BYTES + 32 * chunks.map_or(PI_MAX_CHUNKS as usize, |c| c as usize)
            }
            _ => 0,
        }
    }

    /// Mutual TLS: the certificate is the identity. A request without
    /// `@user` is its name's; one naming someone else is `denied`, unless
    /// the listener allows overrides.
    fn identify(&self, origin: &Origin, parsed: Result<Request, Rejection>) -> Result<Request, Rejection> {
        let Some((cert, may_override)) = origin.cert_user else {
            return parsed;
        };
        match parsed {
            Ok(mut req) => match req.user {
                None => {
                    req.user = Some(cert);
                    Ok(req)
                }
                Some(u) if u == cert || may_override => Ok(req),
                Some(u) => {
                    let m = format!("user {u} is not the client certificate's ({cert})");
                    Err(Rejection::of(&Ok(req), Failure::new(Code::Denied, m)))
                }
            },
            Err(mut rej) => {
                rej.user.get_or_insert(cert);
                Err(rej)
            }
        }
    }

    /// Answers a refused request at once and books it.
    pub(super) fn refuse(&mut self, origin: &Origin, rej: &Rejection) {
        self.answer_now(origin.place, rej.format, rej.id.as_ref(), Err(&rej.failure));
        let asked = Asked {
            proto: origin.proto,
            peer: Rc::clone(&origin.peer),
            user: rej.user,
            id: rej.id,
            op: rej.op,
            count: 0,
            values: Vec::new(),
            quiet: false,
            counted: false,
        };
        self.books
            .record(&asked, Err(&rej.failure), Duration::ZERO, Duration::ZERO);
    }

    /// Queues a task whose reply goes to `place`, reserving its slot.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn enqueue(
        &mut self,
        place: Place,
        format: Format,
        asked: Asked,
        work: TaskWork,
        cost: u64,
        held: usize,
        now: Instant,
    ) {
        let sink = match place {
            Place::Conn { key, id } => {
                let Some(c) = self.conns.get_mut(key).filter(|c| c.id() == id) else {
                    return;
                };
                let seq = c.session.reserve(&mut self.buffers, held);
                self.sync_conn(key);
                Sink::Conn { key, id, seq }
            }
            Place::Udp { batch, id, line } => {
                if !self.udp_may_queue() {
                    // A datagram cannot be held back: it is refused.
                    let busy = queue_full();
                    self.answer_now(place, format, asked.id.as_ref(), Err(&busy));
                    self.books
                        .record(&asked, Err(&busy), Duration::ZERO, Duration::ZERO);
                    return;
                }
                self.udp_hold(batch, id, held);
                Sink::Udp { batch, id, line }
            }
        };
        let answer = Answer {
            sink,
            format,
            id: asked.id,
            held,
            asked,
        };
        if let Err(answer) = self.tasks.submit(answer, work, cost, now) {
            let busy = queue_full();
            self.finish(
                Finished {
                    reply: answer,
                    result: Err(busy),
                    arrived: now,
                    started: now,
                },
                now,
            );
        }
    }

    /// Answers a task: books it, writes its reply into its place.
    pub(super) fn finish(&mut self, f: Finished<Answer>, now: Instant) {
        let a = f.reply;
        let mut bytes = Vec::new();
        let result = f.result.as_ref();
        reply::write(
            &mut bytes,
            a.format,
            a.id.as_ref(),
            result,
            now.duration_since(f.arrived),
        );
        self.books.record(
            &a.asked,
            result,
            f.started.duration_since(f.arrived),
            now.duration_since(f.started),
        );
        match a.sink {
            Sink::Conn { key, id, seq } => {
                if let Some(c) = self.conns.get_mut(key).filter(|c| c.id() == id) {
                    c.session.fill(seq, a.held, bytes);
                    self.ready.write.push(key);
                    self.sync_conn(key);
                }
            }
            Sink::Udp { batch, id, line } => self.udp_fill(batch, id, line, bytes, a.held),
        }
    }

    /// Writes an answer the loop has now into its place.
    pub(super) fn answer_now(
        &mut self,
        place: Place,
        format: Format,
        id: Option<&Id>,
        result: Result<&Output, &Failure>,
    ) {
        match place {
            Place::Conn { key, id: conn } => {
                let Some(c) = self.conns.get_mut(key).filter(|c| c.id() == conn) else {
                    return;
                };
                c.session.reply_now(&mut self.buffers, |out| {
                    reply::write(out, format, id, result, Duration::ZERO)
                });
                self.ready.write.push(key);
                self.sync_conn(key);
            }
            Place::Udp { batch, id: b, line } => {
                // In order, the reply is written straight into the
                // listener's queue of datagrams.
                let write = |out: &mut Vec<u8>| reply::write(out, format, id, result, Duration::ZERO);
                self.udp_fill(batch, b, line, write, 0);
            }
        }
    }

    /// What the loop answers from its own state.
    fn loop_op(&self, op: LoopOp) -> Output {
        match op {
            LoopOp::Ping => Output::Word("pong"),
            LoopOp::Quit => Output::Word("bye"),
            LoopOp::Help => Output::Help(
                OPS.iter()
                    .enumerate()
                    .filter(|(id, _)| self.cfg.op_enabled(*id))
                    .map(|(_, op)| op.name)
                    .collect(),
            ),
            LoopOp::Info => Output::Info(self.info()),
        }
    }

    fn info(&self) -> Vec<(String, InfoValue)> {
        let loaded = humantime::format_rfc3339_seconds(self.life.config_loaded_at).to_string();
        let int = |n: usize| InfoValue::Int(n as u64);
        let c = &self.books.counters;
        let mut v = vec![
            (
                "version".to_string(),
                InfoValue::Text(env!("CARGO_PKG_VERSION").to_string()),
            ),
            (
                "uptime_s".to_string(),
                InfoValue::Int(self.life.started.elapsed().as_secs()),
            ),
            ("workers".to_string(), int(self.pool.size())),
            ("connections".to_string(), int(self.conns.len())),
            ("incoming".to_string(), int(self.tasks.incoming_len())),
            ("ready".to_string(), int(self.tasks.ready_len())),
            ("running".to_string(), int(self.tasks.running())),
            ("done".to_string(), InfoValue::Int(c.done)),
            ("failed".to_string(), InfoValue::Int(c.failed)),
            ("config_loaded_at".to_string(), InfoValue::Text(loaded)),
            (
                "last_reload_ok".to_string(),
                InfoValue::Bool(self.life.last_reload_ok),
            ),
            (
                "results_log_write_errors".to_string(),
                InfoValue::Int(self.books.files.write_errors()),
            ),
            (
                "udp_lines_dropped".to_string(),
                InfoValue::Int(c.udp_lines_dropped),
            ),
            (
                "udp_replies_dropped".to_string(),
                InfoValue::Int(c.udp_replies_dropped),
            ),
            ("tls_failures".to_string(), InfoValue::Int(c.tls_failures)),
            ("buffered_bytes".to_string(), int(self.budget.held())),
        ];
        for code in Code::ALL {
            v.push((
                format!("rejected_{}", code.as_str().replace('-', "_")),
                InfoValue::Int(c.rejected[code as usize]),
            ));
        }
        v
    }
}
