//! The head of a text request: `[#id] [@user] op [args]`.
//!
//! The loop decides everything down to `empty` here (SPEC section 1 error
//! precedence) by counting list values without parsing them; the numbers
//! themselves are parsed later on a worker.

use super::{Args, Code, Id, ParseCtx, RawValues, Rejection, Request, sanitize};
use crate::numbers::count_text_values;
use crate::ops::{ArgKind, OPS, OpId, PI_MAX_CHUNKS, lookup_bytes};

const MAX_NAME: usize = 64;

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Splits off the first token; returns (token, rest with leading blanks
/// removed).
fn token(s: &[u8]) -> (&[u8], &[u8]) {
    let end = s.iter().position(|&b| is_blank(b)).unwrap_or(s.len());
    let rest = &s[end..];
    let skip = rest.iter().position(|&b| !is_blank(b)).unwrap_or(rest.len());
    (&s[..end], &rest[skip..])
}

fn trim_end(s: &[u8]) -> &[u8] {
    let end = s.iter().rposition(|&b| !is_blank(b)).map_or(0, |i| i + 1);
    &s[..end]
}

pub fn valid_id(s: &[u8]) -> bool {
    (1..=MAX_NAME).contains(&s.len())
        && s.iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

pub fn valid_user(s: &[u8]) -> bool {
    (1..=MAX_NAME).contains(&s.len())
        && s.iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn valid_op_name(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The part of a request that is known so far, for building rejections.
struct Partial {
    id: Option<Id>,
    user: Option<String>,
    op: Option<OpId>,
}

impl Partial {
    fn reject(&self, code: Code, message: String) -> Rejection {
        Rejection {
            id: self.id.clone(),
            user: self.user.clone(),
            op: self.op,
            json: false,
            code,
            message,
        }
    }
}

pub fn parse(line: &[u8], ctx: &ParseCtx) -> Result<Request, Rejection> {
    let start = line.iter().position(|&b| !is_blank(b)).unwrap_or(line.len());
    let mut rest = trim_end(&line[start..]);
    let mut p = Partial {
        id: None,
        user: None,
        op: None,
    };

    let (mut tok, mut after) = token(rest);
    if let Some(id) = tok.strip_prefix(b"#") {
        if !valid_id(id) {
            return Err(p.reject(
                Code::Parse,
                format!(
                    "malformed id \"{}\": 1 to 64 letters, digits, '-', '_', '.', ':'",
                    sanitize(id, 32)
                ),
            ));
        }
        p.id = Some(Id::Text(String::from_utf8_lossy(id).into_owned()));
        rest = after;
        (tok, after) = token(rest);
    }
    if let Some(user) = tok.strip_prefix(b"@") {
        if !valid_user(user) {
            return Err(p.reject(
                Code::Parse,
                format!(
                    "malformed user \"{}\": 1 to 64 letters, digits, '-', '_', '.'",
                    sanitize(user, 32)
                ),
            ));
        }
        p.user = Some(String::from_utf8_lossy(user).into_owned());
        rest = after;
        (tok, after) = token(rest);
    }
    if tok.is_empty() {
        return Err(p.reject(Code::Parse, "missing operation".into()));
    }
    if !valid_op_name(tok) {
        return Err(p.reject(
            Code::Parse,
            format!("malformed operation \"{}\"", sanitize(tok, 32)),
        ));
    }
    let Some(op) = lookup_bytes(tok) else {
        return Err(p.reject(
            Code::UnknownOp,
            format!("no operation \"{}\"; try help", sanitize(tok, 32)),
        ));
    };
    p.op = Some(op);
    let spec = &OPS[op];
    let args_bytes = after;

    // Head faults (parse) come before unknown-op/denied in precedence, but
    // they can only be judged once the op is known; no later check of an
    // earlier rank can apply by then, so the order holds.
    let pi_args = match spec.args {
        ArgKind::None if !args_bytes.is_empty() => {
            return Err(p.reject(Code::Parse, format!("{} takes no arguments", spec.name)));
        }
        ArgKind::Pi => Some(parse_pi_args(args_bytes).map_err(|m| p.reject(Code::Parse, m))?),
        _ => None,
    };
    check_access(op, ctx).map_err(|(c, m)| p.reject(c, m))?;

    let args = match spec.args {
        ArgKind::None => Args::None,
        ArgKind::Values => {
            let count = count_text_values(args_bytes);
            check_count(count, ctx).map_err(|(c, m)| p.reject(c, m))?;
            Args::Values {
                raw: RawValues::Text(args_bytes.to_vec()),
                count,
            }
        }
        ArgKind::Pi => {
            let (samples, chunks) = pi_args.unwrap_or((0, None));
            check_pi_range(samples, chunks, ctx).map_err(|m| p.reject(Code::Range, m))?;
            Args::Pi { samples, chunks }
        }
    };
    Ok(Request {
        id: p.id,
        user: p.user,
        op,
        args,
        json: false,
    })
}

/// `denied` and `tcp-only`, shared with JSON requests.
pub(super) fn check_access(op: OpId, ctx: &ParseCtx) -> Result<(), (Code, String)> {
    let spec = &OPS[op];
    if !ctx.allowed.get(op).copied().unwrap_or(false) {
        return Err((
            Code::Denied,
            format!("{} is not served on this listener", spec.name),
        ));
    }
    if ctx.udp && spec.stream_only {
        return Err((
            Code::TcpOnly,
            format!("{} is served over TCP, TLS and HTTP only", spec.name),
        ));
    }
    Ok(())
}

/// `too-many` and `empty`, shared with JSON requests.
pub(super) fn check_count(count: usize, ctx: &ParseCtx) -> Result<(), (Code, String)> {
    if count > ctx.max_values {
        return Err((
            Code::TooMany,
            format!("{count} values, at most {} allowed", ctx.max_values),
        ));
    }
    if count == 0 {
        return Err((Code::Empty, "no values given".into()));
    }
    Ok(())
}

fn parse_unsigned(tok: &[u8], what: &str) -> Result<u64, String> {
    if tok.is_empty() || !tok.iter().all(u8::is_ascii_digit) {
        return Err(format!(
            "{what} \"{}\" is not an unsigned decimal integer",
            sanitize(tok, 32)
        ));
    }
    // All digits: the only failure left is overflow, which is out of range
    // rather than malformed; saturate so the range check reports it.
    Ok(std::str::from_utf8(tok)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::MAX))
}

fn parse_pi_args(args: &[u8]) -> Result<(u64, Option<u32>), String> {
    let (s, rest) = token(args);
    if s.is_empty() {
        return Err("pi needs SAMPLES [CHUNKS]".into());
    }
    let samples = parse_unsigned(s, "SAMPLES")?;
    let (c, rest) = token(rest);
    if !rest.is_empty() {
        return Err("pi takes at most two arguments: SAMPLES [CHUNKS]".into());
    }
    if c.is_empty() {
        return Ok((samples, None));
    }
    let chunks = parse_unsigned(c, "CHUNKS")?;
    Ok((samples, Some(u32::try_from(chunks).unwrap_or(u32::MAX))))
}

/// The `range` checks of pi's arguments, shared with JSON requests.
pub(super) fn check_pi_range(samples: u64, chunks: Option<u32>, ctx: &ParseCtx) -> Result<(), String> {
    if samples < 1 || samples > ctx.max_samples {
        return Err(format!("SAMPLES {samples} out of range 1..={}", ctx.max_samples));
    }
    if let Some(c) = chunks {
        let max = PI_MAX_CHUNKS.min(samples);
        if c < 1 || u64::from(c) > max {
            return Err(format!("CHUNKS {c} out of range 1..={max}"));
        }
    }
    Ok(())
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
            workers: 2,
        }
    }

    fn code(line: &str) -> Code {
        let all = vec![true; OPS.len()];
        match parse(line.as_bytes(), &ctx(&all, false)) {
            Ok(r) => panic!("{line:?} accepted: {r:?}"),
            Err(r) => r.code,
        }
    }

    #[test]
    fn heads_parse() {
        let all = vec![true; OPS.len()];
        let r = parse(b"  #a.b:c @alice\tSUM 1 2  ", &ctx(&all, false)).unwrap();
        assert_eq!(r.id, Some(Id::Text("a.b:c".into())));
        assert_eq!(r.user.as_deref(), Some("alice"));
        assert_eq!(r.op, lookup("sum").unwrap());
        assert_eq!(
            r.args,
            Args::Values {
                raw: RawValues::Text(b"1 2".to_vec()),
                count: 2
            }
        );
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
    }

    #[test]
    fn access_is_checked_after_the_head() {
        let mut allowed = vec![true; OPS.len()];
        allowed[lookup("max").unwrap()] = false;
        let r = parse(b"#1 max", &ctx(&allowed, false)).unwrap_err();
        assert_eq!((r.code, r.id), (Code::Denied, Some(Id::Text("1".into()))));
        let all = vec![true; OPS.len()];
        let r = parse(b"users", &ctx(&all, true)).unwrap_err();
        assert_eq!(r.code, Code::TcpOnly);
    }
}
