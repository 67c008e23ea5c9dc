//! The short-term scheduler: tasks on their way from the event loop
//! through the two-level scheduler (`crate::sched`) to the worker pool and
//! back. It owns the queued and running tasks and decides which job an
//! idle worker gets next; it does no I/O and takes the clock as an
//! argument, like `sched`.
//!
//! No job holds a worker for long: a π chunk runs as slices of about
//! [`SLICE_TIME`] (their size follows the measured speed of the kernel),
//! and after each slice its next one goes back into the incoming queue
//! like any task, so a small request never waits behind 10^10 samples.
//! Slices are cut at multiples of `PiStream::GRANULE`, so where they are
//! cut never changes a result. A task may instead be computed on the loop itself
//! ([`Tasks::may_inline`]) only while nothing waits in either queue.
//!
//! Tasks are generic over `R`, what the loop needs to answer one (its
//! reply's address and what its log line keeps); this module never looks
//! inside it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use slab::Slab;

use crate::ops::pi::{PiStream, chunk_samples, chunk_seed, estimate};
use crate::ops::{ListFn, Output};
use crate::pool::{Done, Job, Outcome, Ticket, Work};
use crate::protocol::{Code, Failure, Payload};
use crate::sched::{Policy, Scheduler};

/// The time one π job should take.
pub const SLICE_TIME: Duration = Duration::from_millis(10);
/// Bounds of a π slice, in samples.
const MIN_SLICE: u64 = 1 << 16;
const MAX_SLICE: u64 = 1 << 27;
/// The kernel's speed assumed until one slice has been timed.
const FIRST_RATE: f64 = 5e8;

/// Largest cost (values) computed inline on the loop: parsing and reducing
/// this many numbers takes about as long as handing a job to a worker
/// thread and getting the result back.
pub const INLINE_MAX_COST: u64 = 64;

/// A snapshot of the user counts, in no order (the worker sorts it).
pub type UsersSnapshot = Vec<(Arc<str>, u64)>;

/// What a task computes.
pub enum TaskWork {
    /// Values not parsed yet; handed to the worker that runs the task.
    List {
        exec: ListFn,
        payload: Option<Payload>,
    },
    Pi {
        samples: u64,
        chunks: u32,
    },
    /// The `users` table, snapshotted when a worker is ready to render it.
    Users,
}

/// One π chunk's progress.
struct Chunk {
    /// None before the first slice and while a slice runs.
    stream: Option<Box<PiStream>>,
    left: u64,
    /// Samples of the slice running now.
    running: u64,
}

enum State {
    List {
        exec: ListFn,
        payload: Option<Payload>,
    },
    Pi {
        samples: u64,
        chunks: Vec<Chunk>,
        /// Chunks not finished yet.
        open: u32,
        hits: u64,
        failed: bool,
    },
    Users,
}

struct Task<R> {
    serial: u64,
    reply: R,
    state: State,
    arrived: Instant,
    started: Option<Instant>,
}

/// What the scheduler queues: a task not started yet, or the next slice
/// of one of its π chunks.
#[derive(Debug, Clone, Copy)]
enum Unit {
    Task { key: usize, serial: u64 },
    Slice { key: usize, serial: u64, chunk: u32 },
}

/// A task answered: its result and timings.
pub struct Finished<R> {
    pub reply: R,
    pub result: Result<Output, Failure>,
    pub arrived: Instant,
    /// When a worker first took it (or when it was abandoned unstarted).
    pub started: Instant,
}

pub struct Tasks<R> {
    sched: Scheduler<Unit>,
    tasks: Slab<Task<R>>,
    next_serial: u64,
    /// Seeds every π chunk, with the task's serial and the chunk's index.
    process_seed: u64,
    /// Tasks started and not finished.
    running: usize,
    /// Samples per second of the π kernel, as the last slices ran.
    pi_rate: f64,
}

impl<R> Tasks<R> {
    pub fn new(
        policy: Policy,
        incoming_capacity: usize,
        ready_capacity: usize,
        process_seed: u64,
    ) -> Tasks<R> {
        Tasks {
            sched: Scheduler::new(policy, incoming_capacity, ready_capacity),
            tasks: Slab::new(),
            next_serial: 1,
            process_seed,
            running: 0,
            pi_rate: FIRST_RATE,
        }
    }

    pub fn reconfigure(&mut self, policy: Policy, incoming_capacity: usize, ready_capacity: usize) {
        self.sched.reconfigure(policy, incoming_capacity, ready_capacity);
    }

    pub fn incoming_len(&self) -> usize {
        self.sched.incoming_len()
    }

    pub fn ready_len(&self) -> usize {
        self.sched.ready_len()
    }

