//! An answer written in the format its request came in: a text line, a
//! JSON line, or an HTTP response around the JSON reply. Every transport's
//! answers, from the loop or from a worker, go through [`write`].

use std::time::Duration;

use crate::http;
use crate::ops::Output;
use crate::protocol::reply::{write_err, write_ok};
use crate::protocol::{Body, Failure, Format, Id};

thread_local! {
    /// The body of an HTTP response, written before its head (which says
    /// its length): one buffer reused, not one per response.
    static BODY: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Appends the answer to `out`. `elapsed`: the task's time from arrival,
/// which `/pi`'s body reports.
pub fn write(
    out: &mut Vec<u8>,
    format: Format,
    id: Option<&Id>,
    result: Result<&Output, &Failure>,
    elapsed: Duration,
) {
    match format {
        Format::Text | Format::Json => {
            let json = format.is_json();
            match result {
                Ok(output) => write_ok(out, id, json, output),
                Err(f) => write_err(out, id, json, f.code, &f.message),
            }
        }
        Format::Http { body, close, head } => {
            let start = out.len();
            write_http(out, body, close, id, result, elapsed);
            if head {
                http::strip_body(out, start);
            }
        }
    }
}

fn write_http(
    out: &mut Vec<u8>,
    body: Body,
    close: bool,
    id: Option<&Id>,
    result: Result<&Output, &Failure>,
    elapsed: Duration,
) {
    match result {
        Ok(Output::Pi { pi, samples, chunks }) if body == Body::SeedPi => {
            let b = http::seed_pi_body(*pi, *samples, *chunks, elapsed);
            http::write_response(out, 200, http::JSON_CONTENT_TYPE, &[], &b, close);
        }
        Ok(Output::Users(table)) if body == Body::Table => {
            let mut b = Vec::with_capacity(table.json.len() + 1);
            b.extend_from_slice(&table.json);
            b.push(b'\n');
            http::write_response(out, 200, http::JSON_CONTENT_TYPE, &[], &b, close);
        }
        Ok(output) => BODY.with_borrow_mut(|b| {
            b.clear();
            write_ok(b, id, true, output);
            http::write_response(out, 200, http::JSON_CONTENT_TYPE, &[], b, close);
        }),
        Err(f) => http::write_failure(out, f, id, close),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::numbers::Num;
    use crate::protocol::Code;

    fn text(format: Format, result: Result<&Output, &Failure>) -> String {
        let mut v = Vec::new();
        write(&mut v, format, Some(&Id::Int(3)), result, Duration::ZERO);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn one_answer_in_every_format() {
        let two = Output::Num(Num::Int(2));
        assert_eq!(text(Format::Text, Ok(&two)), "#3 OK 2\n");
        assert_eq!(
            text(Format::Json, Ok(&two)),
            "{\"id\":3,\"ok\":true,\"result\":2}\n"
        );
        let http = text(
            Format::Http {
                body: Body::Reply,
                close: false,
                head: false,
            },
            Ok(&two),
        );
        assert!(http.starts_with("HTTP/1.1 200 OK\r\n"), "{http}");
        assert!(
            http.ends_with("\r\n\r\n{\"id\":3,\"ok\":true,\"result\":2}\n"),
            "{http}"
        );
        let busy = Failure::new(Code::Busy, "full");
        let http = text(
            Format::Http {
                body: Body::Reply,
                close: true,
                head: false,
            },
            Err(&busy),
        );
        assert!(http.starts_with("HTTP/1.1 429 "), "{http}");
        assert!(http.contains("Retry-After: 1\r\n"), "{http}");
        assert!(http.contains("Connection: close\r\n"), "{http}");
    }
}
