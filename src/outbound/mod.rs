//! The outbound stage: notifications and HTTP calls rules asked for, delivered through a persistent
//! outbox (the `deliveries` table) so that an outage of the internet, the phone service or the
//! webhook delays them instead of losing them.
//!
//! ```text
//! actions --Delivery--> Outbound: write the row, queue it on its lane --> client (HTTP) --> service
//!                                                                     \-> recorder (`actions` row)
//! ```
//!
//! - A *lane* is one destination: a notification channel, or the host of an `http()` call. Rows are
//!   delivered one at a time per lane, oldest first, so a phone shows "door open" before "door
//!   closed" even after an outage; lanes do not wait for each other, so a webhook that never answers
//!   holds up only its own calls.
//! - A network error, a timeout, a 5xx, 408 or 429 is retried after a pause that doubles from
//!   [`FIRST_RETRY`] to [`LAST_RETRY`]; any other 4xx is a refusal that retrying would not change:
//!   logged with the status and the first line of the answer, and not retried.
//! - A row older than `http.max_age` when its turn comes is dropped with a warning.
//! - Every row ends as one `actions` row (`sent`, `failed` or `dropped`, with the last HTTP status),
//!   written by the recorder, and is then deleted from `deliveries`. A row in flight when the engine
//!   stops stays and is sent again at the next start: delivery is at least once.
//! - Channel secrets are never written to the table: a notification row names its channel, and the
//!   request is made from the configuration when it is sent. Logs name the channel, or the method and
//!   the URL without its user information and query values.

pub mod channel;
pub mod client;
pub mod url;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

use self::client::{Answer, Client, Prepared, SendError};
use crate::config::OutboundConfig;
use crate::event::{Delivered, HttpCall, Notification, Output, now_millis};
use crate::metrics::METRICS;
use crate::store::Store;
use crate::store::deliveries::StoredDelivery;

/// Deliveries queued toward this stage before the actions stage waits. The stage takes them at once
/// (it only writes a row before queuing each), so this absorbs a burst of a rule's calls.
pub const CHANNEL_CAPACITY: usize = 256;
/// The first pause before a failed delivery is tried again.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest pause between two tries: a service that comes back is used within a minute.
pub const LAST_RETRY: Duration = Duration::from_secs(60);
/// How long a stop waits for deliveries in flight; what is still unanswered is sent at the next start.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// What a rule asked to have delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Notify { channel: String, note: Notification },
    Http(HttpCall),
}

/// One delivery on its way to the outbound stage.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub rule: Arc<str>,
    /// When the rule asked, unix ms: its age decides when it is dropped.
    pub ts: i64,
    pub request: Request,
}

impl Request {
    /// `notify` or `http`: the `kind` in `actions` and `deliveries`.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Notify { .. } => "notify",
            Request::Http(_) => "http",
        }
    }

    /// The destination whose deliveries keep their order.
    fn lane(&self) -> String {
        match self {
            Request::Notify { channel, .. } => format!("notify {channel}"),
            Request::Http(call) => match url::Parts::split(&call.url) {
                Ok(parts) => format!("http {}", parts.authority().to_ascii_lowercase()),
                Err(_) => "http".into(),
            },
        }
    }

    /// The `actions.target`: the channel name, or the method and the URL without secrets.
    pub fn target(&self) -> String {
        match self {
            Request::Notify { channel, .. } => channel.clone(),
            Request::Http(call) => call.target(),
        }
    }

    /// The `actions.value`: the notification's text, or the call's body.
    pub fn value(&self) -> Bytes {
        match self {
            Request::Notify { note, .. } => Bytes::from(note.text.clone()),
            Request::Http(call) => call.body.clone(),
        }
    }
}

impl HttpCall {
    /// The method and the URL without user information or query values: what logs and `actions` show.
    pub fn target(&self) -> String {
        match url::Parts::split(&self.url) {
            Ok(parts) => format!("{} {}", self.method, parts.redacted()),
            Err(_) => format!("{} (a URL that cannot be read)", self.method),
        }
    }

