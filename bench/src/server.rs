//! Starting and stopping the servers under test: taskd with a temporary
//! configuration, or this program's own baseline loop, each on a free
//! loopback port, optionally under `taskset`. A `ServerProc` kills its
//! process when dropped, so no server outlives the benchmark, even on an
//! error or a panic.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// How long a server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A folder under the system temp dir, removed with everything in it on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> io::Result<TempDir> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!("taskd-bench-{tag}-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(TempDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// What to start.
pub enum Subject<'a> {
    /// The taskd binary, with its default configuration except for the
    /// listeners (TCP and UDP on a free loopback port) and the folder it
    /// writes into (the results log and users.json go to a temp dir).
    Taskd { bin: &'a Path },
    /// `taskd-bench serve`: the bare mio loop, answering `reply` to every line.
    Baseline { reply: &'a str },
}

/// A running server; killed on drop.
pub struct ServerProc {
    child: Child,
    pub name: &'static str,
    pub addr: SocketAddr,
    dir: TempDir,
}

impl ServerProc {
    /// Starts `subject`, under `taskset -c cpus` when given, and waits until
    /// it accepts TCP connections.
    pub fn start(subject: &Subject, cpus: Option<&str>) -> io::Result<ServerProc> {
        let dir = TempDir::new("server")?;
        let port = testkit::free_port()?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let (program, args, name): (PathBuf, Vec<String>, &'static str) = match subject {
            Subject::Taskd { bin } => {
                let conf = dir.path().join("taskd.toml");
                let mut f = File::create(&conf)?;
                write!(
                    f,
                    "# written by taskd-bench: the defaults, listening on a free loopback port\n\
                     [[listener]]\nproto = \"tcp\"\naddress = \"{addr}\"\n\n\
                     [[listener]]\nproto = \"udp\"\naddress = \"{addr}\"\n"
                )?;
                (
                    bin.to_path_buf(),
                    vec!["--config".into(), conf.display().to_string()],
                    "taskd",
                )
            }
            Subject::Baseline { reply } => (
                std::env::current_exe()?,
                vec![
                    "serve".into(),
                    "--addr".into(),
                    addr.to_string(),
                    "--reply".into(),
                    reply.to_string(),
                ],
                "baseline",
            ),
        };
        let mut cmd = match cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.arg("-c").arg(cpus).arg(&program);
                c
            }
            None => Command::new(&program),
        };
        let stderr = File::create(dir.path().join("stderr.log"))?;
        cmd.args(&args)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .env("RUST_LOG", "info");
        for var in [
            "LOGS_DIRECTORY",
            "STATE_DIRECTORY",
            "NOTIFY_SOCKET",
            "LISTEN_FDS",
            "LISTEN_PID",
            "LISTEN_FDNAMES",
            "WATCHDOG_USEC",
            "WATCHDOG_PID",
        ] {
            cmd.env_remove(var);
        }
        let child = cmd
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot start {}: {e}", program.display())))?;
        let mut server = ServerProc {
            child,
            name,
            addr,
            dir,
        };
        server.wait_listening()?;
        Ok(server)
    }

    fn wait_listening(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "{} exited at startup ({status}): {}",
                    self.name,
                    self.stderr_tail()
                )));
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(io::Error::other(format!(
                    "{} did not listen on {} within {START_TIMEOUT:?}: {}",
                    self.name,
                    self.addr,
                    self.stderr_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails when the server has exited.
    pub fn check_alive(&mut self) -> io::Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => Err(io::Error::other(format!(
                "{} exited ({status}): {}",
                self.name,
                self.stderr_tail()
            ))),
        }
    }

    /// The last lines the server wrote on stderr.
    pub fn stderr_tail(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(self.dir.path().join("stderr.log")) {
            let _ = f.read_to_string(&mut s);
        }
        let lines: Vec<&str> = s.lines().collect();
        let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
        if tail.is_empty() {
            "(no stderr output)".into()
        } else {
            tail
        }
    }

    /// Resident memory (VmRSS) in bytes.
    pub fn rss_bytes(&self) -> io::Result<u64> {
        Ok(testkit::process::rss_kib(self.pid())? * 1024)
    }

    /// Open descriptors of the server.
    pub fn fd_count(&self) -> io::Result<usize> {
        testkit::process::fd_count(self.pid())
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
