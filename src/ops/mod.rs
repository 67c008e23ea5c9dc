//! The operation table: every operation taskd knows, as one self-contained
//! entry (name, arguments, cost, computation, limits, `[ops.NAME]` table).
//!
//! The protocol parser, the scheduler's cost model, `help`, the config
//! loader and `--check-config` all read [`OPS`]; adding an operation means
//! adding one entry here (and its computation), nothing else.

pub mod list;
pub mod pi;

use std::panic::{AssertUnwindSafe, catch_unwind};

use crate::numbers::{Num, ValueErrorKind, Values, parse_json_values, parse_text_list};
use crate::protocol::{Code, Failure, Syntax};
use crate::spare;

/// Index of an operation in [`OPS`].
pub type OpId = usize;

/// A per-operation integer limit, configured as `[ops.NAME] key = N`.
pub struct LimitSpec {
    pub key: &'static str,
    pub default: u64,
    pub min: u64,
    pub max: u64,
    pub doc: &'static str,
}

/// A list operation's computation, once its values are parsed.
pub type ListFn = fn(&Values) -> Result<Output, String>;

/// What arguments an operation takes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgKind {
    /// No arguments at all (`ping 1` is a parse error).
    None,
    /// A list of numbers, parsed by the worker.
    Values,
    /// `SAMPLES [CHUNKS]`, parsed by the event loop.
    Pi,
}

/// Operations the event loop answers from its own state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopOp {
    Ping,
    Info,
    Help,
    Quit,
}

/// How an operation is computed.
#[derive(Clone, Copy)]
pub enum Exec {
    /// A list computation run on a worker once the values are parsed.
    List(ListFn),
    /// The Monte Carlo estimate of π, split into chunks run in parallel.
    Pi,
    /// The user counts, rendered on a worker from a snapshot: the table
    /// can hold `max_users` names, too many to write on the loop.
    Users,
    /// Answered by the event loop itself; never queued.
    Loop(LoopOp),
}

pub struct OpSpec {
    pub name: &'static str,
    /// One line for `help` and the man page.
    pub summary: &'static str,
    pub args: ArgKind,
    /// Refused over UDP with `ERR tcp-only` (replies too large or
    /// connection-bound).
    pub stream_only: bool,
    pub exec: Exec,
    pub limits: &'static [LimitSpec],
}

/// A successful result, written as text or JSON by `protocol::reply`.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Num(Num),
    Stats(list::Stats),
    Pi {
        pi: f64,
        samples: u64,
        chunks: u32,
    },
    Word(&'static str),
    /// `users`: the table, rendered.
    Users(UsersTable),
    /// `info`: key/value pairs in a fixed order.
    Info(Vec<(String, InfoValue)>),
    /// `help`: the operation names.
    Help(Vec<&'static str>),
}

/// The `users` table rendered as its JSON array (the same text in text
/// and JSON replies), and how many names it holds (what the results log
/// keeps of it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsersTable {
    pub json: Vec<u8>,
    pub names: usize,
}