    pub fn running(&self) -> usize {
        self.running
    }

    /// Tasks queued or running.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Whether a new task would be refused (`busy` for UDP; backpressure
    /// for connections).
    pub fn is_full(&self) -> bool {
        self.sched.incoming_is_full()
    }

    /// Whether a task of this cost may be computed on the loop now: it is
    /// tiny, and nothing waits in either queue, so it overtakes nothing.
    pub fn may_inline(&self, cost: u64) -> bool {
        cost <= INLINE_MAX_COST && self.sched.incoming_len() == 0 && self.sched.ready_len() == 0
    }

    /// Queues a task. Gives `reply` back when the incoming queue is full.
    pub fn submit(&mut self, reply: R, work: TaskWork, cost: u64, now: Instant) -> Result<(), R> {
        if self.sched.incoming_is_full() {
            return Err(reply);
        }
        let serial = self.next_serial;
        self.next_serial += 1;
        let state = match work {
            TaskWork::List { exec, payload } => State::List { exec, payload },
            TaskWork::Pi { samples, chunks } => State::Pi {
                samples,
                chunks: (0..chunks)
                    .map(|i| Chunk {
                        stream: None,
                        left: chunk_samples(samples, chunks, i),
                        running: 0,
                    })
                    .collect(),
                open: chunks,
                hits: 0,
                failed: false,
            },
            TaskWork::Users => State::Users,
        };
        let key = self.tasks.insert(Task {
            serial,
            reply,
            state,
            arrived: now,
            started: None,
        });
        // The capacity was checked above, so the push succeeds.
        if let Err(unit) = self.sched.push(Unit::Task { key, serial }, cost, now) {
            self.sched.requeue(unit, cost, now);
        }
        Ok(())
    }

    /// The next job for an idle worker, in the scheduler's order; None
    /// when nothing is ready. `users` snapshots the user counts for a
    /// `users` task that is about to run.
    pub fn next_job(&mut self, now: Instant, users: &mut dyn FnMut() -> UsersSnapshot) -> Option<Job> {
        let size = self.slice_samples();
        loop {
            self.sched.admit(now);
            let unit = self.sched.pop_ready()?;
            match unit {
                Unit::Task { key, serial } => {
                    let Some(task) = self.tasks.get_mut(key).filter(|t| t.serial == serial) else {
                        continue;
                    };
                    task.started = Some(now);
                    self.running += 1;
                    let ticket = Ticket {
                        task: key,
                        serial,
                        chunk: 0,
                    };
                    match &mut task.state {
                        State::List { exec, payload } => {
                            let Some(payload) = payload.take() else { continue };
                            let work = Work::List { exec: *exec, payload };
                            return Some(Job { ticket, work });
                        }
                        State::Users => {
                            return Some(Job {
                                ticket,
                                work: Work::Users { snapshot: users() },
                            });
                        }
                        State::Pi { chunks, .. } => {
                            // Every chunk's first slice is queued like any
                            // task; they run in parallel as workers free up.
                            for chunk in 0..chunks.len() as u32 {
                                let unit = Unit::Slice { key, serial, chunk };
                                self.sched
                                    .requeue(unit, slice_cost(chunks[chunk as usize].left, size), now);
                            }
                        }
                    }
                }
                Unit::Slice { key, serial, chunk } => {
                    let Some(task) = self.tasks.get_mut(key).filter(|t| t.serial == serial) else {
                        continue;
                    };
                    let State::Pi { chunks, .. } = &mut task.state else {
                        continue;
                    };
                    let Some(c) = chunks.get_mut(chunk as usize) else {
                        continue;
                    };
                    let stream = c.stream.take().unwrap_or_else(|| {
                        Box::new(PiStream::new(chunk_seed(self.process_seed, serial, chunk)))
                    });
                    let samples = c.left.min(size);
                    c.running = samples;
                    let ticket = Ticket {
                        task: key,
                        serial,
                        chunk,
                    };
                    return Some(Job {
                        ticket,
                        work: Work::PiSlice { stream, samples },
                    });
                }
            }
        }
    }

    /// Samples of the next π slice: about [`SLICE_TIME`] of the kernel, a
    /// multiple of its granule.
    fn slice_samples(&self) -> u64 {
        let samples = (self.pi_rate * SLICE_TIME.as_secs_f64()) as u64;
        samples.clamp(MIN_SLICE, MAX_SLICE) / PiStream::GRANULE * PiStream::GRANULE
    }

    /// A job the pool could not take (its worker died): the task fails.
    pub fn refused(&mut self, job: Job, now: Instant) -> Option<Finished<R>> {
        log::error!("task {} could not be handed to a worker", job.ticket.task);
        self.finish(job.ticket, Err(Failure::internal()), now)
    }

