//! The cases of the benchmark. Each runs taskd and its baseline once
//! (one round) and returns one (taskd, baseline) pair per table row.

use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::affinity;
use crate::inproc;
use crate::load::{self, LoadResult, LoadSpec, Req, Transport};
use crate::server::{ServerProc, Subject};
use testkit::LineClient;

mod kernels;

/// The small task of the network cases, and its reply.
pub const SMALL_REQUEST: &str = "max 1 2 3 4 5 6 7 8 9 10";
pub const SMALL_REPLY: &str = "OK 10";
/// Connections (or UDP sockets) of the network cases.
pub const CONNECTIONS: usize = 50;
/// Values of the `sum` line, and their bound.
pub const SUM_VALUES: usize = 1_000_000;
pub const SUM_BOUND: u64 = 1_000_000;
/// Idle connections of the memory case, and how many per source address
/// (taskd's default max_connections_per_ip is 1000).
pub const IDLE_CONNECTIONS: usize = 5_000;
const IDLE_PER_SOURCE: usize = 500;
/// Warm-up of each slice of a network measurement after the first.
const SLICE_WARMUP: Duration = Duration::from_millis(100);
/// Queue depths of the scheduler case.
pub const SCHED_SHALLOW: usize = 100;
pub const SCHED_DEEP: usize = 50_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    Small,
    Pipelined,
    Udp,
    Sum,
    Pi,
    Idle,
    Sched,
    Http,
    Parse,
    Floats,
    Stats,
    Kernels,
}

impl Case {
    pub const ALL: [Case; 12] = [
        Case::Small,
        Case::Pipelined,
        Case::Udp,
        Case::Sum,
        Case::Pi,
        Case::Idle,
        Case::Sched,
        Case::Http,
        Case::Parse,
        Case::Floats,
        Case::Stats,
        Case::Kernels,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Case::Small => "small",
            Case::Pipelined => "pipelined",
            Case::Udp => "udp",
            Case::Sum => "sum",
            Case::Pi => "pi",
            Case::Idle => "idle",
            Case::Sched => "sched",
            Case::Http => "http",
            Case::Parse => "parse",
            Case::Floats => "floats",
            Case::Stats => "stats",
            Case::Kernels => "kernels",
        }
    }

    /// By name or by number (1 to 12).
    pub fn parse(s: &str) -> Option<Case> {
        let s = s.trim().to_ascii_lowercase();
        Case::ALL
            .into_iter()
            .enumerate()
            .find(|(i, c)| c.name() == s || (i + 1).to_string() == s)
            .map(|(_, c)| c)
    }

    pub fn needs_taskd_binary(self) -> bool {
        !matches!(self, Case::Sched | Case::Parse | Case::Kernels)
    }
}

/// Rows of the table. A row's taskd and baseline columns, its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Row {
    SmallRate,
    SmallP50,
    SmallP99,
    PipeRate,
    PipeP99,
    UdpRate,
    UdpP99,
    SumRate,
    PiOne,
    PiAll,
    PiScale,
    IdleBytes,
    SchedCost,
    HttpRate,
    HttpP50,
    HttpP99,
    ParseSmall,
    ParseLong,
    ParseDouble,
    FloatRate,
    StatsRate,
    PiScalar,
    PiAvx2,
    PiAvx512,
}

/// What a row must reach.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    None,
    /// ratio taskd / baseline at least
    RatioMin(f64),
    /// ratio taskd / baseline at most
    RatioMax(f64),
    /// taskd's own figure at most
    TaskdMax(f64),
    /// taskd's own figure at least, and the ratio at least
    TaskdMinRatioMin(f64, f64),
}

impl Row {
    pub const ALL: [Row; 24] = [
        Row::SmallRate,
        Row::SmallP50,
        Row::SmallP99,
        Row::PipeRate,
        Row::PipeP99,
        Row::UdpRate,
        Row::UdpP99,
        Row::SumRate,
        Row::PiOne,
        Row::PiAll,
        Row::PiScale,
        Row::IdleBytes,
        Row::SchedCost,
        Row::HttpRate,
        Row::HttpP50,
        Row::HttpP99,
        Row::ParseSmall,
        Row::ParseLong,
        Row::ParseDouble,
        Row::FloatRate,
        Row::StatsRate,
        Row::PiScalar,
        Row::PiAvx2,
        Row::PiAvx512,
    ];

