//! nginx as the comparison of the HTTP case: Debian's `nginx` (or
//! `nginx-light`), never the system service, started by the benchmark with a
//! configuration of its own in the server's temporary folder. It runs in the
//! foreground as one process (`daemon off; master_process off;`: the one
//! process is the worker, so killing the child stops it all), with its
//! prefix, pid file, error log and temporary paths in that folder and the
//! access log off, and answers every request with the fixed body of the
//! case (`return 200 '...'`, `default_type application/json`).

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::http::HTTP_BODY;

/// Where nginx is looked for besides `$PATH` (Debian installs it in
/// /usr/sbin, which is not on every user's path).
const SBIN: [&str; 3] = ["/usr/sbin", "/usr/local/sbin", "/sbin"];

/// The temporary paths nginx creates at startup, with the configure flag
/// that names the compiled-in default and the module that has it.
const TEMP_PATHS: [(&str, &str, &str); 5] = [
    ("client_body_temp_path", "--http-client-body-temp-path", ""),
    (
        "proxy_temp_path",
        "--http-proxy-temp-path",
        "--without-http_proxy_module",
    ),
    (
        "fastcgi_temp_path",
        "--http-fastcgi-temp-path",
        "--without-http_fastcgi_module",
    ),
    (
        "uwsgi_temp_path",
        "--http-uwsgi-temp-path",
        "--without-http_uwsgi_module",
    ),
    (
        "scgi_temp_path",
        "--http-scgi-temp-path",
        "--without-http_scgi_module",
    ),
];

/// The nginx binary, if installed.
pub fn find() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN.iter().map(PathBuf::from))
        .map(|d| d.join("nginx"))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// `nginx -V`: the version line and the configure arguments (on stderr).
fn version_text(bin: &Path) -> io::Result<String> {
    let out = Command::new(bin).arg("-V").output()?;
    let mut s = String::from_utf8_lossy(&out.stderr).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stdout));
    Ok(s)
}

/// `nginx/1.22.1`, or "nginx" when it cannot be told.
pub fn version(bin: &Path) -> String {
    version_text(bin)
        .ok()
        .and_then(|v| {
            v.lines()
                .find_map(|l| l.strip_prefix("nginx version: "))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "nginx".into())
}

/// The temp-path directives this build knows (a directive of a module
/// left out at build time would be refused).
fn temp_directives(configure: &str) -> Vec<&'static str> {
    let flags: Vec<&str> = configure.split_whitespace().collect();
    TEMP_PATHS
        .iter()
        .filter(|(_, path_flag, without)| {
            flags.iter().any(|f| f.starts_with(path_flag)) && (without.is_empty() || !flags.contains(without))
        })
        .map(|(directive, _, _)| *directive)
        .collect()
}

/// `s` as an nginx single-quoted string.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// The configuration: one server on `addr` answering `body` to everything.
fn conf_text(dir: &Path, addr: SocketAddr, temp: &[&str], body: &str) -> String {
    let d = dir.display();
    let mut temp_lines = String::new();
    for t in temp {
        temp_lines.push_str(&format!("    {t} {d}/{};\n", t.trim_end_matches("_temp_path")));
    }
    format!(
        "# written by taskd-bench: a fixed body on {addr}, for the HTTP case\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log warn;\n\
         events {{\n    worker_connections 4096;\n}}\n\
         http {{\n\
         \x20   access_log off;\n\
         {temp_lines}\
         \x20   keepalive_requests 1000000000;\n\
         \x20   keepalive_timeout 300s;\n\
         \x20   server {{\n\
         \x20       listen {addr};\n\
         \x20       location / {{\n\
         \x20           default_type application/json;\n\
         \x20           return 200 {};\n\
         \x20       }}\n\
         \x20   }}\n\
         }}\n",
        quoted(body)
    )
}

/// Writes the configuration for `bin` into `dir` and returns nginx's
/// arguments.
pub fn prepare(bin: &Path, dir: &Path, addr: SocketAddr) -> io::Result<Vec<String>> {
    let temp = temp_directives(&version_text(bin)?);
    let conf = dir.join("nginx.conf");
    fs::write(&conf, conf_text(dir, addr, &temp, HTTP_BODY))?;
    let prefix = format!("{}/", dir.display());
    Ok(vec![
        "-p".into(),
        prefix,
        "-c".into(),
        conf.display().to_string(),
        "-e".into(),
        dir.join("error.log").display().to_string(),
        "-g".into(),
        "daemon off; master_process off;".into(),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_paths_follow_the_build() {
        let v = "nginx version: nginx/1.22.1\nconfigure arguments: --prefix=/usr/share/nginx \
                 --http-client-body-temp-path=/var/lib/nginx/body --http-proxy-temp-path=/var/lib/nginx/proxy \
                 --http-uwsgi-temp-path=/var/lib/nginx/uwsgi --without-http_uwsgi_module";
        assert_eq!(
            temp_directives(v),
            vec!["client_body_temp_path", "proxy_temp_path"]
        );
    }

    #[test]
    fn the_body_is_quoted_for_nginx() {
        assert_eq!(quoted("{\"ok\":true}\n"), "'{\"ok\":true}\\n'");
        assert_eq!(quoted("a'b\\"), "'a\\'b\\\\'");
    }

    #[test]
    fn nginx_answers_the_body_and_is_stopped_with_its_guard() {
        use crate::server::{ServerProc, Subject};
        use std::io::{Read, Write};
        let Some(bin) = find() else {
            eprintln!("nginx not installed; test skipped");
            return;
        };
        let server = ServerProc::start(&Subject::Nginx { bin: &bin }, None).unwrap();
        let pid = server.pid();
        let mut s = std::net::TcpStream::connect(server.addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        s.write_all(&crate::http::get(crate::http::HTTP_PATH, server.addr))
            .unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        let cut = loop {
            match crate::http::cut_response(&buf) {
                crate::http::Cut::Incomplete => {
                    let n = s.read(&mut chunk).unwrap();
                    assert!(n > 0, "nginx closed the connection");
                    buf.extend_from_slice(&chunk[..n]);
                }
                other => break other,
            }
        };
        let crate::http::Cut::Response {
            status, body, close, ..
        } = cut
        else {
            panic!("{cut:?}");
        };
        assert_eq!((status, close), (200, false));
        assert_eq!(&buf[body], HTTP_BODY.as_bytes());
        assert!(String::from_utf8_lossy(&buf).contains("Content-Type: application/json\r\n"));
        drop(server);
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "nginx outlived its guard"
        );
    }

    #[test]
    fn the_configuration_stays_in_its_folder() {
        let dir = Path::new("/tmp/x");
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let c = conf_text(dir, addr, &["client_body_temp_path"], "{}\n");
        assert!(c.contains("pid /tmp/x/nginx.pid;"));
        assert!(c.contains("error_log /tmp/x/error.log warn;"));
        assert!(c.contains("client_body_temp_path /tmp/x/client_body;"));
        assert!(c.contains("access_log off;"));
        assert!(c.contains("listen 127.0.0.1:8080;"));
        assert!(c.contains("default_type application/json;"));
        assert!(c.contains("return 200 '{}\\n';"));
        assert!(!c.contains("daemon") && !c.contains("master_process"));
        assert_eq!(c.matches('{').count(), c.matches('}').count());
    }
}