    /// The request, and the values to hide in what comes back: header values, the URL's password and
    /// its query values.
    fn prepare(&self, parts: &url::Parts) -> (Prepared, Vec<String>) {
        let tls = parts.scheme == "https";
        let mut headers = self.headers.clone();
        let mut secrets: Vec<String> = self
            .headers
            .iter()
            .filter(|(name, _)| !name.eq_ignore_ascii_case("content-type"))
            .map(|(_, value)| value.clone())
            .collect();
        if let Some(user) = &parts.user {
            let password = parts.password.clone().unwrap_or_default();
            let pair = format!("{user}:{password}");
            headers.push((
                "Authorization".into(),
                format!("Basic {}", channel::base64(pair.as_bytes())),
            ));
            secrets.push(password);
        }
        if let Some(query) = &parts.query {
            secrets.extend(
                query
                    .split('&')
                    .filter_map(|pair| pair.split_once('='))
                    .map(|(_, v)| v.to_string()),
            );
        }
        let prepared = Prepared {
            method: self.method.clone(),
            tls,
            host: parts.host.clone(),
            port: parts.port.unwrap_or(if tls { 443 } else { 80 }),
            path: parts.path_and_query(),
            headers,
            body: self.body.clone(),
        };
        (prepared, secrets)
    }
}

/// How one try ended.
enum Tried {
    Sent(u16),
    Refused(Answer),
    Retry(String, Option<u16>),
    /// Cannot be made at all (a channel no longer configured, a host no longer allowed).
    Impossible(String),
}

/// A row waiting on its lane.
struct Pending {
    id: Option<i64>,
    delivery: Delivery,
    tries: u32,
    last_status: Option<u16>,
}

#[derive(Default)]
struct Lane {
    queue: VecDeque<Pending>,
    busy: bool,
    retry_at: Option<Instant>,
    pause: Duration,
}

/// The outbound stage. Ends when its input closes (the actions stage is done).
pub struct Outbound {
    pub store: Store,
    pub input: mpsc::Receiver<Delivery>,
    pub recorder: mpsc::Sender<Vec<Output>>,
    pub config: Arc<OutboundConfig>,
    pub client: Client,
}

impl Outbound {
    /// The stage for `config`'s channels and delivery settings.
    pub fn new(
        config: &crate::config::Config,
        store: Store,
        input: mpsc::Receiver<Delivery>,
        recorder: mpsc::Sender<Vec<Output>>,
    ) -> Outbound {
        Outbound {
            store,
            input,
            recorder,
            config: Arc::new(config.outbound.clone()),
            client: Client::default(),
        }
    }

    /// Delivers what the outbox holds from before, then what arrives, until the input closes.
    pub async fn run(mut self) {
        let mut lanes: BTreeMap<String, Lane> = BTreeMap::new();
        self.restore(&mut lanes).await;
        let mut tries: JoinSet<(String, Tried)> = JoinSet::new();
        loop {
            self.start_due(&mut lanes, &mut tries).await;
            let wake = next_retry(&lanes);
            tokio::select! {
                received = self.input.recv() => match received {
                    Some(delivery) => self.accept(delivery, &mut lanes).await,
                    None => break,
                },
                Some(joined) = tries.join_next() => self.settle(joined, &mut lanes).await,
                _ = sleep_until(wake), if wake.is_some() => {}
            }
        }
        let grace = tokio::time::sleep(STOP_GRACE);
        tokio::pin!(grace);
        while !tries.is_empty() {
            tokio::select! {
                Some(joined) = tries.join_next() => self.settle(joined, &mut lanes).await,
                _ = &mut grace => break,
            }
        }
        let waiting: usize = lanes.values().map(|lane| lane.queue.len()).sum();
        if waiting > 0 {
            info!(
                deliveries = waiting,
                "stopping with undelivered notifications or HTTP calls; kept for the next start"
            );
        }
        // Tries still running are aborted with the set; their rows are still in the outbox.
    }

