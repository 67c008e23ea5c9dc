//! Figures of a running process from /proc — resident memory now and at its
//! peak, CPU time, open descriptors — and raising this process's own limit
//! of open descriptors (tests and the benchmark open thousands of sockets).

use std::io;

/// A `kB` field of /proc/<pid>/status (`VmRSS`, `VmHWM`, …), in KiB.
pub fn status_kib(pid: u32, field: &str) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_status_kib(&status, field)
        .ok_or_else(|| io::Error::other(format!("no {field} in /proc/{pid}/status")))
}

/// The value of `field:` in the text of /proc/<pid>/status, in KiB.
fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Resident memory of process `pid` now, in KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    status_kib(pid, "VmRSS")
}

/// The peak resident memory of process `pid` since it started, in KiB
/// (`VmHWM`, the high-water mark): catches a peak between two samples.
pub fn peak_rss_kib(pid: u32) -> io::Result<u64> {
    status_kib(pid, "VmHWM")
}

/// CPU time process `pid` has used so far, user plus system, in seconds
/// (utime and stime, fields 14 and 15 of /proc/<pid>/stat).
pub fn cpu_secs(pid: u32) -> io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat)
        .map(|ticks| {
            // SAFETY: sysconf only reads a system constant.
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
            ticks as f64 / hz.max(1) as f64
        })
        .ok_or_else(|| io::Error::other(format!("malformed /proc/{pid}/stat")))
}

/// utime + stime of the text of /proc/<pid>/stat, in clock ticks.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name, in parentheses, may hold spaces: count the fields
    // after its closing parenthesis, which start at field 3.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Option<u64> { fields.get(i - 3)?.parse().ok() };
    Some(ticks(14)? + ticks(15)?)
}

/// Open descriptors of process `pid`.
pub fn fd_count(pid: u32) -> io::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// Raises this process's soft RLIMIT_NOFILE to its hard limit; returns the
/// soft limit in force afterwards (0 when it cannot be read).
pub fn raise_nofile() -> u64 {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return want.rlim_cur;
            }
        }
        lim.rlim_cur
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_are_read_in_kib() {
        let status =
            "Name:\ttaskd\nVmPeak:\t  100 kB\nVmHWM:\t    4096 kB\nVmRSS:\t    2048 kB\nThreads:\t3\n";
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(2048));
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(4096));
        assert_eq!(parse_status_kib("Name: x\n", "VmRSS"), None);
    }

    #[test]
    fn cpu_ticks_skip_a_command_name_with_spaces() {
        let stat = "42 (a b) S 1 1 1 0 -1 0 0 0 0 0 7 5 0 0 20 0 1 0";
        assert_eq!(parse_cpu_ticks(stat), Some(12));
    }

    #[test]
    fn figures_of_this_process() {
        let me = std::process::id();
        let rss = rss_kib(me).unwrap();
        assert!(rss > 0);
        assert!(peak_rss_kib(me).unwrap() >= rss);
        assert!(cpu_secs(me).unwrap() >= 0.0);
        assert!(fd_count(me).unwrap() >= 3);
        assert!(raise_nofile() >= 3);
    }
}