    pub fn index(self) -> usize {
        Row::ALL
            .iter()
            .position(|r| *r == self)
            .expect("every row is in ALL")
    }

    pub fn case(self) -> Case {
        match self {
            Row::SmallRate | Row::SmallP50 | Row::SmallP99 => Case::Small,
            Row::PipeRate | Row::PipeP99 => Case::Pipelined,
            Row::UdpRate | Row::UdpP99 => Case::Udp,
            Row::SumRate => Case::Sum,
            Row::PiOne | Row::PiAll | Row::PiScale => Case::Pi,
            Row::IdleBytes => Case::Idle,
            Row::SchedCost => Case::Sched,
            Row::HttpRate | Row::HttpP50 | Row::HttpP99 => Case::Http,
            Row::ParseSmall | Row::ParseLong | Row::ParseDouble => Case::Parse,
            Row::FloatRate => Case::Floats,
            Row::StatsRate => Case::Stats,
            Row::PiScalar | Row::PiAvx2 | Row::PiAvx512 => Case::Kernels,
        }
    }

    /// What is measured, and in which unit.
    pub fn label(self) -> (&'static str, &'static str) {
        match self {
            Row::SmallRate => ("TCP 50 conns x1: throughput", "req/s"),
            Row::SmallP50 => ("TCP 50 conns x1: p50 latency", "us"),
            Row::SmallP99 => ("TCP 50 conns x1: p99 latency", "us"),
            Row::PipeRate => ("TCP 50 conns x16: throughput", "req/s"),
            Row::PipeP99 => ("TCP 50 conns x16: p99 latency", "us"),
            Row::UdpRate => ("UDP 50 sockets x1: throughput", "req/s"),
            Row::UdpP99 => ("UDP 50 sockets x1: p99 latency", "us"),
            Row::SumRate => ("sum 10^6 ints, end to end vs str::parse", "MB/s"),
            Row::PiOne => ("pi, 1 worker vs 1 PRNG thread", "Msamples/s"),
            Row::PiAll => ("pi, all workers vs N PRNG threads", "Msamples/s"),
            Row::PiScale => ("pi, all workers vs 1 worker", "Msamples/s"),
            Row::IdleBytes => ("idle memory per connection (5,000)", "B"),
            Row::SchedCost => ("sched ns/task, 50,000 queued vs 100", "ns"),
            Row::HttpRate => ("HTTP keep-alive 50 conns x1 vs nginx: throughput", "req/s"),
            Row::HttpP50 => ("HTTP keep-alive 50 conns x1 vs nginx: p50 latency", "us"),
            Row::HttpP99 => ("HTTP keep-alive 50 conns x1 vs nginx: p99 latency", "us"),
            Row::ParseSmall => ("parse 10^6 ints < 1000 vs str::parse::<i64>, in process", "MB/s"),
            Row::ParseLong => ("parse 19-digit ints vs str::parse::<i64>, in process", "MB/s"),
            Row::ParseDouble => (
                "parse 10^6 doubles (1.5e-3) vs str::parse::<f64>, in process",
                "MB/s",
            ),
            Row::FloatRate => (
                "sum 10^6 doubles (1.5e-3), end to end vs str::parse::<f64>",
                "MB/s",
            ),
            Row::StatsRate => ("stats 10^6 ints, end to end vs str::parse + std stats", "MB/s"),
            Row::PiScalar => ("pi kernel scalar vs plain xoshiro loop, in process", "Msamples/s"),
            Row::PiAvx2 => ("pi kernel AVX2 vs plain xoshiro loop, in process", "Msamples/s"),
            Row::PiAvx512 => (
                "pi kernel AVX-512 vs plain xoshiro loop, in process",
                "Msamples/s",
            ),
        }
    }

