//! The one way the tests start taskd: [`Launch`], a builder of the
//! configuration and of what else a test needs around the daemon, whose
//! `start()` spawns the real binary on a free loopback port with a
//! temporary configuration and waits until it takes connections. The
//! [`Daemon`] it returns kills taskd when dropped, also when the test fails.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::client::{LOCALHOST, LineClient, parse_info, udp_ask, udp_socket};
use super::http::{HttpConn, http_config};
use super::proc::Proc;

/// The taskd binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_taskd");

/// TCP and UDP listeners of the line protocol on `port`, then `extra`.
pub fn line_config(port: u16, extra: &str) -> String {
    format!(
        "[[listener]]\nproto = \"tcp\"\naddress = \"127.0.0.1:{port}\"\n\n\
         [[listener]]\nproto = \"udp\"\naddress = \"127.0.0.1:{port}\"\n\n{extra}\n"
    )
}

/// How to start taskd: its configuration for a free port, and what else a
/// test needs around it (environment, files, a descriptor limit). Start
/// from [`Launch::line`], [`Launch::http`] or [`Launch::config`], add
/// what is needed, then [`Launch::start`].
pub struct Launch<'a> {
    make: Box<dyn Fn(u16) -> String + 'a>,
    env: Vec<(String, String)>,
    files: Vec<(String, String)>,
    config_dir: Option<String>,
    nofile: Option<u64>,
    fsize: Option<u64>,
    note: String,
}

