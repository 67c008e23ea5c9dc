//! HTTP connections on the same loop, scheduler and pool as the line
//! protocol (SPEC section 2): requests are parsed and routed by `crate::http`
//! and become the same tasks; responses take their place in the
//! connection's reply order, so pipelined requests are answered in order.

use std::rc::Rc;
use std::time::Instant;

use super::conn::State;
use super::listener::ListenerSettings;
use super::record::Answered;
use super::task::Origin;
use super::{Server, conns_by_proto};
use crate::http::{self, Action, HttpRequest, Parsed};
use crate::metrics::Gauges;
use crate::ops::{Exec, OPS, Output};
use crate::protocol::reply::write_ok;
use crate::protocol::{Code, Id, Rejection};

/// How a task's result becomes an HTTP response.
#[derive(Debug, Clone, Copy)]
pub struct HttpReply {
    /// The seed's `/pi` body shape instead of the JSON reply.
    pub seed_pi: bool,
    /// `Connection: close` after this response.
    pub close: bool,
}

/// The HTTP response of a finished task.
pub fn task_response(
    reply: HttpReply,
    id: Option<&Id>,
    result: &Result<Output, (Code, String)>,
    elapsed: std::time::Duration,
) -> Vec<u8> {
    let mut out = Vec::new();
    match result {
        Ok(Output::Pi { pi, samples, chunks }) if reply.seed_pi => {
            let body = http::seed_pi_body(*pi, *samples, *chunks, elapsed);
            http::write_response(&mut out, 200, http::JSON_CONTENT_TYPE, &[], &body, reply.close);
        }
        Ok(output) => {
            let mut body = Vec::new();
            write_ok(&mut body, id, true, output);
            http::write_response(&mut out, 200, http::JSON_CONTENT_TYPE, &[], &body, reply.close);
        }
        Err((code, message)) => {
            let rej = Rejection {
                id: id.cloned(),
                user: None,
                op: None,
                json: true,
                code: *code,
                message: message.clone(),
            };
            http::write_rejection(&mut out, &rej, reply.close, &[]);
        }
    }
    out
}

impl Server {
    /// Parses and handles one request of an HTTP connection; false when
    /// no complete request is left or the connection stops reading.
    pub(super) fn http_step(
        &mut self,
        key: usize,
        settings: &ListenerSettings,
        buf: &[u8],
        pos: &mut usize,
        now: Instant,
    ) -> bool {
        let max = self.cfg.limits.max_line_bytes;
        let Some(c) = self.conns.get_mut(key) else {
            return false;
        };
        match http::parse_request(&buf[*pos..], max) {
            Parsed::Incomplete => {
                // curl waits for "100 Continue" before a larger body.
                if !c.continue_sent && http::expect_continue(&buf[*pos..], max) {
                    c.continue_sent = true;
                    c.reply_now(|out| out.extend_from_slice(http::CONTINUE));
                }
                false
            }
            Parsed::Error(e) => {
                *pos = buf.len();
                c.reply_now(|out| http::write_error(out, &e, &[]));
                c.state = State::Finishing;
                self.metrics.record_http_error(settings.proto().as_str(), e.code);
                false
            }
            Parsed::Request { req, consumed } => {
                *pos += consumed;
                c.continue_sent = false;
                c.last_active = now;
                self.handle_http(key, settings, req, now);
                true
            }
        }
    }

    fn handle_http(&mut self, key: usize, settings: &ListenerSettings, req: HttpRequest, now: Instant) {
        let mut close = !req.keep_alive;
        let proto = settings.proto();
        let mut action = http::route(&req, &self.parse_ctx(settings));
        // Mutual TLS: a request without `username` counts for the user
        // the client certificate names.
        if let Some(user) = self.conns.get(key).and_then(|c| c.cert_user.clone()) {
            match &mut action {
                Action::Request { req, .. } if req.user.is_none() => req.user = Some(user),
                Action::Reject(rej) if rej.user.is_none() => rej.user = Some(user),
                _ => {}
            }
        }
        let refusing = self.refusing(now);
        let Some(peer) = self.conns.get(key).map(|c| Rc::clone(&c.peer_text)) else {
            return;
        };
        let mut out = Vec::new();
        match action {
            Action::Request { req, seed_pi } if !refusing => match OPS[req.op].exec {
                Exec::Loop(op) => {
                    self.account(req.user.as_deref(), None);
                    let output = self.loop_op(op);
                    let mut body = Vec::new();
                    write_ok(&mut body, req.id.as_ref(), true, &output);
                    http::write_response(&mut out, 200, http::JSON_CONTENT_TYPE, &[], &body, close);
                    self.log_answer(&Answered::immediate(proto, &peer, &req, Ok(&output)));
                }
                Exec::List(_) | Exec::Pi => {
                    let Some(c) = self.conns.get_mut(key) else { return };
                    let seq = c.reserve();
                    if close {
                        c.state = State::Finishing;
                    }
                    let origin = Origin::Conn { key, conn: c.id, seq };
                    self.enqueue(
                        req,
                        origin,
                        proto,
                        Rc::clone(&peer),
                        Some(HttpReply { seed_pi, close }),
                        now,
                    );
                    return;
                }
            },
            Action::Request { req, .. } => {
                close = true;
                let rej = Rejection::shutting_down(&Ok(req));
                http::write_rejection(&mut out, &rej, close, &[]);
                self.record(Answered::rejected(proto, &peer, &rej));
            }
            Action::Reject(rej) => {
                let rej = if refusing {
                    Rejection::shutting_down(&Err(rej))
                } else {
                    rej
                };
                close |= refusing;
                http::write_rejection(&mut out, &rej, close, &[]);
                self.record(Answered::rejected(proto, &peer, &rej));
            }
            Action::Statistics => {
                let body = http::statistics_body(&self.users.snapshot());
                http::write_response(&mut out, 200, http::JSON_CONTENT_TYPE, &[], &body, close);
            }
            Action::Healthz => {
                let (status, body) = http::healthz_body(self.drain.is_some());
                http::write_response(&mut out, status, http::JSON_CONTENT_TYPE, &[], body, close);
            }
            Action::Metrics => {
                let body = self.metrics.render(&self.gauges());
                http::write_response(
                    &mut out,
                    200,
                    http::METRICS_CONTENT_TYPE,
                    &[],
                    body.as_bytes(),
                    close,
                );
            }
            Action::Error(mut e) => {
                e.close |= close;
                close = e.close;
                http::write_error(&mut out, &e, &[]);
                self.metrics.record_http_error(proto.as_str(), e.code);
            }
        }
        if let Some(c) = self.conns.get_mut(key) {
            c.reply_now(|o| o.extend_from_slice(&out));
            if close {
                c.state = State::Finishing;
            }
        }
    }

    fn gauges(&self) -> Gauges {
        Gauges {
            incoming: self.sched.incoming_len(),
            ready: self.sched.ready_len(),
            running: self.running,
            connections: conns_by_proto(&self.conns),
            users: self.users.len(),
            results_log_write_errors: self.files.write_errors(),
            config_last_reload_successful: self.last_reload_ok,
            version: env!("CARGO_PKG_VERSION"),
        }
    }
}
