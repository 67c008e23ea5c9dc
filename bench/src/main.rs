//! taskd-bench: runs taskd (target/release/taskd) and a baseline alternately
//! over several rounds and prints the medians and the ratio taskd/baseline
//! of each case. See BENCHMARKS.md at the root of the repository.
//!
//! ```text
//! cargo build --release
//! cargo run --release -p taskd-bench -- [--rounds N] [--pin] [--quick] [--case NAME]
//! cargo run --release -p taskd-bench -- --profile     # callgrind: instructions per request
//! ```
//!
//! Helper commands make up the rest of the program: `serve` is the baseline
//! server (a bare mio loop), `load` the load generator on its own, against
//! any server (for example taskd under valgrind), and `sched` the scheduler
//! measurement at one queue depth.

mod affinity;
mod baseline;
mod cases;
mod http;
mod inproc;
mod load;
mod nginx;
mod profile;
mod report;
mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};

use cases::{Case, Ctx};

#[derive(Parser)]
#[command(
    name = "taskd-bench",
    about = "Benchmark of taskd against a bare mio loop and in-process baselines",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Rounds; each runs taskd and the baseline once per case, in turn.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
    rounds: u32,
    /// Pin the servers to the first CPU (taskset -c) and the load generator
    /// to the second.
    #[arg(long)]
    pin: bool,
    /// Shorter measurements (about 35 s in all instead of about 1.5 min).
    #[arg(long)]
    quick: bool,
    /// Run only these cases (repeatable, or comma-separated): small,
    /// pipelined, udp, sum, pi, idle, sched, http, parse, floats, stats,
    /// kernels (or 1 to 12).
    #[arg(long = "case", value_name = "NAME")]
    cases: Vec<String>,
    /// The taskd binary [default: target/release/taskd of the workspace].
    #[arg(long, value_name = "PATH")]
    taskd: Option<PathBuf>,
    /// Seconds measured per server and network case, taken in slices of
    /// about 0.25 s in turn with the other server [default: 2, or 0.6 with
    /// --quick].
    #[arg(long, value_name = "SECONDS")]
    duration: Option<f64>,
    /// Instead of timing: user-space instructions per request under
    /// callgrind (valgrind), taskd against the bare loop over TCP
    /// (pipelined) and UDP and against nginx over HTTP (the cases
    /// pipelined, udp and http, or those of them named with --case).
    #[arg(long)]
    profile: bool,
    /// Where --profile writes its callgrind files and top-function lists
    /// [default: bench-profile in the target directory].
    #[arg(long, value_name = "DIR")]
    profile_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// The baseline server: a bare mio loop answering every line with a
    /// fixed reply, over TCP and UDP on the same port.
    Serve(ServeArgs),
    /// The load generator alone, against a server that is already running.
    Load(LoadArgs),
    /// The scheduler measurement alone, at one queue depth (for profiling).
    Sched(SchedArgs),
}

#[derive(Args)]
struct SchedArgs {
    /// Tasks queued.
    #[arg(long, default_value_t = cases::SCHED_DEEP)]
    depth: usize,
    /// Tasks pushed, admitted and popped per measurement.
    #[arg(long, default_value_t = 300_000)]
    batch: usize,
    #[arg(long, default_value_t = 5)]
    reps: usize,
}

#[derive(Args)]
struct ServeArgs {
    #[arg(long, default_value = "127.0.0.1:7701")]
    addr: SocketAddr,
    /// The reply to every line.
    #[arg(long, default_value = cases::SMALL_REPLY)]
    reply: String,
    /// Exit after this many seconds at the latest.
    #[arg(long, default_value_t = 900)]
    max_seconds: u64,
}

#[derive(Args)]
struct LoadArgs {
    #[arg(long, default_value = "127.0.0.1:7700")]
    addr: SocketAddr,
    /// Send datagrams instead of using TCP connections.
    #[arg(long, conflicts_with = "http")]
    udp: bool,
    /// HTTP/1.1 keep-alive: each --request is a path to GET and its
    /// --expect the exact body of the 200 response [default: the HTTP
    /// case's /v1/max request and its body].
    #[arg(long)]
    http: bool,
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// Requests in flight per connection.
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 2.0)]
    duration: f64,
    /// Seconds of warm-up before the measurement.
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,
    /// A request of the mix (repeatable; used round-robin).
    #[arg(long = "request", value_name = "LINE")]
    requests: Vec<String>,
    /// The reply the request of the same position must get, or its prefix
    /// up to a space [default: "OK 10" for the default request, else "OK"].
    #[arg(long = "expect", value_name = "REPLY")]
    expects: Vec<String>,
    /// Milliseconds after which a UDP request counts as lost.
    #[arg(long, default_value_t = 250)]
    udp_timeout_ms: u64,
    /// Pin the load generator to this CPU.
    #[arg(long, value_name = "CPU")]
    pin_cpu: Option<usize>,
}