    pub fn target(self) -> Target {
        match self {
            // Issue 11's targets.
            Row::SmallRate => Target::RatioMin(0.95),
            Row::SmallP99 => Target::RatioMax(1.3),
            Row::PipeRate => Target::RatioMin(0.8),
            Row::UdpRate => Target::RatioMin(1.0),
            Row::SumRate => Target::TaskdMinRatioMin(1000.0, 1.5),
            Row::PiOne => Target::RatioMin(3.0),
            Row::PiScale => Target::RatioMin(1.9),
            Row::IdleBytes => Target::TaskdMax(128.0),
            Row::SchedCost => Target::RatioMax(1.5),
            Row::HttpRate => Target::RatioMin(1.0),
            Row::HttpP50 | Row::HttpP99 => Target::None,
            Row::FloatRate => Target::RatioMin(1.0),
            Row::SmallP50
            | Row::PipeP99
            | Row::UdpP99
            | Row::PiAll
            | Row::ParseSmall
            | Row::ParseLong
            | Row::ParseDouble
            | Row::StatsRate
            | Row::PiScalar
            | Row::PiAvx2
            | Row::PiAvx512 => Target::None,
        }
    }
}

/// Settings shared by every case.
pub struct Ctx {
    pub taskd_bin: PathBuf,
    pub pin: bool,
    /// The CPUs the benchmark was allowed before pinning itself.
    pub all_cpus: Vec<usize>,
    /// With `pin`: the server's CPU (the load generator has the next one).
    pub server_cpu: usize,
    pub warmup: Duration,
    /// Measured time per side and network case, cut into `slices`.
    pub duration: Duration,
    pub slices: usize,
    pub quick: bool,
    /// The value line of the `sum` case and its sum, made once.
    pub sum_line: Option<(String, i64)>,
}

impl Ctx {
    /// `taskset -c` list for the server: one CPU when pinned.
    pub(crate) fn server_cpus(&self) -> Option<String> {
        self.pin.then(|| self.server_cpu.to_string())
    }

    /// `taskset -c` list giving a server every CPU. Needed when pinned,
    /// since a child inherits the load generator's one-CPU affinity.
    fn all_cpus_list(&self) -> Option<String> {
        self.pin.then(|| affinity::cpu_list(&self.all_cpus))
    }

    fn taskd(&self) -> Subject<'_> {
        Subject::Taskd { bin: &self.taskd_bin }
    }
}

/// What one case measured in one round.
#[derive(Default)]
pub struct CaseOut {
    pub rows: Vec<(Row, f64, f64)>,
    /// Invalid replies, missing replies.
    pub invalid: u64,
    pub missing: u64,
    pub first_error: Option<String>,
    /// One line for the progress log.
    pub note: String,
    /// Why the case did not run (a tool it needs is missing).
    pub skipped: Option<String>,
}

impl CaseOut {
    pub(crate) fn skipped(why: &str) -> CaseOut {
        CaseOut {
            note: format!("skipped: {why}"),
            skipped: Some(why.to_string()),
            ..CaseOut::default()
        }
    }

    pub(crate) fn absorb(&mut self, who: &str, r: &LoadResult) {
        self.invalid += r.invalid;
        self.missing += r.missing;
        if self.first_error.is_none() {
            self.first_error = r.first_error.as_ref().map(|e| format!("{who}: {e}"));
        }
    }
}

pub type CaseResult = Result<CaseOut, String>;

pub fn run(case: Case, ctx: &Ctx, round: usize) -> CaseResult {
    match case {
        Case::Small => network(ctx, round, Transport::Tcp, 1),
        Case::Pipelined => network(ctx, round, Transport::Tcp, 16),
        Case::Udp => network(ctx, round, Transport::Udp, 1),
        Case::Sum => sum(ctx, round),
        Case::Pi => pi(ctx, round),
        Case::Idle => idle(ctx, round),
        Case::Sched => sched(ctx),
        Case::Http => crate::http::case(ctx, round),
        Case::Parse => kernels::parse(ctx, round),
        Case::Floats => kernels::floats(ctx, round),
        Case::Stats => kernels::stats(ctx, round),
        Case::Kernels => kernels::kernels(ctx, round),
    }
}

fn err(e: io::Error) -> String {
    e.to_string()
}