    /// Queues what a previous run left in the outbox, in its order.
    async fn restore(&self, lanes: &mut BTreeMap<String, Lane>) {
        let rows = match self.store.deliveries().await {
            Ok(rows) => rows,
            Err(e) => {
                error!("cannot read the outbox of notifications and HTTP calls: {e}; they wait there");
                return;
            }
        };
        if !rows.is_empty() {
            info!(
                deliveries = rows.len(),
                "notifications and HTTP calls from before the restart are delivered first"
            );
        }
        for row in rows {
            let id = row.id;
            match decode(row) {
                Ok(delivery) => push(lanes, Some(id), delivery),
                Err(e) => {
                    warn!("an outbox row cannot be read ({e}); removed");
                    self.forget(Some(id)).await;
                }
            }
        }
    }

    /// Writes a new delivery to the outbox and queues it on its lane.
    async fn accept(&self, delivery: Delivery, lanes: &mut BTreeMap<String, Lane>) {
        let stored = encode(&delivery);
        let id = match self.store.push_delivery(&stored).await {
            Ok(id) => Some(id),
            Err(e) => {
                // Still delivered from memory; only a restart before that would lose it.
                error!(rule = %delivery.rule, "cannot write the outbox: {e}; this {} is not kept across a restart", delivery.request.kind());
                None
            }
        };
        push(lanes, id, delivery);
    }