/// Median of a list (mean of the middle two for an even count); NaN if empty.
pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn secs(s: f64, what: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s)
        .ok()
        .filter(|d| *d <= Duration::from_secs(3600))
        .ok_or_else(|| format!("{what} must be between 0 and 3600 seconds, not {s}"))
}

fn run_load(a: LoadArgs) -> Result<bool, String> {
    if let Some(cpu) = a.pin_cpu
        && !affinity::pin_current_thread(&[cpu])
    {
        return Err(format!("cannot pin to CPU {cpu}"));
    }
    let mix: Vec<load::Req> = if a.http {
        let paths = if a.requests.is_empty() {
            vec![http::HTTP_PATH.to_string()]
        } else {
            a.requests.clone()
        };
        paths
            .iter()
            .enumerate()
            .map(|(i, p)| {
                http::request(
                    p,
                    a.addr,
                    a.expects.get(i).map_or(http::HTTP_BODY, String::as_str),
                )
            })
            .collect()
    } else if a.requests.is_empty() {
        let expect = a.expects.first().map_or(cases::SMALL_REPLY, String::as_str);
        vec![load::Req::new(cases::SMALL_REQUEST, expect)]
    } else {
        a.requests
            .iter()
            .enumerate()
            .map(|(i, r)| load::Req::new(r, a.expects.get(i).map_or("OK", String::as_str)))
            .collect()
    };
    testkit::process::raise_nofile();
    let spec = load::LoadSpec {
        addr: a.addr,
        transport: if a.udp {
            load::Transport::Udp
        } else if a.http {
            load::Transport::Http
        } else {
            load::Transport::Tcp
        },
        connections: a.connections,
        pipeline: a.pipeline,
        warmup: secs(a.warmup, "--warmup")?,
        duration: secs(a.duration, "--duration")?.max(Duration::from_millis(10)),
        mix,
        udp_timeout: Duration::from_millis(a.udp_timeout_ms.max(1)),
    };
    let r = load::run(&spec).map_err(|e| format!("load: {e}"))?;
    println!("{}", r.summary());
    Ok(r.invalid == 0)
}

/// The workspace's target directory.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")))
}

/// The release binary of the workspace's target directory.
fn default_taskd() -> PathBuf {
    target_dir().join("release").join("taskd")
}

/// Warns when a source file of taskd is newer than the binary.
fn warn_if_stale(bin: &std::path::Path) {
    let Ok(built) = std::fs::metadata(bin).and_then(|m| m.modified()) else {
        return;
    };
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let mut stack = vec![root.join("src"), root.join("Cargo.toml")];
    let mut seen = 0;
    while let Some(p) = stack.pop() {
        seen += 1;
        if seen > 10_000 {
            return;
        }
        if p.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        } else if let Ok(m) = std::fs::metadata(&p).and_then(|m| m.modified())
            && m > built
        {
            eprintln!(
                "warning: {} is newer than {}; run `cargo build --release` first to measure the current source",
                p.display(),
                bin.display()
            );
            return;
        }
    }
}

fn parse_cases(names: &[String]) -> Result<Vec<Case>, String> {
    if names.is_empty() {
        return Ok(Case::ALL.to_vec());
    }
    let mut out = Vec::new();
    for n in names.iter().flat_map(|n| n.split(',')) {
        let c = Case::parse(n).ok_or_else(|| {
            let all: Vec<&str> = Case::ALL.iter().map(|c| c.name()).collect();
            format!("unknown case {n:?}; the cases are {}", all.join(", "))
        })?;
        if !out.contains(&c) {
            out.push(c);
        }
    }
    // Table order, whatever order they were named in.
    out.sort_by_key(|c| Case::ALL.iter().position(|a| a == c));
    Ok(out)
}

