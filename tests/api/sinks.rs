//! Local receivers for delivery tests, both on 127.0.0.1:0 and recording everything
//! they get: an HTTP webhook receiver answering from a programmable plan, and an SMTP
//! sink speaking just enough SMTP for lettre. Every wait is bounded.

#![allow(dead_code)]

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode, Uri},
};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
    time::{Instant, sleep, timeout},
};

/// How long waits last by default.
pub const WAIT: Duration = Duration::from_secs(15);

/// Polls `read` until `done` holds or `within` passes; returns the last value read.
async fn poll<T>(within: Duration, read: impl Fn() -> T, done: impl Fn(&T) -> bool) -> T {
    let deadline = Instant::now() + within;
    loop {
        let value = read();
        if done(&value) || Instant::now() >= deadline {
            return value;
        }
        sleep(Duration::from_millis(20)).await;
    }
}

/// One request the HTTP receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    /// Path and query.
    pub path: String,
    /// Headers by lowercase name (the last value of repeated ones).
    pub headers: HashMap<String, String>,
    /// The raw body.
    pub body: Vec<u8>,
    /// The status it was answered with.
    pub answered: u16,
}

impl Received {
    /// A header's value, empty when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }

    /// The `tenantry-event-id` header.
    pub fn event_id(&self) -> &str {
        self.header("tenantry-event-id")
    }

    /// The `tenantry-delivery-attempt` header as a number.
    pub fn attempt(&self) -> u32 {
        self.header("tenantry-delivery-attempt")
            .parse()
            .expect("attempt number")
    }
}

/// Decides the status of each request (it sees the request before it is recorded).
pub type Plan = Arc<dyn Fn(&Received) -> u16 + Send + Sync>;

struct HttpState {
    requests: Mutex<Vec<Received>>,
    plan: Mutex<Plan>,
    delay: Mutex<Duration>,
}

/// An HTTP receiver: records every request and answers it from its plan (200 by
/// default), optionally after a delay.
pub struct HttpSink {
    pub port: u16,
    state: Arc<HttpState>,
    server: JoinHandle<()>,
}

impl HttpSink {
    /// A receiver answering 200 to everything.
    pub async fn start() -> HttpSink {
        Self::with_plan(Arc::new(|_| 200)).await
    }

    /// A receiver answering from `plan`.
    pub async fn with_plan(plan: Plan) -> HttpSink {
        let state = Arc::new(HttpState {
            requests: Mutex::new(Vec::new()),
            plan: Mutex::new(plan),
            delay: Mutex::new(Duration::ZERO),
        });
        let router = Router::new().fallback(receive).with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        HttpSink {
            port,
            state,
            server,
        }
    }

    /// A receiver failing (500) the first `failures` attempts of every delivery.
    pub async fn failing_first(failures: u32) -> HttpSink {
        Self::with_plan(Arc::new(
            move |r: &Received| {
                if r.attempt() <= failures { 500 } else { 200 }
            },
        ))
        .await
    }

    /// The URL to register.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Replaces the plan.
    pub fn set_plan(&self, plan: Plan) {
        *self.state.plan.lock().expect("plan") = plan;
    }

    /// Answers every request after `delay`.
    pub fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock().expect("delay") = delay;
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Received> {
        self.state.requests.lock().expect("requests").clone()
    }

    /// The requests about event `event_id` (`evt_…`).
    pub fn for_event(&self, event_id: &str) -> Vec<Received> {
        self.requests()
            .into_iter()
            .filter(|r| r.event_id() == event_id)
            .collect()
    }

    /// Waits (at most `within`) until `done` holds for the requests; returns them.
    pub async fn wait_until(
        &self,
        within: Duration,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        poll(within, || self.requests(), |r| done(r)).await
    }

    /// Waits (at most [`WAIT`]) for `n` requests about `event_id`; returns them.
    pub async fn wait_for_event(&self, event_id: &str, n: usize) -> Vec<Received> {
        let requests = self
            .wait_until(WAIT, |all| {
                all.iter().filter(|r| r.event_id() == event_id).count() >= n
            })
            .await;
        requests
            .into_iter()
            .filter(|r| r.event_id() == event_id)
            .collect()
    }
}