/// Runs `f` against a fresh server; fails if the server died meanwhile.
fn with_server<R>(
    subject: &Subject,
    cpus: Option<&str>,
    f: impl FnOnce(&mut ServerProc) -> Result<R, String>,
) -> Result<R, String> {
    let mut server = ServerProc::start(subject, cpus).map_err(err)?;
    let r = f(&mut server);
    server.check_alive().map_err(err)?;
    r
}

/// The network cases. Both servers run side by side (only one is loaded at
/// a time) and the measurement is cut into short slices taken in turn,
/// taskd-baseline-baseline-taskd…, so that the noise of a shared machine
/// falls on both alike; each slice connects afresh and warms up before it
/// counts.
fn network(ctx: &Ctx, round: usize, transport: Transport, pipeline: usize) -> CaseResult {
    let cpus = ctx.server_cpus();
    let mut taskd = ServerProc::start(&ctx.taskd(), cpus.as_deref()).map_err(err)?;
    let mut base =
        ServerProc::start(&Subject::Baseline { reply: SMALL_REPLY }, cpus.as_deref()).map_err(err)?;
    let [t, b] = alternate(ctx, round, [&taskd, &base], |addr, warmup, slice| LoadSpec {
        addr,
        transport,
        connections: CONNECTIONS,
        pipeline,
        warmup,
        duration: slice,
        mix: vec![Req::new(SMALL_REQUEST, SMALL_REPLY)],
        udp_timeout: Duration::from_millis(250),
    })?;
    taskd.check_alive().map_err(err)?;
    base.check_alive().map_err(err)?;
    let mut out = CaseOut::default();
    out.absorb("taskd", &t);
    out.absorb("baseline", &b);
    out.note = format!("taskd {} | baseline {}", t.summary(), b.summary());
    let (rate, p50, p99) = match (transport, pipeline) {
        (Transport::Udp, _) => (Row::UdpRate, None, Row::UdpP99),
        (Transport::Tcp, 1) => (Row::SmallRate, Some(Row::SmallP50), Row::SmallP99),
        (Transport::Tcp | Transport::Http, _) => (Row::PipeRate, None, Row::PipeP99),
    };
    out.rows.push((rate, t.rate(), b.rate()));
    if let Some(p50) = p50 {
        out.rows.push((p50, t.quantile_us(0.5), b.quantile_us(0.5)));
    }
    out.rows.push((p99, t.quantile_us(0.99), b.quantile_us(0.99)));
    Ok(out)
}

/// Loads two running servers in turn with the spec `spec_for(address,
/// warm-up, slice)`: `ctx.duration` per server cut into `ctx.slices`
/// slices taken taskd-baseline-baseline-taskd… (the order of the first
/// pair alternating with the round), each on fresh connections; returns
/// each server's slices merged.
pub(crate) fn alternate(
    ctx: &Ctx,
    round: usize,
    servers: [&ServerProc; 2],
    spec_for: impl Fn(SocketAddr, Duration, Duration) -> LoadSpec,
) -> Result<[LoadResult; 2], String> {
    let slices = ctx.slices.max(1);
    let slice = ctx.duration / slices as u32;
    let mut results: [Option<LoadResult>; 2] = [None, None];
    for k in 0..slices {
        // The first slice of each side also carries the full warm-up.
        let warmup = if k == 0 { ctx.warmup } else { SLICE_WARMUP };
        let order = if (round + k).is_multiple_of(2) {
            [0, 1]
        } else {
            [1, 0]
        };
        for side in order {
            let server = servers[side];
            let spec = spec_for(server.addr, warmup, slice);
            let r = load::run(&spec).map_err(|e| format!("{}: load: {e}", server.name))?;
            match &mut results[side] {
                Some(acc) => acc.merge(r),
                none => *none = Some(r),
            }
        }
    }
    let [Some(t), Some(b)] = results else {
        return Err("no measurement was taken".into());
    };
    Ok([t, b])
}

/// A blocking request/reply connection: the shared line client, timed.
struct Client {
    line: LineClient,
}

impl Client {
    fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Client> {
        Ok(Client {
            line: LineClient::try_connect(addr, timeout)?,
        })
    }

