//! indymilter stages → [`Session`] calls, and verdicts → replies and
//! actions. No decisions are made here.

use std::ffi::CStr;
use std::io::Read;
use std::sync::Arc;

use indymilter::{
    Actions, Callbacks, Context, ContextActions, EomContext, MacroStage, NegotiateContext,
    ProtoOpts, SetErrorReply, Status,
};

use super::Shared;
use super::session::{EomVerdict, RcptVerdict, Session};
use crate::message::rewrite::HeaderEdit;
use crate::metrics::Outcome;
use crate::policy::Reply;

/// The actions the milter needs; an MTA that cannot do them is refused
/// at negotiation.
pub fn required_actions() -> Actions {
    Actions::ADD_HEADER | Actions::CHANGE_HEADER | Actions::REPLACE_BODY
}

/// What one MTA connection carries: the stages the MTA agreed to leave
/// unanswered (from negotiation), and the session of the SMTP connection
/// it currently serves (from connect to close; an MTA may reuse the milter
/// connection for the next one after `QUIT_NC`).
pub struct Conn {
    session: Option<Session>,
    noreply: ProtoOpts,
}

/// The stages that are never refused, so need no reply, when the MTA
/// offers that (an MTA that does not gets a reply to each).
const NOREPLY_WANTED: ProtoOpts = ProtoOpts::NOREPLY_CONNECT
    .union(ProtoOpts::NOREPLY_MAIL)
    .union(ProtoOpts::NOREPLY_HEADER)
    .union(ProtoOpts::NOREPLY_BODY);

/// The callbacks for one milter, sharing `shared`.
pub fn build(shared: Arc<Shared>) -> Callbacks<Conn> {
    Callbacks::new()
        .on_negotiate(|cx, _actions, mta_opts| Box::pin(async move { negotiate(cx, mta_opts) }))
        .on_connect(move |cx, _host, _socket| {
            let mut session = Session::new(&shared);
            Box::pin(async move {
                if let Some(d) = macro_str(cx, c"{daemon_name}") {
                    session.set_daemon_name(&d);
                }
                // indymilter always negotiates first; without that there is
                // no session, and every RCPT is refused.
                if let Some(c) = cx.data.as_mut() {
                    c.session = Some(session);
                }
                answer(&cx.data, ProtoOpts::NOREPLY_CONNECT)
            })
        })
        .on_mail(|cx, args| Box::pin(mail(cx, args)))
        .on_rcpt(|cx, args| Box::pin(rcpt(cx, args)))
        // Nothing to decide at DATA, but the stage is kept: with it
        // negotiated away, Postfix still sends the DATA macros as a lone
        // segment, and its next write then waits (Nagle) for our delayed
        // ACK — 40 ms per message over TCP. A reply costs one round trip.
        .on_data(|_cx| Box::pin(async { Status::Continue }))
        .on_header(|cx, name, value| Box::pin(header(cx, name, value)))
        .on_body(|cx, chunk| Box::pin(body(cx, chunk)))
        .on_eom(|cx| Box::pin(eom(cx)))
        .on_abort(|cx| Box::pin(abort(cx)))
        .on_close(|cx| {
            Box::pin(async move {
                // Dropping the session closes its spool and its metrics
                // guard; what was negotiated stays for a reused connection.
                if let Some(c) = cx.data.as_mut() {
                    c.session = None;
                }
                Status::Continue
            })
        })
}

fn negotiate(cx: &mut NegotiateContext<Conn>, mta_opts: ProtoOpts) -> Status {
    cx.requested_actions = required_actions();
    // No reply where nothing can be refused: the MTA then sends the next
    // command without waiting, and a message costs four round trips
    // (negotiation, RCPT, DATA, end of message) instead of one per stage
    // and header. RCPT, DATA (see `build`) and EOM keep their replies.
    let noreply = NOREPLY_WANTED & mta_opts;
    // Header values exactly as received, leading space included.
    cx.requested_opts |= ProtoOpts::LEADING_SPACE | noreply;
    cx.requested_macros
        .insert(MacroStage::Connect, c"{daemon_name} {client_addr}".into());
    cx.requested_macros
        .insert(MacroStage::Mail, c"i {auth_authen}".into());
    cx.requested_macros.insert(MacroStage::Rcpt, c"i".into());
    cx.requested_macros.insert(MacroStage::Eom, c"i".into());
    cx.data = Some(Conn {
        session: None,
        noreply,
    });
    Status::Continue
}