    /// Takes a worker's result. Returns the task when it is complete.
    pub fn complete(&mut self, done: Done, now: Instant) -> Option<Finished<R>> {
        let t = done.ticket;
        let size = self.slice_samples();
        let task = self
            .tasks
            .get_mut(t.task)
            .filter(|task| task.serial == t.serial)?;
        let result = match (done.outcome, &mut task.state) {
            (Outcome::List(r), _) => r,
            (Outcome::Users(table), _) => Ok(Output::Users(table)),
            (
                outcome,
                State::Pi {
                    samples,
                    chunks,
                    open,
                    hits,
                    failed,
                },
            ) => {
                let c = chunks.get_mut(t.chunk as usize)?;
                match outcome {
                    Outcome::PiSlice { stream, hits: h } => {
                        let ran = c.running;
                        c.left -= ran;
                        *hits += h;
                        // The kernel's speed, for the size of later slices
                        // (slices too short to time tell nothing).
                        if done.run >= Duration::from_micros(500) {
                            let rate = ran as f64 / done.run.as_secs_f64();
                            self.pi_rate = (self.pi_rate + rate) / 2.0;
                        }
                        if c.left > 0 && !*failed {
                            let cost = slice_cost(c.left, size);
                            c.stream = Some(stream);
                            let unit = Unit::Slice {
                                key: t.task,
                                serial: t.serial,
                                chunk: t.chunk,
                            };
                            self.sched.requeue(unit, cost, now);
                            return None;
                        }
                    }
                    _ => *failed = true,
                }
                *open -= 1;
                if *open > 0 {
                    return None;
                }
                if *failed {
                    Err(Failure::internal())
                } else {
                    Ok(Output::Pi {
                        pi: estimate(*hits, *samples),
                        samples: *samples,
                        chunks: chunks.len() as u32,
                    })
                }
            }
            (Outcome::Panicked, _) => Err(Failure::internal()),
            (Outcome::PiSlice { .. }, _) => Err(Failure::internal()),
        };
        self.finish(t, result, now)
    }

    fn finish(&mut self, t: Ticket, result: Result<Output, Failure>, now: Instant) -> Option<Finished<R>> {
        self.tasks.get(t.task).filter(|task| task.serial == t.serial)?;
        let task = self.tasks.remove(t.task);
        if task.started.is_some() {
            self.running = self.running.saturating_sub(1);
        }
        Some(Finished {
            reply: task.reply,
            result,
            arrived: task.arrived,
            started: task.started.unwrap_or(now),
        })
    }

    /// Shutdown: every task still queued or running, answered with
    /// `failure`. Results that workers deliver later find no task and are
    /// dropped.
    pub fn abandon_all(&mut self, failure: &Failure, now: Instant) -> Vec<Finished<R>> {
        self.sched.drain_all();
        self.running = 0;
        self.tasks
            .drain()
            .map(|task| Finished {
                reply: task.reply,
                result: Err(failure.clone()),
                arrived: task.arrived,
                started: task.started.unwrap_or(now),
            })
            .collect()
    }
}

/// The scheduler's cost of a π chunk's next slice (taskd(8): samples/1000).
fn slice_cost(left: u64, size: u64) -> u64 {
    left.min(size).div_ceil(1000).max(1)
}