    /// Sends `line` (which ends in a newline) and returns the reply line
    /// and the time from the first byte sent to the reply read.
    fn ask(&mut self, line: &[u8]) -> io::Result<(String, Duration)> {
        let t = Instant::now();
        self.line.try_send_raw(line)?;
        let reply = self.line.try_line()?.ok_or_else(|| {
            io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed before a reply")
        })?;
        Ok((reply, t.elapsed()))
    }
}

/// The `sum` case: one request of taskd, then one `str::parse` run of the
/// same values in this process, in turn, so both see the same noise.
fn sum(ctx: &Ctx, round: usize) -> CaseResult {
    let (values, total) = ctx.sum_line.as_ref().ok_or("the sum line was not made")?;
    let line = format!("sum {values}\n");
    let expect = format!("OK {total}");
    let reps = if ctx.quick { 3 } else { 7 };
    let budget = if ctx.quick {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(6)
    };
    let mut out = CaseOut::default();
    inproc::check_parse(values, *total)?;
    let (mut t_times, mut b_times) = (Vec::new(), Vec::new());
    with_server(&ctx.taskd(), ctx.server_cpus().as_deref(), |s| {
        let mut c = Client::connect(s.addr, Duration::from_secs(30)).map_err(err)?;
        let end = Instant::now() + budget;
        // One untimed request first: it warms taskd's buffers up.
        for i in 0..=reps {
            let mut taskd_rep = || -> Result<(), String> {
                let (reply, t) = c.ask(line.as_bytes()).map_err(|e| format!("taskd: sum: {e}"))?;
                if reply != expect {
                    out.invalid += 1;
                    out.first_error
                        .get_or_insert(format!("taskd: expected {expect:?}, got {reply:?}"));
                }
                if i > 0 {
                    t_times.push(t.as_secs_f64());
                }
                Ok(())
            };
            if (round + i).is_multiple_of(2) {
                taskd_rep()?;
                b_times.push(inproc::time_parse_once(values));
            } else {
                b_times.push(inproc::time_parse_once(values));
                taskd_rep()?;
            }
            if i > 0 && Instant::now() >= end {
                break;
            }
        }
        Ok(())
    })?;
    // The baseline's first run was a warm-up too.
    b_times.remove(0);
    let t = line.len() as f64 / crate::median(&mut t_times) / 1e6;
    let b = values.len() as f64 / crate::median(&mut b_times) / 1e6;
    out.rows.push((Row::SumRate, t, b));
    out.note = format!(
        "taskd {t:.0} MB/s end to end ({:.1} MB line, {} requests) | str::parse::<i64> {b:.0} MB/s",
        line.len() as f64 / 1e6,
        t_times.len()
    );
    Ok(out)
}

/// Asks taskd for `pi samples chunks`; returns samples per second.
fn taskd_pi(c: &mut Client, samples: u64, chunks: usize, out: &mut CaseOut) -> Result<f64, String> {
    let (reply, t) = c
        .ask(format!("pi {samples} {chunks}\n").as_bytes())
        .map_err(|e| format!("taskd: pi: {e}"))?;
    if !pi_reply_ok(&reply, samples, chunks) {
        out.invalid += 1;
        out.first_error.get_or_insert(format!(
            "taskd: expected \"OK <pi> samples={samples} chunks={chunks}\", got {reply:?}"
        ));
    }
    Ok(samples as f64 / t.as_secs_f64())
}

/// `OK <estimate> samples=N chunks=K`, the estimate within 0.01 of π for a
/// million samples or more (σ ≈ 0.0016 there), else within [0, 4].
fn pi_reply_ok(reply: &str, samples: u64, chunks: usize) -> bool {
    let tail = format!(" samples={samples} chunks={chunks}");
    let Some(estimate) = reply
        .strip_prefix("OK ")
        .and_then(|r| r.strip_suffix(tail.as_str()))
        .and_then(|e| e.parse::<f64>().ok())
    else {
        return false;
    };
    if samples >= 1_000_000 {
        (estimate - std::f64::consts::PI).abs() < 0.01
    } else {
        (0.0..=4.0).contains(&estimate)
    }
}

