//! A task: one accepted request on its way through the scheduler and the
//! pool, with the address of the reply it owes.

use std::rc::Rc;
use std::time::Instant;

use crate::config::Proto;
use crate::ops::OpId;
use crate::protocol::{Id, RawValues};

/// Where a task's reply goes. Both variants carry the unique id of their
/// sink, checked on delivery, so a reply can never reach another client
/// that happens to reuse a slot.
#[derive(Debug, Clone, Copy)]
pub enum Origin {
    /// Reply place `seq` of stream connection `key` whose id is `conn`.
    Conn { key: usize, conn: u64, seq: u64 },
    /// Line `line` of the UDP datagram batch `key` whose id is `batch`.
    Udp { key: usize, batch: u64, line: usize },
}

#[derive(Debug)]
pub enum Work {
    /// Values not parsed yet; taken when the task is handed to a worker.
    List {
        raw: Option<RawValues>,
    },
    Pi(PiWork),
}

#[derive(Debug)]
pub struct PiWork {
    pub samples: u64,
    pub chunks: u32,
    /// Chunks handed to workers so far.
    pub issued: u32,
    /// Chunks finished so far.
    pub finished: u32,
    pub hits: u64,
    /// The first chunk failure, answered once all chunks are back.
    pub error: Option<(crate::protocol::Code, String)>,
}

#[derive(Debug)]
pub struct Task {
    /// Unique for the daemon's lifetime; seeds pi's chunks.
    pub serial: u64,
    pub origin: Origin,
    pub proto: Proto,
    pub peer: Rc<str>,
    pub id: Option<Id>,
    pub user: Option<String>,
    pub op: OpId,
    pub json: bool,
    pub count: usize,
    /// The first values, for the results log.
    pub values: Vec<u8>,
    pub work: Work,
    /// Set for HTTP requests: how the result becomes a response.
    pub http: Option<super::http_conn::HttpReply>,
    pub arrived: Instant,
    pub started: Option<Instant>,
}
