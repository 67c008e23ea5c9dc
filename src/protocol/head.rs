//! The head of a text request: `[#id] [@user] op [args]`.
//!
//! The loop decides everything down to `empty` here (the error precedence
//! of taskd(8)) by counting list values without parsing them; the numbers
//! themselves are parsed later on a worker. The checks after the op is
//! known (`denied`, `tcp-only`, `too-many`, `empty`, pi's `range`) are
//! shared with JSON requests and HTTP.

use super::{Args, Code, Failure, Format, Id, Name, ParseCtx, Rejection, Request, Syntax, sanitize};
use crate::numbers::count_text_values;
use crate::ops::{ArgKind, OPS, OpId, PI_MAX_CHUNKS, lookup_bytes};

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// The end of the token starting at `i`, and the start of the next one.
fn token(s: &[u8], i: usize) -> (usize, usize) {
    let end = s[i..]
        .iter()
        .position(|&b| is_blank(b))
        .map_or(s.len(), |k| i + k);
    let next = s[end..]
        .iter()
        .position(|&b| !is_blank(b))
        .map_or(s.len(), |k| end + k);
    (end, next)
}

pub fn malformed_id(id: &[u8]) -> Failure {
    Failure::new(
        Code::Parse,
        format!(
            "malformed id \"{}\": 1 to 64 letters, digits, '-', '_', '.', ':'",
            sanitize(id, 32)
        ),
    )
}

pub fn malformed_user(what: &str, user: &[u8]) -> Failure {
    Failure::new(
        Code::Parse,
        format!(
            "malformed {what} \"{}\": 1 to 64 letters, digits, '-', '_', '.'",
            sanitize(user, 32)
        ),
    )
}

pub fn valid_op_name(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// What is known of a request so far, for building rejections.
#[derive(Default)]
pub(super) struct Partial {
    pub id: Option<Id>,
    pub user: Option<Name>,
    pub op: Option<OpId>,
}

impl Partial {
    pub fn reject(&self, format: Format, failure: Failure) -> Rejection {
        Rejection {
            id: self.id,
            user: self.user,
            op: self.op,
            format,
            failure,
        }
    }
}

pub fn parse(line: &[u8], ctx: &ParseCtx) -> Result<Request, Rejection> {
    let end = line.iter().rposition(|&b| !is_blank(b)).map_or(0, |i| i + 1);
    let line = &line[..end];
    let mut i = line.iter().position(|&b| !is_blank(b)).unwrap_or(line.len());
    let mut p = Partial::default();
    let fail = |p: &Partial, f: Failure| p.reject(Format::Text, f);

    let (mut tok_end, mut next) = token(line, i);
    if line.get(i) == Some(&b'#') {
        let id = &line[i + 1..tok_end];
        p.id = Some(Id::Text(Name::id(id).ok_or_else(|| fail(&p, malformed_id(id)))?));
        i = next;
        (tok_end, next) = token(line, i);
    }
    if line.get(i) == Some(&b'@') {
        let user = &line[i + 1..tok_end];
        p.user = Some(Name::user(user).ok_or_else(|| fail(&p, malformed_user("user", user)))?);
        i = next;
        (tok_end, next) = token(line, i);
    }
    let tok = &line[i..tok_end];
    if tok.is_empty() {
        return Err(fail(&p, Failure::new(Code::Parse, "missing operation")));
    }
    if !valid_op_name(tok) {
        let m = format!("malformed operation \"{}\"", sanitize(tok, 32));
        return Err(fail(&p, Failure::new(Code::Parse, m)));
    }
    let Some(op) = lookup_bytes(tok) else {
        let m = format!("no operation \"{}\"; try help", sanitize(tok, 32));
        return Err(fail(&p, Failure::new(Code::UnknownOp, m)));
    };
    p.op = Some(op);
    let spec = &OPS[op];
    let args = next..line.len();

    // Head faults (parse) come before unknown-op/denied in precedence, but
    // they can only be judged once the op is known; no later check of an
    // earlier rank can apply by then, so the order holds.
    let pi = match spec.args {
        ArgKind::None if !args.is_empty() => {
            let m = format!("{} takes no arguments", spec.name);
            return Err(fail(&p, Failure::new(Code::Parse, m)));
        }
        ArgKind::Pi => Some(parse_pi_args(&line[args.clone()]).map_err(|f| fail(&p, f))?),
        _ => None,
    };
    check_access(op, ctx).map_err(|f| fail(&p, f))?;
    let args = match (spec.args, pi) {
        (ArgKind::Values, _) => {
            let count = count_text_values(&line[args.clone()]);
            check_count(count, ctx).map_err(|f| fail(&p, f))?;
            Args::Values {
                span: args,
                syntax: Syntax::Text,
                count,
            }
        }
        (ArgKind::Pi, Some((samples, chunks))) => {
            let (samples, chunks) = check_pi_range(samples, chunks, ctx).map_err(|f| fail(&p, f))?;
            Args::Pi { samples, chunks }
        }
        _ => Args::None,
    };
    Ok(Request {
        id: p.id,
        user: p.user,
        op,
        args,
        format: Format::Text,
    })
}

/// `denied` and `tcp-only`, shared with JSON requests and HTTP.
pub fn check_access(op: OpId, ctx: &ParseCtx) -> Result<(), Failure> {
    let spec = &OPS[op];
    if !ctx.allowed.get(op).copied().unwrap_or(false) {
        let m = format!("{} is not served on this listener", spec.name);
        return Err(Failure::new(Code::Denied, m));
    }
    if ctx.udp && spec.stream_only {
        let m = format!("{} is served over TCP, TLS and HTTP only", spec.name);
        return Err(Failure::new(Code::TcpOnly, m));
    }
    Ok(())
}

/// `too-many` and `empty`, shared with JSON requests and HTTP.
pub fn check_count(count: usize, ctx: &ParseCtx) -> Result<(), Failure> {
    if count > ctx.max_values {
        let m = format!("{count} values, at most {} allowed", ctx.max_values);
        return Err(Failure::new(Code::TooMany, m));
    }
    if count == 0 {
        return Err(Failure::new(Code::Empty, "no values given"));
    }
    Ok(())
}

/// A pi argument as the client wrote it: the number, or None when its
/// digits do not fit 64 bits; and the name the range message uses.
#[derive(Debug, Clone, Copy)]
pub struct PiArg<'a> {
    pub value: Option<u64>,
    pub digits: &'a [u8],
}