fn pi(ctx: &Ctx, round: usize) -> CaseResult {
    // About a second per taskd measurement at ~3.5 G samples/s per worker (the SIMD
    // kernels), and per baseline measurement at ~800 M/s: long enough that a moment of
    // the shared machine's noise does not decide a round.
    let per_worker: u64 = if ctx.quick { 1_000_000_000 } else { 3_000_000_000 };
    let prng_per_thread = per_worker / 4;
    let nthreads = ctx.all_cpus.len();
    let mut out = CaseOut::default();
    let one_cpu = ctx.pin.then(|| vec![ctx.server_cpu]);
    let all_cpus = ctx.pin.then(|| ctx.all_cpus.clone());
    let mut workers_seen = 0usize;
    let mut taskd_side = |out: &mut CaseOut| -> Result<(f64, f64), String> {
        // One worker: the server on the server CPU, as in the other cases.
        let one = with_server(&ctx.taskd(), ctx.server_cpus().as_deref(), |s| {
            let mut c = Client::connect(s.addr, Duration::from_secs(60)).map_err(err)?;
            taskd_pi(&mut c, 1000, 1, out)?;
            taskd_pi(&mut c, per_worker, 1, out)
        })?;
        // All workers: the server may use every CPU (pinned to one, its
        // workers would share it, and it would start only one anyway).
        let all = with_server(&ctx.taskd(), ctx.all_cpus_list().as_deref(), |s| {
            let mut c = Client::connect(s.addr, Duration::from_secs(60)).map_err(err)?;
            let (info, _) = c.ask(b"info\n").map_err(err)?;
            let workers = info
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix("workers="))
                .and_then(|w| w.parse::<usize>().ok())
                .ok_or_else(|| format!("taskd: no workers= in the info reply {info:?}"))?;
            workers_seen = workers;
            taskd_pi(&mut c, 1000, workers, out)?;
            // Within taskd's default ops.pi.max_samples (10^10) on any number of CPUs.
            let each = per_worker.min(10_000_000_000 / workers.max(1) as u64);
            taskd_pi(&mut c, each * workers as u64, workers, out)
        })?;
        Ok((one, all))
    };
    let base_side = || -> Result<(f64, f64), String> {
        let one = inproc::prng_rate(1, prng_per_thread, one_cpu.as_deref());
        let all = inproc::prng_rate(nthreads, prng_per_thread, all_cpus.as_deref());
        Ok((one, all))
    };
    let ((t1, tn), (b1, bn)) = if round.is_multiple_of(2) {
        let t = taskd_side(&mut out)?;
        (t, base_side()?)
    } else {
        let b = base_side()?;
        (taskd_side(&mut out)?, b)
    };
    let m = 1e6;
    out.rows.push((Row::PiOne, t1 / m, b1 / m));
    out.rows.push((Row::PiAll, tn / m, bn / m));
    out.rows.push((Row::PiScale, tn / m, t1 / m));
    out.note = format!(
        "taskd 1 worker {:.0} M/s, {workers_seen} workers {:.0} M/s | PRNG 1 thread {:.0} M/s, {nthreads} threads {:.0} M/s",
        t1 / m,
        tn / m,
        b1 / m,
        bn / m
    );
    Ok(out)
}

