//! The worker pool: threads that parse numbers and compute, fed one job at
//! a time by the event loop's short-term scheduler, answering through one
//! shared channel and the loop's `mio::Waker`.
//!
//! Each worker has its own job channel and the loop only hands a job to a
//! worker it knows is idle, so no job ever waits behind another in a
//! worker's channel: the scheduler's order is the order of execution.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::numbers::{ValueErrorKind, Values, parse_json_values, parse_text_list};
use crate::ops::Output;
use crate::ops::pi::count_hits;
use crate::protocol::{Code, RawValues};

pub type ListFn = fn(&Values) -> Result<Output, String>;

pub enum Job {
    List {
        task: usize,
        exec: ListFn,
        raw: RawValues,
    },
    PiChunk {
        task: usize,
        samples: u64,
        seed: u64,
    },
}

#[derive(Debug)]
pub enum JobResult {
    List(Result<Output, (Code, String)>),
    PiChunk(Result<u64, (Code, String)>),
}

pub struct Done {
    pub task: usize,
    pub worker: usize,
    pub result: JobResult,
    pub run: Duration,
}

struct Worker {
    jobs: Sender<Job>,
    handle: Option<JoinHandle<()>>,
}

pub struct Pool {
    workers: Vec<Worker>,
    idle: Vec<usize>,
    done_tx: Sender<Done>,
    done_rx: Receiver<Done>,
    wake_pending: Arc<AtomicBool>,
    waker: Arc<mio::Waker>,
}

/// Parses a list request's values and runs its operation: the whole
/// work of a list task, on a worker or (for tiny tasks) on the loop.
pub fn compute_list(exec: ListFn, raw: &RawValues) -> Result<Output, (Code, String)> {
    let parsed = match raw {
        RawValues::Text(bytes) => parse_text_list(bytes),
        RawValues::Json(vals) => parse_json_values(vals),
    };
    match parsed {
        Err(e) => {
            let code = match e.kind {
                ValueErrorKind::Parse => Code::Parse,
                ValueErrorKind::Range => Code::Range,
            };
            Err((code, e.message))
        }
        Ok(values) => exec(&values).map_err(|m| (Code::Range, m)),
    }
}

/// [`compute_list`], with a panic (a bug) turned into `internal`: it must
/// cost that one request, never the thread that ran it.
pub fn compute_list_guarded(exec: ListFn, raw: &RawValues) -> Result<Output, (Code, String)> {
    catch_unwind(AssertUnwindSafe(|| compute_list(exec, raw))).unwrap_or_else(|_| {
        log::error!("an operation panicked");
        Err((Code::Internal, "internal error, logged".to_string()))
    })
}

fn run_job(job: Job) -> (usize, JobResult) {
    match job {
        Job::List { task, exec, raw } => (task, JobResult::List(compute_list(exec, &raw))),
        Job::PiChunk { task, samples, seed } => (task, JobResult::PiChunk(Ok(count_hits(samples, seed)))),
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
        let is_pi = matches!(job, Job::PiChunk { .. });
        let task_key = match &job {
            Job::List { task, .. } | Job::PiChunk { task, .. } => *task,
        };
        // A panic in an operation is a bug; it must cost that one request,
        // not the worker and not the daemon.
        let (task, result) = match catch_unwind(AssertUnwindSafe(|| run_job(job))) {
            Ok(r) => r,
            Err(_) => {
                log::error!("worker {index}: operation panicked on task {task_key}");
                let err = (Code::Internal, "internal error, logged".to_string());
                let r = if is_pi {
                    JobResult::PiChunk(Err(err))
                } else {
                    JobResult::List(Err(err))
                };
                (task_key, r)
            }
        };
        let msg = Done {
            task,
            worker: index,
            result,
            run: started.elapsed(),
        };
        if done.send(msg).is_err() {
            return;
        }
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
            idle: Vec::new(),
            done_tx,
            done_rx,
            wake_pending: Arc::new(AtomicBool::new(false)),
            waker,
        };
        pool.resize(size)?;
        Ok(pool)
    }

    pub fn size(&self) -> usize {
        self.workers.iter().filter(|w| w.handle.is_some()).count()
    }

    /// Grows the pool to `size` workers (a pool never shrinks while the
    /// daemon runs: an idle thread costs nothing but its stack).
    pub fn resize(&mut self, size: usize) -> std::io::Result<()> {
        let size = size.max(1);
        while self.workers.len() < size {
            let index = self.workers.len();
            let (tx, rx) = channel();
            let done = self.done_tx.clone();
            let pending = Arc::clone(&self.wake_pending);
            let waker = Arc::clone(&self.waker);
            let handle = std::thread::Builder::new()
                .name(format!("taskd-worker-{index}"))
                .spawn(move || worker_main(index, rx, done, pending, waker))?;
            self.workers.push(Worker {
                jobs: tx,
                handle: Some(handle),
            });
            self.idle.push(index);
        }
        Ok(())
    }

    pub fn has_idle(&self) -> bool {
        !self.idle.is_empty()
    }

    pub fn idle_count(&self) -> usize {
        self.idle.len()
    }

    /// Hands a job to an idle worker; gives it back when none is idle.
    pub fn submit(&mut self, job: Job) -> Result<(), Job> {
        let Some(w) = self.idle.pop() else { return Err(job) };
        match self.workers[w].jobs.send(job) {
            Ok(()) => Ok(()),
            Err(e) => {
                log::error!("worker {w} has stopped; its jobs go elsewhere");
                Err(e.0)
            }
        }
    }

    /// Call before draining results: a worker that finishes afterwards
    /// wakes the loop again.
    pub fn arm_wake(&self) {
        self.wake_pending.store(false, Ordering::Release);
    }

    /// The next finished job, marking its worker idle.
    pub fn try_recv(&mut self) -> Option<Done> {
        match self.done_rx.try_recv() {
            Ok(done) => {
                self.idle.push(done.worker);
                Some(done)
            }
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => None,
        }
    }

    /// Tells every worker to stop after its current job. It does not wait
    /// for them: a worker deep in a long pi chunk must not hold up the exit,
    /// and whatever it computes now has no one left to answer.
    pub fn shutdown(&mut self) {
        for w in &mut self.workers {
            let (tx, _) = channel();
            // Dropping the job sender ends the worker's loop.
            w.jobs = tx;
            w.handle = None;
        }
    }
}
