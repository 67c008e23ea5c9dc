//! Tasks between the loop, the scheduler and the pool: queueing a parsed
//! request, the short-term scheduler handing work to idle workers, and
//! turning results into replies in the place their request reserved.

use std::rc::Rc;
use std::time::Instant;

use super::Server;
use super::http_conn::{HttpReply, task_response};
use super::record::Answered;
use super::task::{Origin, PiWork, Task, Work};
use crate::config::Proto;
use crate::ops::{self, Exec, OPS, Output};
use crate::pool::{self, Job, JobResult};
use crate::protocol::reply::{write_err, write_ok};
use crate::protocol::{Args, Code, Request};

/// Largest cost (values) computed inline on the loop: parsing and reducing
/// this many numbers takes about as long as handing a job to a worker
/// thread and getting the result back.
const INLINE_MAX_COST: u64 = 64;

impl Server {
    pub(super) fn enqueue(
        &mut self,
        req: Request,
        origin: Origin,
        proto: Proto,
        peer: Rc<str>,
        http: Option<HttpReply>,
        now: Instant,
    ) {
        let spec = &OPS[req.op];
        let mut values = Vec::new();
        let (work, count, samples) = match req.args {
            Args::Values { raw, count } => {
                values = self.values_to_log(&raw);
                (Work::List { raw: Some(raw) }, count, 0)
            }
            Args::Pi { samples, chunks } => {
                let chunks = chunks.unwrap_or_else(|| {
                    u32::try_from((self.workers as u64).min(samples).min(ops::PI_MAX_CHUNKS)).unwrap_or(1)
                });
                let pi = PiWork {
                    samples,
                    chunks,
                    issued: 0,
                    finished: 0,
                    hits: 0,
                    error: None,
                };
                (Work::Pi(pi), 0, samples)
            }
            Args::None => (Work::List { raw: None }, 0, 0),
        };
        let cost = ops::cost(spec.args, count, samples);
        let serial = self.next_serial;
        self.next_serial += 1;
        let task = Task {
            serial,
            origin,
            proto,
            peer,
            id: req.id,
            user: req.user,
            op: req.op,
            json: req.json,
            count,
            values,
            work,
            http,
            arrived: now,
            started: None,
        };
        if let Some(exec) = self.inline_candidate(&task, cost)
            && let Work::List { raw: Some(raw) } = &task.work
        {
            let result = pool::compute_list_guarded(exec, raw);
            let mut task = task;
            task.started = Some(now);
            self.finish(task, result, Instant::now());
            return;
        }
        let tk = self.tasks.insert(task);
        if let Err(tk) = self.sched.push(tk, cost, now) {
            let task = self.tasks.remove(tk);
            self.finish(
                task,
                Err((Code::Busy, "the incoming queue is full; retry later".into())),
                now,
            );
        }
    }

    /// A task computed on the loop itself rather than handed to a worker:
    /// a list task smaller than the cost of a thread hand-off, and only
    /// while nothing waits in either queue, so it never overtakes a queued
    /// task (SPEC section 3).
    fn inline_candidate(&self, task: &Task, cost: u64) -> Option<pool::ListFn> {
        let Exec::List(exec) = OPS[task.op].exec else {
            return None;
        };
        self.may_inline(cost).then_some(exec)
    }

    /// Computes a tiny list request on the loop, when `may_inline` allows,
    /// and records it; the caller writes the reply. None: queue it instead.
    pub(super) fn run_inline(
        &mut self,
        proto: Proto,
        peer: &str,
        req: &Request,
        exec: pool::ListFn,
    ) -> Option<Result<Output, (Code, String)>> {
        let Args::Values { raw, count } = &req.args else {
            return None;
        };
        if !self.may_inline(*count as u64) {
            return None;
        }
        let started = Instant::now();
        let result = pool::compute_list_guarded(exec, raw);
        let values = self.values_to_log(raw);
        self.record(Answered {
            proto,
            peer,
            user: req.user.as_deref(),
            id: req.id.as_ref(),
            op: Some(req.op),
            count: *count,
            values: &values,
            outcome: result.as_ref().map_err(|(c, m)| (*c, m.as_str())),
            queue: std::time::Duration::ZERO,
            run: started.elapsed(),
        });
        Some(result)
    }

    /// Whether a list task of this cost may be computed on the loop now.
    pub(super) fn may_inline(&self, cost: u64) -> bool {
        let idle_queues = self.sched.incoming_len() == 0 && self.sched.ready_len() == 0;
        cost <= INLINE_MAX_COST && idle_queues && self.chunking.is_empty()
    }