impl<'a> Launch<'a> {
    /// The line protocol over TCP and UDP on one free port, then `extra`
    /// (tables of the configuration file).
    pub fn line(extra: &str) -> Launch<'a> {
        let extra = extra.to_string();
        Launch::config(move |port| line_config(port, &extra))
    }

    /// One HTTP listener on a free port, then `extra`.
    pub fn http(extra: &str) -> Launch<'a> {
        let extra = extra.to_string();
        Launch::config(move |port| http_config(port, &extra))
    }

    /// The configuration `make(port)` for a free port: its first listener
    /// must be a stream listener on 127.0.0.1:port, the one `start` waits
    /// for.
    pub fn config(make: impl Fn(u16) -> String + 'a) -> Launch<'a> {
        Launch {
            make: Box::new(make),
            env: Vec::new(),
            files: Vec::new(),
            config_dir: None,
            nofile: None,
            fsize: None,
            note: String::new(),
        }
    }

    /// Extra environment variables for the daemon (set after `RUST_LOG`,
    /// so they may override it).
    pub fn env(mut self, vars: &[(&str, &str)]) -> Self {
        self.env
            .extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self
    }

    /// Files (paths relative to the config file's folder) written before
    /// the daemon starts.
    pub fn files(mut self, files: &[(&str, String)]) -> Self {
        self.files
            .extend(files.iter().map(|(name, text)| (name.to_string(), text.clone())));
        self
    }

    /// Puts the config file and the `files` in the subfolder `sub` of the
    /// daemon's folder; the working directory stays the daemon's folder.
    pub fn config_in(mut self, sub: &str) -> Self {
        self.config_dir = Some(sub.to_string());
        self
    }

    /// RLIMIT_NOFILE of the daemon, soft and hard, set in the child before
    /// it execs taskd (so taskd cannot raise it).
    pub fn nofile(mut self, limit: u64) -> Self {
        self.nofile = Some(limit);
        self.note(&format!("under RLIMIT_NOFILE {limit}"))
    }

    /// RLIMIT_FSIZE of the daemon, with SIGXFSZ ignored: writes past
    /// `bytes` fail with EFBIG, as on a full disk (which sends no signal).
    pub fn fsize(mut self, bytes: u64) -> Self {
        self.fsize = Some(bytes);
        self.note(&format!("under RLIMIT_FSIZE {bytes}"))
    }

    /// Words added to the panic message when the daemon does not start.
    pub fn note(mut self, what: &str) -> Self {
        self.note.push(' ');
        self.note.push_str(what);
        self
    }

    /// Starts taskd in a fresh temporary folder (its working directory;
    /// `RUST_LOG=info`, stderr to `stderr.log` there) and waits until its
    /// port takes connections, retrying on another port if the chosen one
    /// was taken meanwhile.
    pub fn start(self) -> Daemon {
        let mut last = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("temporary folder");
            let config_dir = match &self.config_dir {
                Some(sub) => dir.path().join(sub),
                None => dir.path().to_path_buf(),
            };
            for (name, text) in &self.files {
                let path = config_dir.join(name);
                std::fs::create_dir_all(path.parent().expect("a parent")).expect("create folders");
                std::fs::write(&path, text).expect("write a file");
            }
            std::fs::create_dir_all(&config_dir).expect("create the config folder");
            let port = testkit::free_port().expect("a free port");
            let config = config_dir.join("taskd.toml");
            std::fs::write(&config, (self.make)(port)).expect("write config");
            let mut cmd = Command::new(BIN);
            cmd.arg("--config")
                .arg(&config)
                .current_dir(dir.path())
                .env("RUST_LOG", "info")
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(
                    std::fs::File::create(dir.path().join("stderr.log")).expect("stderr log"),
                ));
            if let Some(bytes) = self.fsize {
                // SAFETY: the closure runs in the forked child before exec
                // and only calls signal(2) and setrlimit(2), which are
                // async-signal-safe; it allocates nothing and touches no lock.
                unsafe {
                    cmd.pre_exec(move || {
                        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                        let lim = libc::rlimit {
                            rlim_cur: bytes as libc::rlim_t,
                            rlim_max: bytes as libc::rlim_t,
                        };
                        if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                            return Err(io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
            }
            if let Some(limit) = self.nofile {
                // SAFETY: the closure runs in the forked child before exec
                // and only calls setrlimit(2), which is async-signal-safe;
                // it allocates nothing and touches no lock.
                unsafe {
                    cmd.pre_exec(move || {
                        let lim = libc::rlimit {
                            rlim_cur: limit as libc::rlim_t,
                            rlim_max: limit as libc::rlim_t,
                        };
                        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                            return Err(io::Error::last_os_error());
                        }
                        Ok(())
                    });
                }
            }
            let mut proc = Proc::new(cmd.spawn().expect("start taskd"));
            let tcp = SocketAddr::from(([127, 0, 0, 1], port));
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Some(status) = proc.try_wait() {
                    last = format!(
                        "taskd exited with {status}: {}",
                        std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default()
                    );
                    break;
                }
                if TcpStream::connect_timeout(&tcp, Duration::from_millis(200)).is_ok() {
                    return Daemon {
                        proc,
                        dir,
                        port,
                        tcp,
                        udp: tcp,
                        config,
                    };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("taskd did not start{}: {last}", self.note);
    }
}

/// A running taskd, killed when dropped.
pub struct Daemon {
    proc: Proc,
    /// Its folder: working directory, `stderr.log`, and the config file
    /// unless `Launch::config_in` put it in a subfolder.
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// 127.0.0.1:port, for TCP (or HTTP, or TLS).
    pub tcp: SocketAddr,
    /// The same address, for UDP.
    pub udp: SocketAddr,
    /// The configuration file.
    pub config: PathBuf,
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// Everything taskd wrote on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// A file in the daemon's folder.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Rewrites the configuration file (for SIGHUP tests).
    pub fn rewrite_config(&self, text: &str) {
        std::fs::write(&self.config, text).expect("rewrite config");
    }

    /// Sends `sig` (libc::SIGTERM, SIGHUP, ...) to the daemon.
    pub fn send_signal(&self, sig: i32) {
        self.proc.signal(sig);
    }

    /// The exit status if the daemon has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.proc.try_wait()
    }

    /// Waits at most `timeout` for the daemon to exit; None if it is still
    /// running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.proc.wait_exit(timeout)
    }

    /// A connected line client with read timeouts, so a missing reply fails
    /// the test instead of hanging it.
    pub fn connect(&self) -> LineClient {
        LineClient::connect(self.tcp)
    }

    /// Sends `lines` on one connection, half-closes, and returns every
    /// reply line until the daemon closes.
    pub fn session(&self, lines: &[&str]) -> Vec<String> {
        let mut c = self.connect();
        for l in lines {
            c.send(l);
        }
        c.finish()
    }

    /// One UDP request, one reply.
    pub fn udp(&self, line: &str) -> String {
        let s = udp_socket(LOCALHOST, Duration::from_secs(10));
        udp_ask(&s, self.udp, line.as_bytes()).expect("udp reply")
    }

    /// The figures of `info`, asked on a new connection.
    pub fn info_map(&self) -> HashMap<String, String> {
        parse_info(&self.connect().ask("info"))
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// A raw HTTP connection to the daemon's port.
    pub fn http(&self) -> HttpConn {
        HttpConn::connect(self.tcp)
    }
}