fn session(data: &mut Option<Conn>) -> Option<&mut Session> {
    data.as_mut().and_then(|c| c.session.as_mut())
}

/// The status for a stage that never refuses: no reply if negotiated so.
fn answer(data: &Option<Conn>, stage: ProtoOpts) -> Status {
    if data.as_ref().is_some_and(|c| c.noreply.contains(stage)) {
        Status::Noreply
    } else {
        Status::Continue
    }
}

fn macro_str<T: Send>(cx: &Context<T>, name: &CStr) -> Option<String> {
    cx.macros
        .get(name)
        .map(|v| v.to_string_lossy().into_owned())
}

fn note_queue_id(cx: &mut Context<Conn>) {
    if let Some(id) = macro_str(cx, c"i")
        && let Some(s) = session(&mut cx.data)
    {
        s.set_queue_id(&id);
    }
}

/// Sets the reply and returns the status that carries it.
fn refuse(reply: &mut impl SetErrorReply, r: &Reply, qid: &str) -> Status {
    if let Err(e) = reply.set_error_reply(&r.code().to_string(), Some(r.enhanced()), [r.text()]) {
        tracing::error!("{qid}: cannot set reply {r:?}: {e}");
    }
    if r.is_permanent() {
        Status::Reject
    } else {
        Status::Tempfail
    }
}