impl<'a> PiArg<'a> {
    /// An unsigned decimal integer (`1e6`, signs, blanks: parse errors).
    pub fn parse(tok: &'a [u8], what: &str) -> Result<PiArg<'a>, Failure> {
        if tok.is_empty() || !tok.iter().all(u8::is_ascii_digit) {
            let m = format!(
                "{what} \"{}\" is not an unsigned decimal integer",
                sanitize(tok, 32)
            );
            return Err(Failure::new(Code::Parse, m));
        }
        // All digits: the only failure left is overflow, which is out of
        // range rather than malformed; the range check names the digits.
        let value = std::str::from_utf8(tok).ok().and_then(|s| s.parse().ok());
        Ok(PiArg { value, digits: tok })
    }
}

fn parse_pi_args(args: &[u8]) -> Result<(PiArg<'_>, Option<PiArg<'_>>), Failure> {
    let (end, next) = token(args, 0);
    if end == 0 {
        return Err(Failure::new(Code::Parse, "pi needs SAMPLES [CHUNKS]"));
    }
    let samples = PiArg::parse(&args[..end], "SAMPLES")?;
    let (c_end, rest) = token(args, next);
    if rest < args.len() {
        let m = "pi takes at most two arguments: SAMPLES [CHUNKS]";
        return Err(Failure::new(Code::Parse, m));
    }
    if c_end == next {
        return Ok((samples, None));
    }
    Ok((samples, Some(PiArg::parse(&args[next..c_end], "CHUNKS")?)))
}

/// The `range` checks of pi's arguments, shared with JSON requests and
/// HTTP (which rename SAMPLES and CHUNKS in the message). Messages show
/// the client's own digits, also when they do not fit 64 bits.
pub fn check_pi_range(
    samples: PiArg,
    chunks: Option<PiArg>,
    ctx: &ParseCtx,
) -> Result<(u64, Option<u32>), Failure> {
    let out_of_range = |what: &str, arg: &PiArg, max: u64| {
        let m = format!(
            "{what} {} out of range 1..={max}",
            String::from_utf8_lossy(arg.digits)
        );
        Failure::new(Code::Range, m)
    };
    let n = match samples.value {
        Some(n) if (1..=ctx.max_samples).contains(&n) => n,
        _ => return Err(out_of_range("SAMPLES", &samples, ctx.max_samples)),
    };
    let Some(c) = chunks else { return Ok((n, None)) };
    let max = PI_MAX_CHUNKS.min(n);
    match c.value {
        // At most 1024 here, so the conversion cannot fail.
        Some(k) if (1..=max).contains(&k) => Ok((n, Some(k as u32))),
        _ => Err(out_of_range("CHUNKS", &c, max)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::{OPS, lookup};

    fn ctx(allowed: &[bool], udp: bool) -> ParseCtx<'_> {
        ParseCtx {
            max_values: 4,
            max_samples: 1_000_000,
            allowed,
            udp,
        }
    }

    fn failure(line: &str) -> Failure {
        let all = vec![true; OPS.len()];
        match parse(line.as_bytes(), &ctx(&all, false)) {
            Ok(r) => panic!("{line:?} accepted: {r:?}"),
            Err(r) => r.failure,
        }
    }

    fn code(line: &str) -> Code {
        failure(line).code
    }

    #[test]
    fn heads_parse() {
        let all = vec![true; OPS.len()];
        let line = b"  #a.b:c @alice\tSUM 1 2  ";
        let r = parse(line, &ctx(&all, false)).unwrap();
        assert_eq!(r.id, Name::id(b"a.b:c").map(Id::Text));
        assert_eq!(r.user, Name::user(b"alice"));
        assert_eq!(r.op, lookup("sum").unwrap());
        let Args::Values { span, count, .. } = r.args else {
            panic!("{:?}", r.args)
        };
        assert_eq!((&line[span], count), (&b"1 2"[..], 2));
        let r = parse(b"pi 100 3", &ctx(&all, false)).unwrap();
        assert_eq!(
            r.args,
            Args::Pi {
                samples: 100,
                chunks: Some(3)
            }
        );
    }

    #[test]
    fn errors_follow_precedence() {
        assert_eq!(code("#bad/id nosuchop"), Code::Parse);
        assert_eq!(code("@bad/user max 1"), Code::Parse);
        assert_eq!(code("nosuchop 1"), Code::UnknownOp);
        assert_eq!(code("ping 1"), Code::Parse);
        assert_eq!(code("pi"), Code::Parse);
        assert_eq!(code("pi 1e6"), Code::Parse);
        assert_eq!(code("pi 0"), Code::Range);
        assert_eq!(code("pi 5 10"), Code::Range);
        assert_eq!(code("pi 1000 0"), Code::Range);
        assert_eq!(code("pi 99999999999999999999999"), Code::Range);
        assert_eq!(code("max"), Code::Empty);
        assert_eq!(code("max 1 2 3 4 x"), Code::TooMany);
        assert_eq!(code("#7"), Code::Parse);
        assert_eq!(code("max!"), Code::Parse);
        assert_eq!(code("pi 1 2 3"), Code::Parse);
    }

    #[test]
    fn range_messages_show_the_clients_digits() {
        let m = failure("pi 99999999999999999999999").message;
        assert_eq!(m, "SAMPLES 99999999999999999999999 out of range 1..=1000000");
        let m = failure("pi 10 4294967296").message;
        assert_eq!(m, "CHUNKS 4294967296 out of range 1..=10");
        let m = failure("pi 10 007000").message;
        assert_eq!(m, "CHUNKS 007000 out of range 1..=10");
    }

    #[test]
    fn access_is_checked_after_the_head() {
        let mut allowed = vec![true; OPS.len()];
        allowed[lookup("max").unwrap()] = false;
        let r = parse(b"#1 max", &ctx(&allowed, false)).unwrap_err();
        assert_eq!(
            (r.failure.code, r.id),
            (Code::Denied, Name::id(b"1").map(Id::Text))
        );
        let all = vec![true; OPS.len()];
        let r = parse(b"users", &ctx(&all, true)).unwrap_err();
        assert_eq!(r.failure.code, Code::TcpOnly);
    }
}