impl Drop for HttpSink {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn receive(
    State(state): State<Arc<HttpState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let mut received = Received {
        path: uri.to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    v.to_str().unwrap_or_default().to_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
        answered: 0,
    };
    let plan = state.plan.lock().expect("plan").clone();
    received.answered = plan(&received);
    let delay = *state.delay.lock().expect("delay");
    state
        .requests
        .lock()
        .expect("requests")
        .push(received.clone());
    if !delay.is_zero() {
        sleep(delay).await;
    }
    StatusCode::from_u16(received.answered).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// One message the SMTP sink accepted.
#[derive(Debug, Clone)]
pub struct Mail {
    /// The `MAIL FROM` address.
    pub from: String,
    /// The `RCPT TO` addresses.
    pub recipients: Vec<String>,
    /// The message as transmitted (headers and body, dot-stuffing removed).
    pub data: String,
}

impl Mail {
    /// The message with quoted-printable soft line breaks joined, for searching.
    pub fn text(&self) -> String {
        self.data.replace("=\r\n", "")
    }

    /// The value of header `name` (first occurrence), empty when absent.
    pub fn header(&self, name: &str) -> String {
        let prefix = format!("{}:", name.to_ascii_lowercase());
        self.data
            .split("\r\n")
            .take_while(|line| !line.is_empty())
            .find(|line| line.to_ascii_lowercase().starts_with(&prefix))
            .map(|line| line[prefix.len()..].trim().to_owned())
            .unwrap_or_default()
    }

    /// The first word of the message starting with `prefix` (e.g. a token).
    pub fn word_starting(&self, prefix: &str) -> Option<String> {
        self.text()
            .split(|c: char| c.is_whitespace())
            .find(|w| w.starts_with(prefix))
            .map(str::to_owned)
    }
}

/// What an SMTP sink shares with its sessions.
#[derive(Default)]
struct SmtpState {
    mails: Mutex<Vec<Mail>>,
    /// `MAIL FROM` commands still to refuse with a transient 451.
    to_refuse: AtomicUsize,
    /// `MAIL FROM` commands refused so far.
    refused: AtomicUsize,
}

/// An SMTP sink: 220 greeting, EHLO without STARTTLS, MAIL/RCPT/RSET/NOOP/DATA/QUIT;
/// records every message.
pub struct SmtpSink {
    pub port: u16,
    state: Arc<SmtpState>,
    server: JoinHandle<()>,
}

impl SmtpSink {
    /// Starts the sink.
    pub async fn start() -> SmtpSink {
        Self::refusing_first(0).await
    }

    /// Starts a sink that answers the first `refusals` `MAIL FROM` commands with
    /// `451` (try again later), then accepts everything.
    pub async fn refusing_first(refusals: usize) -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let state = Arc::new(SmtpState {
            to_refuse: AtomicUsize::new(refusals),
            ..SmtpState::default()
        });
        let shared = state.clone();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = shared.clone();
                tokio::spawn(async move {
                    // A stuck client cannot hold a session forever.
                    let _ = timeout(Duration::from_secs(30), session(stream, shared)).await;
                });
            }
        });
        SmtpSink {
            port,
            state,
            server,
        }
    }

    /// The lettre URL of the sink.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message so far.
    pub fn mails(&self) -> Vec<Mail> {
        self.state.mails.lock().expect("mails").clone()
    }

    /// How many `MAIL FROM` commands were refused.
    pub fn refused(&self) -> usize {
        self.state.refused.load(Ordering::SeqCst)
    }

    /// Waits (at most [`WAIT`]) for a message to `to`; returns the first one.
    pub async fn wait_for_mail_to(&self, to: &str) -> Option<Mail> {
        let to = to.to_lowercase();
        let has = |m: &Mail| m.recipients.iter().any(|r| r.to_lowercase() == to);
        poll(WAIT, || self.mails(), |all| all.iter().any(has))
            .await
            .into_iter()
            .find(has)
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The address inside `MAIL FROM:<a>` / `RCPT TO:<a> PARAMS`.
fn address(argument: &str) -> String {
    let argument = argument.trim();
    match (argument.find('<'), argument.find('>')) {
        (Some(start), Some(end)) if start < end => argument[start + 1..end].to_owned(),
        _ => argument
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_owned(),
    }
}

/// Takes one from `count` unless it is zero.
fn take_one(count: &AtomicUsize) -> bool {
    count
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

async fn session(stream: TcpStream, state: Arc<SmtpState>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 sink.test ESMTP ready\r\n").await?;
    let (mut from, mut recipients) = (String::new(), Vec::new());
    let mut line = Vec::new();
    loop {
        line.clear();
        if lines.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_owned();
        let verb = text
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-sink.test\r\n250 HELP\r\n",
            "HELO" => b"250 sink.test\r\n",
            "MAIL" if take_one(&state.to_refuse) => {
                state.refused.fetch_add(1, Ordering::SeqCst);
                b"451 4.3.0 try again later\r\n"
            }
            "MAIL" => {
                from = address(text.split_once(':').map(|x| x.1).unwrap_or_default());
                recipients.clear();
                b"250 2.1.0 ok\r\n"
            }
            "RCPT" => {
                recipients.push(address(
                    text.split_once(':').map(|x| x.1).unwrap_or_default(),
                ));
                b"250 2.1.5 ok\r\n"
            }
            "RSET" => {
                from.clear();
                recipients.clear();
                b"250 2.0.0 ok\r\n"
            }
            "NOOP" => b"250 2.0.0 ok\r\n",
            "QUIT" => {
                write.write_all(b"221 2.0.0 bye\r\n").await?;
                return Ok(());
            }
            "DATA" => {
                write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
                let mut data = String::new();
                loop {
                    line.clear();
                    if lines.read_until(b'\n', &mut line).await? == 0 {
                        return Ok(());
                    }
                    let text = String::from_utf8_lossy(&line);
                    if text == ".\r\n" || text == ".\n" {
                        break;
                    }
                    data.push_str(text.strip_prefix('.').unwrap_or(&text));
                }
                state.mails.lock().expect("mails").push(Mail {
                    from: std::mem::take(&mut from),
                    recipients: std::mem::take(&mut recipients),
                    data,
                });
                b"250 2.0.0 queued\r\n"
            }
            _ => b"502 5.5.2 not implemented\r\n",
        };
        write.write_all(reply).await?;
    }
}
