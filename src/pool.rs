//! The worker pool: threads that parse numbers and compute, fed one job at
//! a time by the short-term scheduler (`crate::tasks`), answering through
//! one shared channel and the loop's `mio::Waker`.
//!
//! Each worker has its own job channel and the loop only hands a job to a
//! worker it knows is idle, so no job ever waits behind another in a
//! worker's channel: the scheduler's order is the order of execution.
//! Every job is short (a list task, one slice of a π chunk, one rendering
//! of the users table): a long π chunk is many jobs.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::time::{Duration, Instant};

use crate::ops::pi::PiStream;
use crate::ops::{ListFn, Output, UsersTable, compute_list};
use crate::protocol::{Failure, Payload};

/// Which piece of work a job or its result belongs to; the short-term
/// scheduler checks it on delivery (a task may have been answered and its
/// slot reused since).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    pub task: usize,
    /// The task's lifetime-unique serial.
    pub serial: u64,
    /// π: the chunk; 0 otherwise.
    pub chunk: u32,
}

pub enum Work {
    /// Parse the values and run the operation.
    List { exec: ListFn, payload: Payload },
    /// The next `samples` points of a π chunk.
    PiSlice { stream: Box<PiStream>, samples: u64 },
    /// Sort and render a snapshot of the user counts.
    Users { snapshot: Vec<(Arc<str>, u64)> },
}

pub struct Job {
    pub ticket: Ticket,
    pub work: Work,
}

#[derive(Debug)]
pub enum Outcome {
    List(Result<Output, Failure>),
    /// The stream, advanced, for the chunk's next slice.
    PiSlice {
        stream: Box<PiStream>,
        hits: u64,
    },
    Users(UsersTable),
    /// The job panicked (a bug): its task fails with `internal`.
    Panicked,
}

pub struct Done {
    pub ticket: Ticket,
    pub worker: usize,
    pub outcome: Outcome,
    pub run: Duration,
}

struct Worker {
    /// None once the worker is told to stop (a smaller pool after a
    /// reload, or shutdown): the thread ends after its current job.
    jobs: Option<Sender<Job>>,
    busy: bool,
}

pub struct Pool {
    workers: Vec<Worker>,
    /// The configured size: surplus workers are retired as soon as they
    /// are idle.
    size: usize,
    idle: Vec<usize>,
    done_tx: Sender<Done>,
    done_rx: Receiver<Done>,
    wake_pending: Arc<AtomicBool>,
    waker: Arc<mio::Waker>,
}

fn run(work: Work) -> Outcome {
    match work {
        Work::List { exec, payload } => {
            let out = compute_list(exec, payload.values(), payload.syntax);
            crate::spare::give_line(payload.bytes);
            Outcome::List(out)
        }
        Work::PiSlice { mut stream, samples } => {
            let hits = stream.run(samples);
            Outcome::PiSlice { stream, hits }
        }
        Work::Users { snapshot } => Outcome::Users(UsersTable::render(snapshot)),
    }
}

fn worker_main(
    index: usize,
    jobs: Receiver<Job>,
    done: Sender<Done>,
    pending: Arc<AtomicBool>,
    waker: Arc<mio::Waker>,
) {
    while let Ok(job) = jobs.recv() {
        let started = Instant::now();
        let ticket = job.ticket;
        // A panic in an operation is a bug; it must cost that one request,
        // not the worker and not the daemon.
        let outcome = catch_unwind(AssertUnwindSafe(|| run(job.work))).unwrap_or_else(|_| {
            log::error!("worker {index}: a job of task {} panicked", ticket.task);
            Outcome::Panicked
        });
        let msg = Done {
            ticket,
            worker: index,
            outcome,
            run: started.elapsed(),
        };
        if done.send(msg).is_err() {
            return;
        }
        // One wake-up per batch: the loop clears the flag before it drains
        // the channel, so results that arrive meanwhile ride along.
        if !pending.swap(true, Ordering::AcqRel)
            && let Err(e) = waker.wake()
        {
            log::error!("worker {index}: cannot wake the event loop: {e}");
        }
    }
}