fn run_suite(cli: Cli) -> Result<bool, String> {
    let started = Instant::now();
    let selected = parse_cases(&cli.cases)?;
    let taskd_bin = cli.taskd.clone().unwrap_or_else(default_taskd);
    if cli.profile || selected.iter().any(|c| c.needs_taskd_binary()) {
        if !taskd_bin.is_file() {
            return Err(format!(
                "{} not found: build it first with `cargo build --release` (or pass --taskd PATH)",
                taskd_bin.display()
            ));
        }
        warn_if_stale(&taskd_bin);
    }
    if cli.profile {
        let settings = profile::Settings {
            taskd_bin,
            out_dir: cli
                .profile_dir
                .unwrap_or_else(|| target_dir().join("bench-profile")),
            kinds: profile::Kind::for_cases(&selected, !cli.cases.is_empty()),
        };
        profile::run(&settings)?;
        println!("total time {:.0} s", started.elapsed().as_secs_f64());
        return Ok(true);
    }
    let nofile = testkit::process::raise_nofile();
    if selected.contains(&Case::Idle) && nofile < cases::IDLE_CONNECTIONS as u64 + 256 {
        return Err(format!(
            "the open files limit is {nofile}: the idle case needs {} descriptors",
            cases::IDLE_CONNECTIONS + 256
        ));
    }
    // Before pinning, which would make this process see one CPU.
    let machine = report::Machine::detect();
    let all_cpus = affinity::allowed_cpus();
    let mut pin = cli.pin;
    if pin && all_cpus.len() < 2 {
        eprintln!("warning: --pin needs two CPUs, this process may use {all_cpus:?}; not pinning");
        pin = false;
    }
    if pin && !affinity::pin_current_thread(&[all_cpus[1]]) {
        return Err(format!("cannot pin the load generator to CPU {}", all_cpus[1]));
    }
    let duration = match cli.duration {
        Some(s) => secs(s, "--duration")?.max(Duration::from_millis(100)),
        None if cli.quick => Duration::from_millis(600),
        None => Duration::from_secs(2),
    };
    let warmup = if cli.quick {
        Duration::from_millis(200)
    } else {
        Duration::from_millis(500)
    };
    let sum_line = (selected.contains(&Case::Sum) || selected.contains(&Case::Stats))
        .then(|| inproc::value_line(cases::SUM_VALUES, cases::SUM_BOUND, 2024));
    let ctx = Ctx {
        taskd_bin,
        pin,
        server_cpu: all_cpus[0],
        all_cpus,
        warmup,
        duration,
        // Slices of about a quarter of a second, at most 8.
        slices: ((duration.as_secs_f64() / 0.25).round() as usize).clamp(1, 8),
        quick: cli.quick,
        sum_line,
    };
    eprintln!("{}", machine.describe());
    eprintln!(
        "taskd: {}; rounds: {}; {}; network cases: {:.1} s measured per server in {} slices, {:.1} s warm-up",
        ctx.taskd_bin.display(),
        cli.rounds,
        if pin {
            format!(
                "servers on CPU {} (taskset), load generator on CPU {}",
                ctx.server_cpu, ctx.all_cpus[1]
            )
        } else {
            "not pinned".to_string()
        },
        duration.as_secs_f64(),
        ctx.slices,
        warmup.as_secs_f64()
    );
    let mut results = report::Results::new(&selected);
    for round in 0..cli.rounds as usize {
        for &case in &selected {
            let t = Instant::now();
            let r = cases::run(case, &ctx, round);
            match &r {
                Ok(out) => eprintln!(
                    "round {}/{} {:<9} {:5.1} s  {}",
                    round + 1,
                    cli.rounds,
                    case.name(),
                    t.elapsed().as_secs_f64(),
                    out.note
                ),
                Err(e) => eprintln!(
                    "round {}/{} {:<9} FAILED: {e}",
                    round + 1,
                    cli.rounds,
                    case.name()
                ),
            }
            results.add(case, r);
        }
    }
    print!("{}", results.table(&machine, &ctx, cli.rounds as usize));
    println!("total time {:.0} s", started.elapsed().as_secs_f64());
    Ok(results.clean())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Serve(a)) => {
            baseline::serve(a.addr, a.reply.as_bytes(), Duration::from_secs(a.max_seconds))
                .map(|()| true)
                .map_err(|e| format!("serve on {}: {e}", a.addr))
        }
        Some(Command::Load(a)) => run_load(a),
        Some(Command::Sched(a)) => {
            let ns = inproc::sched_ns_per_task(a.depth, a.batch.max(1), a.reps.max(1));
            println!(
                "{} queued: {ns:.1} ns/task (push + admit + pop_ready, hrrn)",
                a.depth
            );
            Ok(true)
        }
        None => run_suite(cli),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("taskd-bench: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_lists() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&mut []).is_nan());
    }

    #[test]
    fn cases_are_deduplicated_and_ordered() {
        let names = vec!["sched,small".to_string(), "small".to_string()];
        assert_eq!(parse_cases(&names).unwrap(), vec![Case::Small, Case::Sched]);
        assert!(parse_cases(&["bogus".to_string()]).is_err());
        assert_eq!(parse_cases(&[]).unwrap().len(), 12);
    }

    #[test]
    fn command_line_parses() {
        let cli = Cli::try_parse_from(["taskd-bench", "--rounds", "2", "--pin", "--quick", "--case", "pi"])
            .unwrap();
        assert_eq!(cli.rounds, 2);
        assert!(cli.pin && cli.quick);
        assert!(Cli::try_parse_from(["taskd-bench", "--rounds", "0"]).is_err());
        let cli = Cli::try_parse_from(["taskd-bench", "load", "--udp", "--pipeline", "4"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Load(ref a)) if a.udp && a.pipeline == 4));
        let cli = Cli::try_parse_from(["taskd-bench", "load", "--http"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Load(ref a)) if a.http && !a.udp));
        assert!(Cli::try_parse_from(["taskd-bench", "load", "--http", "--udp"]).is_err());
        let cli = Cli::try_parse_from(["taskd-bench", "--profile", "--case", "http"]).unwrap();
        assert!(cli.profile);
    }
}
