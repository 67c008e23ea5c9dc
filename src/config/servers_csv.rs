//! The seed's server list as a listener source (taskd.toml(5),
//! `servers_csv`).
//!
//! One csv is shared by every host of a deployment; each host serves only its
//! own rows. "Its own" is decided by binding the row's address with port 0
//! (the kernel refuses addresses the host does not have; no packet is sent),
//! or, when `server.self_ip` is set, by that list alone: the operator's
//! explicit word wins over the probe, and a wrong address then fails loudly
//! at bind time instead of being skipped.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::Path;

use super::{DEFAULT_REUSE_PORT, ListenerConfig, Proto};

/// The suffix of the origin of every listener imported from a csv.
pub(super) const ORIGIN_SUFFIX: &str = " (servers.csv)";

/// The listeners of the rows this host serves. `key_at` is where
/// `servers_csv` was set ("path:line"), for an unreadable csv.
pub(super) fn import(
    path: &Path,
    self_ip: &[IpAddr],
    key_at: &str,
) -> Result<Vec<ListenerConfig>, Vec<String>> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![format!("{key_at}: servers_csv {name}: cannot read: {e}")])?;
    let mut errors = Vec::new();
    let mut listeners = Vec::new();
    let mut probed: HashMap<IpAddr, bool> = HashMap::new();
    let mut rows = 0;
    let mut first_row = true;
    // One csv reader per line: the reader's own line numbers skip blank and
    // comment lines, and a row never spans lines, so counting here is exact.
    // A spreadsheet's export may start with a byte order mark.
    for (i, line) in text.trim_start_matches('\u{feff}').lines().enumerate() {
        let at = format!("{name}:{}", i + 1);
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(line.as_bytes());
        let record = match reader.records().next() {
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                errors.push(format!("{at}: {e}"));
                continue;
            }
            None => continue,
        };
        let fields: Vec<&str> = record.iter().collect();
        let first = std::mem::replace(&mut first_row, false);
        if first && fields.first().is_some_and(|f| f.eq_ignore_ascii_case("ip")) {
            continue;
        }
        let row = match parse_row(&fields) {
            Ok(r) => r,
            Err(e) => {
                errors.push(format!("{at}: {e}"));
                continue;
            }
        };
        rows += 1;
        let (ip, port, protos) = row;
        let served = if self_ip.is_empty() {
            *probed.entry(ip).or_insert_with(|| on_this_host(ip, &at))
        } else {
            self_ip.contains(&ip)
        };
        if !served {
            let why = if self_ip.is_empty() {
                "not an address of this host"
            } else {
                "not in server.self_ip"
            };
            log::info!("{at}: skipping {}: {why}", SocketAddr::new(ip, port));
            continue;
        }
        for &proto in protos {
            listeners.push(ListenerConfig {
                proto,
                address: SocketAddr::new(ip, port),
                allow: None,
                ops: None,
                recv_buffer: None,
                reuse_port: DEFAULT_REUSE_PORT,
                cert: None,
                key: None,
                client_ca: None,
                allow_user_override: false,
                origin: format!("{at}{ORIGIN_SUFFIX}"),
            });
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    if listeners.is_empty() {
        let message = match (rows, self_ip.is_empty()) {
            (0, _) => "no row to serve: the file has no ip,port row (only blank lines, comments or a header)"
                .to_string(),
            (n, true) => format!(
                "no row served: the address of none of its {} is on this host",
                plural(n)
            ),
            (n, false) => format!(
                "no row served: none of its {} has an address in server.self_ip",
                plural(n)
            ),
        };
        return Err(vec![format!("{name}: {message}")]);
    }
    Ok(listeners)
}

/// "1 row", "3 rows".
fn plural(n: usize) -> String {
    if n == 1 {
        "1 row".to_string()
    } else {
        format!("{n} rows")
    }
}

type Row = (IpAddr, u16, &'static [Proto]);

/// `ip,port[,proto]`.
fn parse_row(fields: &[&str]) -> Result<Row, String> {
    if !(2..=3).contains(&fields.len()) {
        return Err(format!("expected ip,port[,proto], found {} fields", fields.len()));
    }
    let ip = fields[0]
        .parse::<IpAddr>()
        .map_err(|_| format!("`{}` is not an IP address", fields[0]))?;
    let port = match fields[1].parse::<u16>() {
        Ok(p) if p > 0 => p,
        _ => return Err(format!("`{}` is not a port (1 to 65535)", fields[1])),
    };
    let protos: &'static [Proto] = match fields.get(2).copied().unwrap_or("") {
        "" => &[Proto::Tcp, Proto::Udp],
        p if p.eq_ignore_ascii_case("both") => &[Proto::Tcp, Proto::Udp],
        p if p.eq_ignore_ascii_case("tcp") => &[Proto::Tcp],
        p if p.eq_ignore_ascii_case("udp") => &[Proto::Udp],
        p => return Err(format!("proto must be tcp, udp or both, found `{p}`")),
    };
    Ok((ip, port, protos))
}

/// Whether `ip` is an address of this host: binding it with port 0 succeeds
/// exactly then. Any other failure than "not available" is logged, and the
/// row skipped as well, since it could not be served either.
fn on_this_host(ip: IpAddr, at: &str) -> bool {
    match UdpSocket::bind(SocketAddr::new(ip, 0)) {
        Ok(_) => true,
        Err(e) if e.kind() == ErrorKind::AddrNotAvailable => false,
        Err(e) => {
            log::warn!("{at}: cannot tell whether {ip} is on this host: {e}");
            false
        }
    }
}