impl UsersTable {
    /// Sorts (name, count) pairs by the names' bytes and renders them.
    pub fn render<S: AsRef<str>>(mut users: Vec<(S, u64)>) -> UsersTable {
        users.sort_unstable_by(|a, b| a.0.as_ref().as_bytes().cmp(b.0.as_ref().as_bytes()));
        let mut json = Vec::with_capacity(2 + users.len() * 48);
        crate::protocol::reply::write_users_json(&mut json, users.iter().map(|(n, c)| (n.as_ref(), *c)));
        UsersTable {
            json,
            names: users.len(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum InfoValue {
    Int(u64),
    Text(String),
    Bool(bool),
}

const PI_LIMITS: &[LimitSpec] = &[
    LimitSpec {
        key: "max_samples",
        default: 10_000_000_000,
        min: 1,
        max: u64::MAX,
        doc: "largest SAMPLES accepted over TCP, TLS and HTTP",
    },
    LimitSpec {
        key: "udp_max_samples",
        default: 10_000_000,
        min: 1,
        max: u64::MAX,
        doc: "largest SAMPLES accepted over UDP",
    },
];

/// Largest CHUNKS a pi request may ask for.
pub const PI_MAX_CHUNKS: u64 = 1024;

macro_rules! list_op {
    ($name:literal, $summary:literal, $f:expr) => {
        OpSpec {
            name: $name,
            summary: $summary,
            args: ArgKind::Values,
            stream_only: false,
            exec: Exec::List($f),
            limits: &[],
        }
    };
}

macro_rules! loop_op {
    ($name:literal, $summary:literal, $op:expr, $stream_only:expr) => {
        OpSpec {
            name: $name,
            summary: $summary,
            args: ArgKind::None,
            stream_only: $stream_only,
            exec: Exec::Loop($op),
            limits: &[],
        }
    };
}

pub static OPS: &[OpSpec] = &[
    loop_op!("ping", "answers pong", LoopOp::Ping, false),
    list_op!("max", "largest value", |v| list::max(v).map(Output::Num)),
    list_op!("min", "smallest value", |v| list::min(v).map(Output::Num)),
    list_op!("sum", "sum of the values", |v| list::sum(v).map(Output::Num)),
    list_op!("mean", "arithmetic mean", |v| list::mean(v).map(Output::Num)),
    list_op!("median", "middle value", |v| list::median(v).map(Output::Num)),
    list_op!("stats", "count, min, max, mean and median", |v| {
        list::stats(v).map(Output::Stats)
    }),
    OpSpec {
        name: "pi",
        summary: "Monte Carlo estimate of pi: pi SAMPLES [CHUNKS]",
        args: ArgKind::Pi,
        stream_only: false,
        exec: Exec::Pi,
        limits: PI_LIMITS,
    },
    OpSpec {
        name: "users",
        summary: "request counts per user",
        args: ArgKind::None,
        stream_only: true,
        exec: Exec::Users,
        limits: &[],
    },
    loop_op!("info", "daemon figures", LoopOp::Info, true),
    loop_op!("help", "this list", LoopOp::Help, true),
    loop_op!("quit", "close the connection", LoopOp::Quit, true),
];

/// Finds an operation by name, case-insensitively.
pub fn lookup(name: &str) -> Option<OpId> {
    OPS.iter().position(|op| op.name.eq_ignore_ascii_case(name))
}

/// Finds an operation by the bytes of its name, case-insensitively.
pub fn lookup_bytes(name: &[u8]) -> Option<OpId> {
    OPS.iter()
        .position(|op| op.name.as_bytes().eq_ignore_ascii_case(name))
}

/// The scheduler's cost of a task: `max(1, values)` for lists,
/// `max(1, ceil(samples / 1000))` for pi, 1 otherwise.
pub fn cost(args: ArgKind, value_count: usize, samples: u64) -> u64 {
    match args {
        ArgKind::Values => (value_count as u64).max(1),
        ArgKind::Pi => samples.div_ceil(1000).max(1),
        ArgKind::None => 1,
    }
}

/// Parses a list request's values and runs its operation: the whole work
/// of a list task, on a worker or (for tiny tasks) on the loop. A panic
/// (a bug) costs that one request, never the thread that ran it.
pub fn compute_list(exec: ListFn, text: &[u8], syntax: Syntax) -> Result<Output, Failure> {
    let run = || {
        let values = match syntax {
            Syntax::Text => parse_text_list(text),
            Syntax::JsonArray => parse_json_values(text),
        };
        match values {
            Err(e) => {
                let code = match e.kind {
                    ValueErrorKind::Parse => Code::Parse,
                    ValueErrorKind::Range => Code::Range,
                };
                Err(Failure::new(code, e.message))
            }
            Ok(values) => {
                let out = exec(&values).map_err(|m| Failure::new(Code::Range, m));
                match values {
                    Values::Ints(v) => spare::give_ints(v),
                    Values::Floats(v) => spare::give_floats(v),
                }
                out
            }
        }
    };
    catch_unwind(AssertUnwindSafe(run)).unwrap_or_else(|_| {
        log::error!("an operation panicked");
        Err(Failure::internal())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_is_case_insensitive() {
        assert_eq!(lookup("MAX"), lookup("max"));
        assert!(lookup("max").is_some());
        assert_eq!(lookup("nosuchop"), None);
        assert_eq!(lookup_bytes(b"PiNg"), Some(0));
    }

    #[test]
    fn names_are_unique_and_lowercase() {
        for (i, a) in OPS.iter().enumerate() {
            assert_eq!(a.name, a.name.to_ascii_lowercase());
            for b in &OPS[i + 1..] {
                assert_ne!(a.name, b.name);
            }
        }
    }

    #[test]
    fn cost_follows_the_spec() {
        assert_eq!(cost(ArgKind::Values, 0, 0), 1);
        assert_eq!(cost(ArgKind::Values, 37, 0), 37);
        assert_eq!(cost(ArgKind::Pi, 0, 1), 1);
        assert_eq!(cost(ArgKind::Pi, 0, 1001), 2);
        assert_eq!(cost(ArgKind::None, 5, 5), 1);
    }
}
