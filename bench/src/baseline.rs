//! The baseline server: a bare single-threaded mio loop that answers every
//! line it receives with one fixed reply (`OK 10` by default), over TCP and
//! UDP on the same port. No threads, no scheduling, no parsing: it only
//! counts newlines. It is what taskd is compared with in the network cases.
//!
//! Per connection it keeps the socket and two counters, so its idle memory
//! per connection is close to the floor of any mio server.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token};

const LISTENER: Token = Token(usize::MAX - 1);
const UDP: Token = Token(usize::MAX - 2);
/// Reads (or datagrams) per readiness event before other sockets get a turn.
const READS_PER_EVENT: usize = 16;
const DATAGRAMS_PER_EVENT: usize = 256;

struct Conn {
    stream: TcpStream,
    /// Reply bytes owed and not yet accepted by the kernel.
    pending: usize,
    /// Bytes of the reply stream already written, modulo the reply length.
    phase: usize,
}

/// The reply repeated, so that many owed replies leave in one write.
struct ReplyStream {
    reply: Vec<u8>,
    repeated: Vec<u8>,
}

impl ReplyStream {
    fn new(reply: &[u8]) -> ReplyStream {
        let mut line = reply.to_vec();
        line.push(b'\n');
        let copies = (64 * 1024 / line.len()).max(1);
        ReplyStream {
            repeated: line.repeat(copies),
            reply: line,
        }
    }

    /// Writes what `c` owes until done or the socket is full.
    fn flush(&self, c: &mut Conn) -> io::Result<()> {
        let len = self.reply.len();
        while c.pending > 0 {
            let avail = self.repeated.len() - c.phase;
            let chunk = &self.repeated[c.phase..c.phase + avail.min(c.pending)];
            match c.stream.write(chunk) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    c.pending -= n;
                    c.phase = (c.phase + n) % len;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Lines of a datagram the way taskd counts them: non-blank lines, the last
/// one possibly unterminated.
fn datagram_lines(data: &[u8]) -> usize {
    data.split(|&b| b == b'\n')
        .filter(|l| l.iter().any(|&b| !matches!(b, b' ' | b'\t' | b'\r')))
        .count()
}

/// Serves until `max_time` has passed (a bound, so that an orphaned
/// baseline never outlives a benchmark by long); the benchmark kills it
/// much earlier.
pub fn serve(addr: SocketAddr, reply: &[u8], max_time: Duration) -> io::Result<()> {
    let deadline = Instant::now() + max_time;
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(addr)?;
    let mut udp = UdpSocket::bind(listener.local_addr()?)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    poll.registry().register(&mut udp, UDP, Interest::READABLE)?;
    let out = ReplyStream::new(reply);
    let udp_reply = out.reply.clone();
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut again: Vec<Token> = Vec::new();
    let mut tokens: Vec<Token> = Vec::new();
    let mut scratch = vec![0u8; 64 * 1024];
    let mut events = Events::with_capacity(1024);
    while Instant::now() < deadline {
        let timeout = if again.is_empty() {
            Duration::from_millis(500)
        } else {
            Duration::ZERO
        };
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        tokens.clear();
        tokens.append(&mut again);
        tokens.extend(events.iter().map(|e| e.token()));
        for &token in &tokens {
            match token {
                LISTENER => loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let _ = stream.set_nodelay(true);
                            let key = free.pop().unwrap_or_else(|| {
                                conns.push(None);
                                conns.len() - 1
                            });
                            poll.registry().register(
                                &mut stream,
                                Token(key),
                                Interest::READABLE | Interest::WRITABLE,
                            )?;
                            conns[key] = Some(Conn {
                                stream,
                                pending: 0,
                                phase: 0,
                            });
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        // EMFILE and friends: try again on the next event.
                        Err(_) => break,
                    }
                },
                UDP => {
                    let mut done = false;
                    for _ in 0..DATAGRAMS_PER_EVENT {
                        match udp.recv_from(&mut scratch) {
                            Ok((n, peer)) => {
                                for _ in 0..datagram_lines(&scratch[..n]) {
                                    // A full send buffer drops the reply, as UDP may.
                                    let _ = udp.send_to(&udp_reply, peer);
                                }
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                done = true;
                                break;
                            }
                            Err(_) => {}
                        }
                    }
                    if !done {
                        again.push(UDP);
                    }
                }
                Token(key) => {
                    let Some(Some(c)) = conns.get_mut(key) else {
                        continue;
                    };
                    let mut close = false;
                    let mut done = false;
                    for _ in 0..READS_PER_EVENT {
                        match c.stream.read(&mut scratch) {
                            Ok(0) => {
                                close = true;
                                break;
                            }
                            Ok(n) => {
                                let lines = scratch[..n].iter().filter(|&&b| b == b'\n').count();
                                c.pending += lines * out.reply.len();
                            }
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                done = true;
                                break;
                            }
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                            Err(_) => {
                                close = true;
                                break;
                            }
                        }
                    }
                    if !close && out.flush(c).is_err() {
                        close = true;
                    }
                    if close {
                        if let Some(mut c) = conns[key].take() {
                            let _ = poll.registry().deregister(&mut c.stream);
                        }
                        free.push(key);
                    } else if !done {
                        again.push(Token(key));
                    }
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagram_lines_skip_blank_and_count_unterminated() {
        assert_eq!(datagram_lines(b"max 1\n"), 1);
        assert_eq!(datagram_lines(b"max 1\nmin 2"), 2);
        assert_eq!(datagram_lines(b"\n \t\r\nmax 1\r\n"), 1);
        assert_eq!(datagram_lines(b""), 0);
    }

    #[test]
    fn baseline_answers_each_line_over_tcp() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let t = std::thread::spawn(move || serve(port, b"OK 10", Duration::from_secs(2)));
        let mut s = None;
        for _ in 0..100 {
            if let Ok(c) = std::net::TcpStream::connect(port) {
                s = Some(c);
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut s = s.expect("baseline listens");
        s.write_all(b"max 1 2\nmax 3\nmax").unwrap();
        s.write_all(b" 4\n").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while got.len() < 18 {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"OK 10\nOK 10\nOK 10\n");
        drop(s);
        t.join().unwrap().unwrap();
    }
}