    /// Starts a try on every idle lane whose head is due, dropping heads that are too old.
    async fn start_due(&self, lanes: &mut BTreeMap<String, Lane>, tries: &mut JoinSet<(String, Tried)>) {
        let now = Instant::now();
        let max_age = i64::try_from(self.config.max_age.as_millis()).unwrap_or(i64::MAX);
        let keys: Vec<String> = lanes
            .iter()
            .filter(|(_, lane)| {
                !lane.busy && !lane.queue.is_empty() && lane.retry_at.is_none_or(|at| at <= now)
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in keys {
            let Some(lane) = lanes.get_mut(&key) else { continue };
            while let Some(head) = lane.queue.front() {
                if now_millis().saturating_sub(head.delivery.ts) <= max_age {
                    break;
                }
                if let Some(head) = lane.queue.pop_front() {
                    self.drop_old(head).await;
                }
            }
            let Some(head) = lane.queue.front() else {
                lane.retry_at = None;
                lane.pause = Duration::ZERO;
                continue;
            };
            lane.busy = true;
            let prepared = self.prepare(&head.delivery.request);
            let client = self.client.clone();
            let timeout = self.config.timeout;
            let lane_key = key.clone();
            // Tries run in this stage's own set, so a slow server delays only its lane, and the set
            // aborts what is left when the stage ends: nothing outlives the stage.
            tries.spawn(async move {
                let tried = match prepared {
                    Ok((prepared, secrets)) => classify(client.send(&prepared, timeout).await, &secrets),
                    Err(reason) => Tried::Impossible(reason),
                };
                (lane_key, tried)
            });
        }
    }

    /// The request to send and the secrets to hide in what comes back.
    fn prepare(&self, request: &Request) -> Result<(Prepared, Vec<String>), String> {
        match request {
            Request::Notify { channel, note } => {
                let Some(configured) = self.config.channels.get(channel) else {
                    return Err(format!(
                        "the channel `{channel}` is no longer in notify: of the config"
                    ));
                };
                Ok((configured.request(note), configured.secrets()))
            }
            Request::Http(call) => {
                let parts = url::Parts::split(&call.url)?;
                if !self.config.allows(&parts) {
                    return Err(format!("{} is no longer in http.allow", parts.authority()));
                }
                Ok(call.prepare(&parts))
            }
        }
    }

    /// Ends a try: delivered, refused or impossible rows leave the outbox; others wait for a retry.
    async fn settle(
        &self,
        joined: Result<(String, Tried), tokio::task::JoinError>,
        lanes: &mut BTreeMap<String, Lane>,
    ) {
        let (key, tried) = match joined {
            Ok(done) => done,
            Err(e) => {
                // A try panicked or was aborted: its lane stays busy and is not tried again this run.
                error!("a delivery try ended abnormally: {e}");
                return;
            }
        };
        let Some(lane) = lanes.get_mut(&key) else { return };
        lane.busy = false;
        if let Tried::Retry(reason, status) = tried {
            let Some(head) = lane.queue.front_mut() else {
                return;
            };
            head.tries += 1;
            head.last_status = status.or(head.last_status);
            lane.pause = if lane.pause.is_zero() {
                FIRST_RETRY
            } else {
                (lane.pause * 2).min(LAST_RETRY)
            };
            lane.retry_at = Some(Instant::now() + lane.pause);
            METRICS.deliveries_retried.add(1);
            let request = &head.delivery.request;
            warn!(rule = %head.delivery.rule, "{} {}: {reason}; try {} failed, trying again in {:?}",
                request.kind(), request.target(), head.tries, lane.pause);
            return;
        }
        lane.pause = Duration::ZERO;
        lane.retry_at = None;
        let Some(head) = lane.queue.pop_front() else {
            return;
        };
        let (kind, target) = (head.delivery.request.kind(), head.delivery.request.target());
        let rule = Arc::clone(&head.delivery.rule);
        match tried {
            Tried::Sent(status) => {
                METRICS.deliveries_sent.add(1);
                debug!(rule = %rule, status, "{kind} {target}: delivered");
                self.finish(head, "sent", Some(status)).await;
            }
            Tried::Refused(answer) => {
                METRICS.deliveries_failed.add(1);
                error!(rule = %rule, status = answer.status, "{kind} {target}: refused with HTTP {}: {}; not retried",
                    answer.status, answer.first_line);
                self.finish(head, "failed", Some(answer.status)).await;
            }
            Tried::Impossible(reason) => {
                METRICS.deliveries_failed.add(1);
                error!(rule = %rule, "{kind} {target}: {reason}; not sent");
                self.finish(head, "failed", None).await;
            }
            Tried::Retry(..) => {}
        }
    }

    async fn drop_old(&self, head: Pending) {
        METRICS.deliveries_dropped.add(1);
        warn!(rule = %head.delivery.rule, "{} {}: not delivered within http.max_age ({:?}); dropped after {} tries",
            head.delivery.request.kind(), head.delivery.request.target(), self.config.max_age, head.tries);
        self.finish(head, "dropped", None).await;
    }

    /// Records a row's outcome in `actions` and removes it from the outbox.
    async fn finish(&self, pending: Pending, outcome: &'static str, status: Option<u16>) {
        let delivery = pending.delivery;
        let record = Delivered {
            rule: Arc::clone(&delivery.rule),
            ts: delivery.ts,
            kind: delivery.request.kind(),
            target: delivery.request.target(),
            value: delivery.request.value(),
            outcome,
            status: status.or(pending.last_status),
        };
        if self.recorder.send(vec![Output::Delivered(record)]).await.is_err() {
            error!("the recorder is gone; deliveries are no longer recorded");
        }
        self.forget(pending.id).await;
    }

    async fn forget(&self, id: Option<i64>) {
        let Some(id) = id else { return };
        if let Err(e) = self.store.remove_delivery(id).await {
            // Finished already; a restart before the removal would send it once more.
            warn!("cannot remove a finished delivery from the outbox: {e}");
        }
    }
}

fn push(lanes: &mut BTreeMap<String, Lane>, id: Option<i64>, delivery: Delivery) {
    lanes
        .entry(delivery.request.lane())
        .or_default()
        .queue
        .push_back(Pending {
            id,
            delivery,
            tries: 0,
            last_status: None,
        });
}

/// The earliest time a lane waiting for a retry is due.
fn next_retry(lanes: &BTreeMap<String, Lane>) -> Option<Instant> {
    lanes
        .values()
        .filter(|lane| !lane.busy && !lane.queue.is_empty())
        .filter_map(|lane| lane.retry_at)
        .min()
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What a try's result means for the row. 408 and 429 ask to come back later; other 4xx will not
/// change by retrying.
fn classify(result: Result<Answer, SendError>, secrets: &[String]) -> Tried {
    match result {
        Ok(answer) if answer.status < 400 => Tried::Sent(answer.status),
        Ok(answer) if answer.status == 408 || answer.status == 429 || answer.status >= 500 => Tried::Retry(
            format!("HTTP {}: {}", answer.status, redact(&answer.first_line, secrets)),
            Some(answer.status),
        ),
        Ok(answer) => Tried::Refused(Answer {
            status: answer.status,
            first_line: redact(&answer.first_line, secrets),
        }),
        Err(e) if e.is_transient() => Tried::Retry(redact(&e.to_string(), secrets), None),
        Err(e) => Tried::Impossible(redact(&e.to_string(), secrets)),
    }
}

/// `text` with each secret replaced by `***`, in case a server echoes what it was sent.
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut text = text.to_string();
    for secret in secrets {
        // Very short values (a header `1`) would blank out ordinary text; no service issues such tokens.
        if secret.len() >= 4 {
            text = text.replace(secret.as_str(), "***");
        }
    }
    text
}

/// The outbox row of a delivery: the request as JSON, the body of a call apart.
fn encode(delivery: &Delivery) -> StoredDelivery {
    let (request, body) = match &delivery.request {
        Request::Notify { channel, note } => (
            serde_json::json!({ "channel": channel, "note": note }),
            Bytes::new(),
        ),
        Request::Http(call) => (
            serde_json::json!({ "method": call.method, "url": call.url, "headers": call.headers }),
            call.body.clone(),
        ),
    };
    StoredDelivery {
        id: 0,
        ts: delivery.ts,
        rule: delivery.rule.to_string(),
        kind: delivery.request.kind().to_string(),
        request: request.to_string(),
        body,
    }
}

fn decode(row: StoredDelivery) -> Result<Delivery, String> {
    #[derive(serde::Deserialize)]
    struct NotifyRow {
        channel: String,
        note: Notification,
    }
    #[derive(serde::Deserialize)]
    struct HttpRow {
        method: String,
        url: String,
        headers: Vec<(String, String)>,
    }
    let request = match row.kind.as_str() {
        "notify" => {
            let r: NotifyRow = serde_json::from_str(&row.request).map_err(|e| e.to_string())?;
            Request::Notify {
                channel: r.channel,
                note: r.note,
            }
        }
        "http" => {
            let r: HttpRow = serde_json::from_str(&row.request).map_err(|e| e.to_string())?;
            Request::Http(HttpCall {
                method: r.method,
                url: r.url,
                headers: r.headers,
                body: row.body,
            })
        }
        other => return Err(format!("unknown kind `{other}`")),
    };
    Ok(Delivery {
        rule: row.rule.into(),
        ts: row.ts,
        request,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_final_and_server_trouble_is_retried() {
        let answer = |status| {
            Ok(Answer {
                status,
                first_line: "no token abcd1234 here".into(),
            })
        };
        let secrets = vec!["abcd1234".to_string()];
        assert!(matches!(classify(answer(200), &secrets), Tried::Sent(200)));
        assert!(matches!(
            classify(answer(503), &secrets),
            Tried::Retry(_, Some(503))
        ));
        assert!(matches!(
            classify(answer(429), &secrets),
            Tried::Retry(_, Some(429))
        ));
        match classify(answer(401), &secrets) {
            Tried::Refused(answer) => assert_eq!(answer.first_line, "no token *** here"),
            _ => panic!("a 401 is a refusal"),
        }
        let timeout = Err(SendError::Timeout {
            host: "h".into(),
            after: Duration::from_secs(1),
        });
        assert!(matches!(classify(timeout, &secrets), Tried::Retry(_, None)));
    }

    #[test]
    fn a_delivery_survives_its_outbox_row() {
        let note = Notification {
            text: "hi".into(),
            title: Some("t".into()),
            priority: Some(5),
            tags: vec!["a".into()],
            click: None,
        };
        for request in [
            Request::Notify {
                channel: "phone".into(),
                note,
            },
            Request::Http(HttpCall {
                method: "PUT".into(),
                url: "http://h:1/x".into(),
                headers: vec![("A".into(), "b".into())],
                body: Bytes::from_static(b"{}"),
            }),
        ] {
            let delivery = Delivery {
                rule: "r".into(),
                ts: 7,
                request: request.clone(),
            };
            let back = decode(encode(&delivery)).unwrap();
            assert_eq!((back.request, back.ts, &*back.rule), (request, 7, "r"));
        }
    }
}