/// `busy` for a task the incoming queue cannot take.
pub fn queue_full() -> Failure {
    Failure::new(Code::Busy, "the incoming queue is full; retry later")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::lookup;
    use crate::ops::{Exec, OPS};
    use crate::pool::Outcome;
    use std::time::Duration;

    fn list_exec(name: &str) -> ListFn {
        match OPS[lookup(name).unwrap()].exec {
            Exec::List(f) => f,
            _ => unreachable!(),
        }
    }

    /// Runs jobs as a pool of `workers` would, one job per worker per
    /// round; returns the replies (the `R` of each task) in finishing order.
    fn run_all(t: &mut Tasks<&'static str>, workers: usize, now: Instant) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        for round in 0..10_000 {
            let jobs: Vec<Job> = (0..workers)
                .map_while(|_| t.next_job(now, &mut Vec::new))
                .collect();
            if jobs.is_empty() {
                break;
            }
            for job in jobs {
                let outcome = match job.work {
                    Work::List { exec, payload } => Outcome::List(crate::ops::compute_list(exec, &payload)),
                    Work::PiSlice { mut stream, samples } => {
                        let hits = stream.run(samples);
                        Outcome::PiSlice { stream, hits }
                    }
                    Work::Users { snapshot } => Outcome::Users(crate::ops::UsersTable::render(snapshot)),
                };
                let done = Done {
                    ticket: job.ticket,
                    worker: 0,
                    outcome,
                    run: Duration::ZERO,
                };
                if let Some(f) = t.complete(done, now + Duration::from_millis(round)) {
                    let text = match f.result {
                        Ok(o) => {
                            let mut v = Vec::new();
                            crate::protocol::reply::write_text_result(&mut v, &o);
                            String::from_utf8(v).unwrap()
                        }
                        Err(e) => e.code.as_str().to_string(),
                    };
                    out.push((f.reply, text));
                }
            }
        }
        out
    }

    fn list(t: &mut Tasks<&'static str>, name: &'static str, op: &str, values: &str, now: Instant) {
        let work = TaskWork::List {
            exec: list_exec(op),
            payload: Some(Payload::text(values.as_bytes().to_vec())),
        };
        let cost = values.split(' ').count() as u64;
        assert!(t.submit(name, work, cost, now).is_ok());
    }

    #[test]
    fn a_small_task_overtakes_the_slices_of_a_big_pi() {
        let now = Instant::now();
        let mut t = Tasks::new(Policy::Hrrn, 100, 2, 42);
        let samples = 1 << 24;
        assert!(
            t.submit("pi", TaskWork::Pi { samples, chunks: 1 }, samples / 1000, now)
                .is_ok()
        );
        // The first slice starts, then a small task arrives.
        let first = t.next_job(now, &mut Vec::new).unwrap();
        list(&mut t, "max", "max", "1 2", now);
        let Work::PiSlice {
            mut stream,
            samples: n,
        } = first.work
        else {
            panic!()
        };
        let hits = stream.run(n);
        let done = Done {
            ticket: first.ticket,
            worker: 0,
            outcome: Outcome::PiSlice { stream, hits },
            run: Duration::ZERO,
        };
        assert!(t.complete(done, now).is_none());
        // The pi's next slice is queued behind the small task.
        let order = run_all(&mut t, 1, now);
        assert_eq!(order[0], ("max", "2".to_string()));
        assert_eq!(order[1].0, "pi");
        assert!(
            order[1].1.ends_with(&format!("samples={samples} chunks=1")),
            "{}",
            order[1].1
        );
    }

    #[test]
    fn sliced_pi_gives_the_same_hits_as_one_run() {
        let now = Instant::now();
        let mut t = Tasks::new(Policy::Fifo, 100, 4, 7);
        let samples = (1 << 23) * 2 + 1000;
        assert!(
            t.submit("pi", TaskWork::Pi { samples, chunks: 3 }, 1, now)
                .is_ok()
        );
        let got = run_all(&mut t, 2, now);
        let hits: u64 = (0..3)
            .map(|i| crate::ops::pi::count_hits(chunk_samples(samples, 3, i), chunk_seed(7, 1, i)))
            .sum();
        let mut want = Vec::new();
        crate::numbers::Num::Float(estimate(hits, samples)).write_to(&mut want);
        let want = format!("{} samples={samples} chunks=3", String::from_utf8(want).unwrap());
        assert_eq!(got, vec![("pi", want)]);
    }

    #[test]
    fn inline_only_while_both_queues_are_empty() {
        let now = Instant::now();
        let mut t: Tasks<&str> = Tasks::new(Policy::Hrrn, 100, 2, 1);
        assert!(t.may_inline(10));
        assert!(!t.may_inline(INLINE_MAX_COST + 1));
        list(&mut t, "a", "sum", "1 2", now);
        assert!(!t.may_inline(1));
    }

    #[test]
    fn a_full_incoming_queue_gives_the_reply_back() {
        let now = Instant::now();
        let mut t = Tasks::new(Policy::Hrrn, 1, 1, 1);
        list(&mut t, "a", "sum", "1", now);
        let work = TaskWork::Pi {
            samples: 10,
            chunks: 1,
        };
        assert_eq!(t.submit("b", work, 1, now).err(), Some("b"));
    }

    #[test]
    fn abandoned_tasks_drop_late_results() {
        let now = Instant::now();
        let mut t = Tasks::new(Policy::Hrrn, 10, 2, 1);
        list(&mut t, "a", "sum", "1 2", now);
        let job = t.next_job(now, &mut Vec::new).unwrap();
        let left = t.abandon_all(&Failure::shutting_down(), now);
        assert_eq!(left.len(), 1);
        // The slot is reused by a new task; the old result must not land.
        list(&mut t, "b", "sum", "5", now);
        let done = Done {
            ticket: job.ticket,
            worker: 0,
            outcome: Outcome::List(Ok(Output::Word("stale"))),
            run: Duration::ZERO,
        };
        assert!(t.complete(done, now).is_none());
        assert_eq!(run_all(&mut t, 1, now), vec![("b", "5".to_string())]);
    }
}