    /// The short-term scheduler: ready tasks (and the chunks of pi tasks)
    /// to idle workers, admitting from the incoming queue as room frees.
    pub(super) fn pump(&mut self, now: Instant) {
        self.sched.admit(now);
        while self.pool.has_idle() {
            if let Some(&tk) = self.chunking.front() {
                self.issue_chunk(tk);
                continue;
            }
            let Some(tk) = self.sched.pop_ready() else { break };
            self.sched.admit(now);
            self.start(tk, now);
        }
    }

    pub(super) fn start(&mut self, tk: usize, now: Instant) {
        let Some(task) = self.tasks.get_mut(tk) else {
            return;
        };
        task.started = Some(now);
        self.running += 1;
        match &mut task.work {
            Work::Pi(_) => {
                self.chunking.push_back(tk);
                self.issue_chunk(tk);
            }
            Work::List { raw } => {
                let Exec::List(exec) = OPS[task.op].exec else {
                    return self.fail_task(tk, now);
                };
                let Some(raw) = raw.take() else {
                    return self.fail_task(tk, now);
                };
                if self.pool.submit(Job::List { task: tk, exec, raw }).is_err() {
                    self.fail_task(tk, now);
                }
            }
        }
    }

    pub(super) fn fail_task(&mut self, tk: usize, now: Instant) {
        log::error!("task {tk} could not be handed to a worker");
        self.running = self.running.saturating_sub(1);
        let task = self.tasks.remove(tk);
        self.finish(task, Err((Code::Internal, "internal error, logged".into())), now);
    }

    pub(super) fn issue_chunk(&mut self, tk: usize) {
        let Some(task) = self.tasks.get_mut(tk) else {
            self.chunking.pop_front();
            return;
        };
        let Work::Pi(pi) = &mut task.work else {
            self.chunking.pop_front();
            return;
        };
        let index = pi.issued;
        let samples = ops::pi::chunk_samples(pi.samples, pi.chunks, index);
        let seed = ops::pi::chunk_seed(self.process_seed, task.serial, index);
        if self
            .pool
            .submit(Job::PiChunk {
                task: tk,
                samples,
                seed,
            })
            .is_ok()
        {
            pi.issued += 1;
            if pi.issued >= pi.chunks {
                self.chunking.pop_front();
            }
        }
    }

    pub(super) fn collect_results(&mut self, now: Instant) {
        self.pool.arm_wake();
        while let Some(done) = self.pool.try_recv() {
            let tk = done.task;
            let Some(task) = self.tasks.get_mut(tk) else {
                continue;
            };
            let result = match (done.result, &mut task.work) {
                (JobResult::List(r), _) => r,
                (JobResult::PiChunk(r), Work::Pi(pi)) => {
                    pi.finished += 1;
                    match r {
                        Ok(h) => pi.hits += h,
                        Err(e) => {
                            pi.error.get_or_insert(e);
                        }
                    }
                    if pi.finished < pi.chunks {
                        continue;
                    }
                    match pi.error.take() {
                        Some(e) => Err(e),
                        None => Ok(Output::Pi {
                            pi: ops::pi::estimate(pi.hits, pi.samples),
                            samples: pi.samples,
                            chunks: pi.chunks,
                        }),
                    }
                }
                (JobResult::PiChunk(_), Work::List { .. }) => {
                    Err((Code::Internal, "internal error, logged".into()))
                }
            };
            self.running = self.running.saturating_sub(1);
            let task = self.tasks.remove(tk);
            self.finish(task, result, now);
        }
    }

    /// Answers a task: counts it, writes its reply into its place.
    pub(super) fn finish(&mut self, task: Task, result: Result<Output, (Code, String)>, now: Instant) {
        let mut reply = Vec::new();
        match (&result, task.http) {
            (_, Some(http)) => {
                reply = task_response(http, task.id.as_ref(), &result, now.duration_since(task.arrived))
            }
            (Ok(out), None) => write_ok(&mut reply, task.id.as_ref(), task.json, out),
            (Err((code, msg)), None) => write_err(&mut reply, task.id.as_ref(), task.json, *code, msg),
        }
        let started = task.started.unwrap_or(now);
        self.record(Answered {
            proto: task.proto,
            peer: &task.peer,
            user: task.user.as_deref(),
            id: task.id.as_ref(),
            op: Some(task.op),
            count: task.count,
            values: &task.values,
            outcome: result.as_ref().map_err(|(c, m)| (*c, m.as_str())),
            queue: started.duration_since(task.arrived),
            run: now.duration_since(started),
        });
        match task.origin {
            Origin::Conn { key, conn, seq } => {
                if let Some(c) = self.conns.get_mut(key).filter(|c| c.id == conn) {
                    c.fill(seq, reply);
                    self.dirty.push(key);
                    self.sync_buffered(key);
                }
            }
            Origin::Udp { key, batch, line } => self.udp_fill(key, batch, line, reply),
        }
    }
}
