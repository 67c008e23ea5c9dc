//! The blocking client of the line protocol: one request line out, one reply
//! line back, over TCP or over anything else that reads and writes (a TLS
//! stream).
//!
//! Every read has a timeout on TCP (set at connect), so a missing reply
//! fails instead of hanging. Replies are decoded as lossy UTF-8 (a hostile
//! request may be echoed back in an error message); a reply cut short by
//! the end of the stream is an error, never a reply.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use crate::net::CONNECT_TIMEOUT;

/// A line-protocol client over `S` (a TCP stream unless said otherwise).
pub struct LineClient<S: Read + Write = TcpStream> {
    reader: BufReader<S>,
}

impl LineClient<TcpStream> {
    /// The read timeout of [`LineClient::connect`]: long enough for any
    /// reply of a loaded daemon, short enough that a lost one fails a test.
    pub const TIMEOUT: Duration = Duration::from_secs(20);

    /// A connection to `addr` with `timeout` on every read.
    pub fn try_connect(addr: SocketAddr, timeout: Duration) -> io::Result<Self> {
        Self::try_from_tcp(TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?, timeout)
    }

    /// A client on a connected stream: `timeout` on every read, and no
    /// Nagle delay (each request is one write, sent at once).
    pub fn try_from_tcp(stream: TcpStream, timeout: Duration) -> io::Result<Self> {
        stream.set_read_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(Self::over(stream))
    }

    /// A connection to `addr` with [`Self::TIMEOUT`] on every read; panics
    /// when it cannot connect.
    pub fn connect(addr: SocketAddr) -> Self {
        Self::try_connect(addr, Self::TIMEOUT).unwrap_or_else(|e| panic!("connect to {addr}: {e}"))
    }

    /// A client on a connected stream (see [`Self::try_from_tcp`]); panics
    /// when the socket options cannot be set.
    pub fn from_tcp(stream: TcpStream, timeout: Duration) -> Self {
        Self::try_from_tcp(stream, timeout).expect("socket options of a client")
    }

    /// The socket.
    pub fn stream(&self) -> &TcpStream {
        self.reader.get_ref()
    }

    /// Sets the timeout of every read from now on.
    pub fn set_timeout(&self, timeout: Duration) {
        self.stream()
            .set_read_timeout(Some(timeout))
            .expect("read timeout");
    }

    /// Half-closes: the daemon sees EOF, answers what it owes and closes.
    pub fn shutdown_write(&self) {
        self.stream().shutdown(Shutdown::Write).expect("shutdown");
    }

    /// Half-closes and returns every remaining reply until the daemon
    /// closes the connection.
    pub fn finish(mut self) -> Vec<String> {
        self.shutdown_write();
        let mut replies = Vec::new();
        while let Some(line) = self.line() {
            replies.push(line);
        }
        replies
    }

    /// Whether the daemon closed without sending a byte (EOF or reset);
    /// panics when a byte comes, or nothing within the read timeout.
    pub fn closed_silently(&mut self) -> bool {
        let mut b = [0u8; 256];
        match self.reader.read(&mut b) {
            Ok(0) => true,
            Ok(n) => panic!("expected no reply, got {:?}", String::from_utf8_lossy(&b[..n])),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => true,
            Err(e) => panic!("expected EOF, got {e}"),
        }
    }
}

impl<S: Read + Write> LineClient<S> {
    /// A client over an established stream (for TLS: a rustls stream,
    /// whose handshake happens on the first read or write).
    pub fn over(stream: S) -> Self {
        LineClient {
            reader: BufReader::new(stream),
        }
    }

    /// The stream.
    pub fn get_ref(&self) -> &S {
        self.reader.get_ref()
    }

    /// The stream, to write or read past the client (bytes already read
    /// into the client's buffer are not seen that way).
    pub fn get_mut(&mut self) -> &mut S {
        self.reader.get_mut()
    }

    /// Writes `bytes` as they are, in one write, and flushes them.
    pub fn try_send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        let s = self.reader.get_mut();
        s.write_all(bytes)?;
        s.flush()
    }

    /// Writes `line` and its newline in one write: two small writes could
    /// wait on each other (Nagle and delayed ACKs) on a stream without
    /// TCP_NODELAY.
    pub fn try_send(&mut self, line: &str) -> io::Result<()> {
        self.try_send_raw(format!("{line}\n").as_bytes())
    }

    /// The next reply without its newline; Ok(None) at EOF. A timeout or a
    /// reset is an error, and so is a last line without its newline
    /// (`InvalidData`: the end of the stream cut a reply short).
    pub fn try_line(&mut self) -> io::Result<Option<String>> {
        let mut buf = Vec::new();
        if self.reader.read_until(b'\n', &mut buf)? == 0 {
            return Ok(None);
        }
        if buf.pop() != Some(b'\n') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a reply cut short: {:?}", String::from_utf8_lossy(&buf)),
            ));
        }
        Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
    }

    /// Sends `line` and reads its reply; EOF instead of a reply is an error.
    pub fn try_ask(&mut self, line: &str) -> io::Result<String> {
        self.try_send(line)?;
        self.try_line()?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("EOF instead of a reply to {line:?}"),
            )
        })
    }

    /// [`Self::try_send_raw`], panicking on an error.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.try_send_raw(bytes).unwrap_or_else(|e| panic!("write: {e}"));
    }

    /// [`Self::try_send`], panicking on an error.
    pub fn send(&mut self, line: &str) {
        self.try_send(line)
            .unwrap_or_else(|e| panic!("write {line:?}: {e}"));
    }

    /// [`Self::try_line`], panicking on an error: None at EOF.
    pub fn line(&mut self) -> Option<String> {
        self.try_line().unwrap_or_else(|e| panic!("reading a reply: {e}"))
    }

    /// [`Self::try_ask`], panicking on an error.
    pub fn ask(&mut self, line: &str) -> String {
        self.try_ask(line)
            .unwrap_or_else(|e| panic!("asking {line:?}: {e}"))
    }
}

/// Reads through the client's buffer: bytes already read ahead by a
/// `line()` are returned first.
impl<S: Read + Write> Read for LineClient<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A peer that reads one chunk, then writes `reply` and closes.
    fn peer(reply: &'static [u8]) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut b = [0u8; 64];
            let _ = s.read(&mut b);
            s.write_all(reply).unwrap();
        });
        addr
    }

    #[test]
    fn replies_are_lines_without_their_newline() {
        let mut c = LineClient::connect(peer(b"OK 1\n#2 OK \xff\n"));
        assert_eq!(c.ask("ping"), "OK 1");
        assert_eq!(c.line().as_deref(), Some("#2 OK \u{fffd}"));
        assert_eq!(c.line(), None);
    }

    #[test]
    fn a_reply_cut_short_is_an_error() {
        let mut c = LineClient::connect(peer(b"OK 1\nOK 2"));
        assert_eq!(c.ask("ping"), "OK 1");
        let e = c.try_line().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn eof_instead_of_a_reply_is_an_error() {
        let mut c = LineClient::connect(peer(b""));
        assert!(c.try_ask("ping").is_err());
    }
}