impl Pool {
    pub fn new(size: usize, waker: Arc<mio::Waker>) -> std::io::Result<Pool> {
        let (done_tx, done_rx) = channel();
        let mut pool = Pool {
            workers: Vec::new(),
            size: 0,
            idle: Vec::new(),
            done_tx,
            done_rx,
            wake_pending: Arc::new(AtomicBool::new(false)),
            waker,
        };
        pool.resize(size)?;
        Ok(pool)
    }

    /// Workers serving now (retiring ones excluded).
    pub fn size(&self) -> usize {
        self.size
    }

    fn serving(&self) -> usize {
        self.workers.iter().filter(|w| w.jobs.is_some()).count()
    }

    /// Grows or shrinks the pool to `size` workers. Surplus workers finish
    /// the job they are running, if any, and exit. A worker's index is
    /// never reused, so a result always names the thread that made it.
    pub fn resize(&mut self, size: usize) -> std::io::Result<()> {
        let size = size.max(1);
        self.size = size;
        while self.serving() < size {
            let index = self.workers.len();
            let (tx, rx) = channel();
            let done = self.done_tx.clone();
            let pending = Arc::clone(&self.wake_pending);
            let waker = Arc::clone(&self.waker);
            std::thread::Builder::new()
                .name(format!("taskd-worker-{index}"))
                .spawn(move || worker_main(index, rx, done, pending, waker))?;
            self.workers.push(Worker {
                jobs: Some(tx),
                busy: false,
            });
            self.idle.push(index);
        }
        self.retire_surplus();
        Ok(())
    }

    /// Stops idle workers while more than the configured size serve.
    fn retire_surplus(&mut self) {
        let mut surplus = self.serving().saturating_sub(self.size);
        while surplus > 0 {
            let Some(w) = self.idle.pop() else { break };
            // Dropping the job sender ends the worker's loop.
            self.workers[w].jobs = None;
            surplus -= 1;
        }
    }

    pub fn has_idle(&self) -> bool {
        !self.idle.is_empty()
    }

    pub fn busy(&self) -> usize {
        self.workers.iter().filter(|w| w.busy).count()
    }

    /// Hands a job to an idle worker; gives it back when none is idle.
    pub fn submit(&mut self, job: Job) -> Result<(), Job> {
        let Some(w) = self.idle.pop() else { return Err(job) };
        let Some(tx) = &self.workers[w].jobs else {
            return Err(job);
        };
        match tx.send(job) {
            Ok(()) => {
                self.workers[w].busy = true;
                Ok(())
            }
            Err(e) => {
                log::error!("worker {w} has stopped; its jobs go elsewhere");
                self.workers[w].jobs = None;
                Err(e.0)
            }
        }
    }

    /// Call before draining results: a worker that finishes afterwards
    /// wakes the loop again.
    pub fn arm_wake(&self) {
        self.wake_pending.store(false, Ordering::Release);
    }

    /// The next finished job, marking its worker idle (or retiring it).
    pub fn try_recv(&mut self) -> Option<Done> {
        match self.done_rx.try_recv() {
            Ok(done) => {
                if let Some(w) = self.workers.get_mut(done.worker) {
                    w.busy = false;
                    if w.jobs.is_some() {
                        self.idle.push(done.worker);
                    }
                }
                self.retire_surplus();
                Some(done)
            }
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => None,
        }
    }

    /// Tells every worker to stop after its current job. It does not wait
    /// for them: no job runs longer than a slice, and whatever a worker
    /// computes now has no one left to answer.
    pub fn shutdown(&mut self) {
        for w in &mut self.workers {
            w.jobs = None;
        }
        self.idle.clear();
    }
}