fn first_arg(args: &[std::ffi::CString]) -> String {
    args.first()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Never refused (no reply if negotiated): without a session every RCPT
/// is refused.
async fn mail(cx: &mut Context<Conn>, args: Vec<std::ffi::CString>) -> Status {
    note_queue_id(cx);
    let login = macro_str(cx, c"{auth_authen}");
    if let Some(s) = session(&mut cx.data) {
        s.mail(&first_arg(&args), login.as_deref());
    }
    answer(&cx.data, ProtoOpts::NOREPLY_MAIL)
}

async fn rcpt(cx: &mut Context<Conn>, args: Vec<std::ffi::CString>) -> Status {
    note_queue_id(cx);
    let Some(s) = session(&mut cx.data) else {
        return refuse(&mut cx.reply, &Reply::internal_error(), "NOQUEUE");
    };
    match s.rcpt(&first_arg(&args)).await {
        RcptVerdict::Accept => Status::Continue,
        RcptVerdict::Refuse(r) => {
            let qid = s.queue_id().to_owned();
            refuse(&mut cx.reply, &r, &qid)
        }
    }
}

async fn header(
    cx: &mut Context<Conn>,
    name: std::ffi::CString,
    value: std::ffi::CString,
) -> Status {
    if let Some(s) = session(&mut cx.data) {
        s.header(&name.to_string_lossy(), value.as_bytes());
    }
    answer(&cx.data, ProtoOpts::NOREPLY_HEADER)
}

/// Never refused (no reply if negotiated): a spooling error refuses the
/// message at its end, which is when the SMTP client hears about it
/// either way.
async fn body(cx: &mut Context<Conn>, chunk: bytes::Bytes) -> Status {
    if let Some(s) = session(&mut cx.data)
        && let Err(e) = s.body(&chunk)
    {
        tracing::error!("{}: spooling the body: {e}", s.queue_id());
    }
    answer(&cx.data, ProtoOpts::NOREPLY_BODY)
}

async fn abort(cx: &mut Context<Conn>) -> Status {
    if let Some(s) = session(&mut cx.data) {
        s.abort();
    }
    Status::Continue
}

async fn eom(cx: &mut EomContext<Conn>) -> Status {
    if let Some(id) = cx
        .macros
        .get(c"i")
        .map(|v| v.to_string_lossy().into_owned())
        && let Some(s) = session(&mut cx.data)
    {
        s.set_queue_id(&id);
    }
    let Some(s) = session(&mut cx.data) else {
        return refuse(&mut cx.reply, &Reply::internal_error(), "NOQUEUE");
    };
    let qid = s.queue_id().to_owned();
    let verdict = s.eom().await;
    match verdict {
        EomVerdict::Unchanged {
            reason,
            outcome,
            edits,
        } => {
            tracing::info!("{qid}: not encrypted: {reason}");
            if let Err(e) = apply(cx, &edits, None).await {
                // Only header fields of ours (Authentication-Results):
                // tempfail so that the forged ones never stay.
                tracing::error!("{qid}: applying the header edits: {e}");
                if let Some(s) = session(&mut cx.data) {
                    s.count(Outcome::Tempfailed);
                }
                return refuse(&mut cx.reply, &Reply::internal_error(), &qid);
            }
            if let Some(s) = session(&mut cx.data) {
                s.count(outcome);
            }
            Status::Continue
        }
        EomVerdict::Signed {
            edits,
            body,
            method,
        } => match apply(cx, &edits, Some(&body)).await {
            Ok(()) => {
                tracing::info!(
                    "{qid}: not encrypted: no recipient needs encryption; signed with {method}"
                );
                if let Some(s) = session(&mut cx.data) {
                    s.count(Outcome::Passed);
                    s.engine().metrics.signed(method);
                }
                Status::Continue
            }
            Err(e) => {
                tracing::error!("{qid}: applying the signed message: {e}");
                if let Some(s) = session(&mut cx.data) {
                    s.count(Outcome::Tempfailed);
                }
                refuse(&mut cx.reply, &Reply::internal_error(), &qid)
            }
        },
        EomVerdict::Refuse(r) => {
            tracing::info!("{qid}: refused: {} {} {}", r.code(), r.enhanced(), r.text());
            s.count(if r.is_permanent() {
                Outcome::Rejected
            } else {
                Outcome::Tempfailed
            });
            refuse(&mut cx.reply, &r, &qid)
        }
        EomVerdict::Encrypt {
            edits,
            body,
            method,
            recipients,
            signed,
        } => match apply(cx, &edits, Some(&body)).await {
            Ok(()) => {
                match signed {
                    Some(m) => tracing::info!(
                        "{qid}: encrypted with {method} to {recipients} key(s), signed with {m} inside"
                    ),
                    None => tracing::info!("{qid}: encrypted with {method} to {recipients} key(s)"),
                }
                if let Some(s) = session(&mut cx.data) {
                    s.count(Outcome::Encrypted);
                    s.engine().metrics.encrypted(method);
                    if let Some(m) = signed {
                        s.engine().metrics.signed(m);
                    }
                }
                Status::Continue
            }
            Err(e) => {
                // The MTA discards every change of a tempfailed message:
                // nothing half-encrypted, nothing in the clear.
                tracing::error!("{qid}: applying the encrypted message: {e}");
                if let Some(s) = session(&mut cx.data) {
                    s.count(Outcome::Tempfailed);
                }
                refuse(&mut cx.reply, &Reply::internal_error(), &qid)
            }
        },
    }
}

/// Sends the header edits, then the new body (if any) in chunks.
async fn apply(
    cx: &EomContext<Conn>,
    edits: &[HeaderEdit],
    body: Option<&crate::spool::Spool>,
) -> Result<(), String> {
    let a = &cx.actions;
    for edit in edits {
        match edit {
            HeaderEdit::Change { name, index, value } => {
                let index = i32::try_from(*index).map_err(|e| e.to_string())?;
                a.change_header(name.as_str(), index, Some(format!(" {value}")))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            HeaderEdit::Delete { name, index } => {
                let index = i32::try_from(*index).map_err(|e| e.to_string())?;
                a.change_header(name.as_str(), index, None::<&str>)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            HeaderEdit::Add { name, value } => {
                a.add_header(name.as_str(), format!(" {value}"))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            HeaderEdit::Prepend { name, value } => {
                a.insert_header(0, name.as_str(), format!(" {value}"))
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    let Some(body) = body else {
        return Ok(());
    };
    let mut reader = body.reader();
    // The milter protocol carries at most 64 KiB per message.
    let chunk = usize::try_from(body.len()).map_or(65_535, |n| n.clamp(1, 65_535));
    let mut buf = vec![0u8; chunk];
    loop {
        let n = reader.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(());
        }
        a.replace_body(&buf[..n]).await.map_err(|e| e.to_string())?;
    }
}