/// Bytes of resident memory per idle connection of one server.
fn idle_bytes(s: &mut ServerProc, out: &mut CaseOut) -> Result<f64, String> {
    let SocketAddr::V4(dst) = s.addr else {
        return Err("the server is not on IPv4".into());
    };
    std::thread::sleep(Duration::from_millis(200));
    let fds0 = s.fd_count().map_err(err)?;
    let rss0 = s.rss_bytes().map_err(err)?;
    let mut conns = Vec::with_capacity(IDLE_CONNECTIONS);
    for i in 0..IDLE_CONNECTIONS {
        // 127.0.0.2, .3, …: taskd's default allows 1000 connections per IP.
        let src = Ipv4Addr::new(127, 0, 0, 2 + (i / IDLE_PER_SOURCE) as u8);
        let c = testkit::connect_from(src.into(), dst.into())
            .map_err(|e| format!("{}: idle connection {i}: {e}", s.name))?;
        conns.push(c);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let fds = s.fd_count().map_err(err)?;
        if fds >= fds0 + IDLE_CONNECTIONS {
            break;
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{}: only {} of {IDLE_CONNECTIONS} connections accepted",
                s.name,
                fds.saturating_sub(fds0)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Let the loop finish whatever the last accepts started.
    std::thread::sleep(Duration::from_millis(300));
    let rss1 = s.rss_bytes().map_err(err)?;
    // None of them may have been refused or answered.
    let mut buf = [0u8; 256];
    for c in &mut conns {
        c.set_nonblocking(true).map_err(err)?;
        match c.read(&mut buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Ok(0) => {
                out.invalid += 1;
                out.first_error
                    .get_or_insert(format!("{}: closed an idle connection", s.name));
            }
            Ok(n) => {
                out.invalid += 1;
                out.first_error.get_or_insert(format!(
                    "{}: wrote {:?} on an idle connection",
                    s.name,
                    String::from_utf8_lossy(&buf[..n])
                ));
            }
            Err(e) => {
                out.invalid += 1;
                out.first_error
                    .get_or_insert(format!("{}: idle connection: {e}", s.name));
            }
        }
    }
    Ok(rss1.saturating_sub(rss0) as f64 / IDLE_CONNECTIONS as f64)
}

fn idle(ctx: &Ctx, round: usize) -> CaseResult {
    let cpus = ctx.server_cpus();
    let mut out = CaseOut::default();
    let base_subject = Subject::Baseline { reply: SMALL_REPLY };
    let mut measure = |subject: &Subject| with_server(subject, cpus.as_deref(), |s| idle_bytes(s, &mut out));
    let (t, b) = if round.is_multiple_of(2) {
        let t = measure(&ctx.taskd())?;
        (t, measure(&base_subject)?)
    } else {
        let b = measure(&base_subject)?;
        (measure(&ctx.taskd())?, b)
    };
    out.rows.push((Row::IdleBytes, t, b));
    out.note = format!("taskd {t:.0} B/conn | baseline {b:.0} B/conn (VmRSS delta / {IDLE_CONNECTIONS})");
    Ok(out)
}

fn sched(ctx: &Ctx) -> CaseResult {
    let (batch, reps) = if ctx.quick { (100_000, 3) } else { (300_000, 5) };
    let shallow = inproc::sched_ns_per_task(SCHED_SHALLOW, batch, reps);
    let deep = inproc::sched_ns_per_task(SCHED_DEEP, batch, reps);
    Ok(CaseOut {
        rows: vec![(Row::SchedCost, deep, shallow)],
        note: format!(
            "{SCHED_SHALLOW} queued: {shallow:.1} ns/task | {SCHED_DEEP} queued: {deep:.1} ns/task"
        ),
        ..CaseOut::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_parse_by_name_and_number() {
        assert_eq!(Case::parse("small"), Some(Case::Small));
        assert_eq!(Case::parse("PI"), Some(Case::Pi));
        assert_eq!(Case::parse("7"), Some(Case::Sched));
        assert_eq!(Case::parse("8"), Some(Case::Http));
        assert_eq!(Case::parse("9"), Some(Case::Parse));
        assert_eq!(Case::parse("12"), Some(Case::Kernels));
        assert_eq!(Case::parse("13"), None);
        assert_eq!(Case::parse("nosuch"), None);
    }

    #[test]
    fn pi_replies_are_checked() {
        assert!(pi_reply_ok("OK 3.141 samples=100000000 chunks=2", 100_000_000, 2));
        assert!(pi_reply_ok("OK 3.08 samples=1000 chunks=2", 1000, 2));
        assert!(!pi_reply_ok("OK 3.3 samples=100000000 chunks=2", 100_000_000, 2));
        assert!(!pi_reply_ok("OK 3.14 samples=1000 chunks=1", 1000, 2));
        assert!(!pi_reply_ok("ERR range x", 1000, 1));
    }

    #[test]
    fn every_row_belongs_to_a_case_and_has_an_index() {
        for (i, r) in Row::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            assert!(Case::ALL.contains(&r.case()));
        }
    }
}
