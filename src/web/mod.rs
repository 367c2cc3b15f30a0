//! The engine's HTTP server: the house's page on `web.listen` (House, Topic, Rules, Health, the
//! login, relay switches, a stream of new values) and the Prometheus `/metrics`, also alone on
//! `metrics.listen`. Pages are rendered here as HTML with inline style and a few lines of script for
//! the live values, so nothing needs building or fetching from elsewhere; they read the history
//! through the same read-only connection pool as `homewright query`, and a relay switch goes to the
//! rule thread as a command, the way a set topic's does.

pub mod auth;
mod health;
mod house;
pub mod html;
mod live;
mod rules;
pub mod serve;
mod topic;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Extension, Form, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use tracing::{info, warn};

use self::auth::{Auth, Login};
use self::html::escape;
use self::serve::{BindError, Listener, Peer};
use crate::config::Config;
use crate::event::Event;
use crate::metrics::METRICS;
use crate::metrics::queues::Queues;
use crate::os::health::IngestProgress;
use crate::store::HistoryReader;

/// What every handler reads.
pub struct Shared {
    pub(crate) auth: Auth,
    pub(crate) reader: HistoryReader,
    pub(crate) queues: Arc<Queues>,
    /// The rule thread's input, for relay commands; weak, so the rule thread still ends on shutdown.
    pub(crate) rules: flume::WeakSender<Event>,
    pub(crate) config: Arc<Config>,
    /// Whether the ingest connection is up, and how often it failed.
    pub(crate) ingest: Arc<IngestProgress>,
    /// Whether `/metrics` on `web.listen` asks for the login.
    metrics_login: bool,
    /// (unix ms, bytes) of the history's files, sampled by the health page's sampler.
    pub(crate) disk: Mutex<VecDeque<(i64, u64)>>,
}

type AppState = State<Arc<Shared>>;

/// What the engine hands the web server.
pub struct Parts {
    pub config: Arc<Config>,
    pub reader: HistoryReader,
    pub queues: Arc<Queues>,
    pub rules: flume::WeakSender<Event>,
    pub ingest: Arc<IngestProgress>,
}

/// The listeners configured (`web.listen`, `metrics.listen`), bound.
pub struct Servers {
    listeners: Vec<Listener>,
    shared: Option<Arc<Shared>>,
}

impl Servers {
    /// Binds every configured listener now, so a port in use fails the start naming its key. On one
    /// address given as both `web.listen` and `metrics.listen`, one listener serves both, with
    /// `/metrics` open.
    pub async fn bind(parts: Parts) -> Result<Servers, BindError> {
        let config = Arc::clone(&parts.config);
        let mut listeners = Vec::new();
        let mut shared = None;
        let metrics_addr = config.metrics.listen;
        if let Some(web) = &config.web {
            let same = metrics_addr == Some(web.listen);
            let state = Arc::new(Shared {
                auth: Auth::new(web.password.as_ref()),
                reader: parts.reader,
                queues: Arc::clone(&parts.queues),
                rules: parts.rules,
                config: Arc::clone(&config),
                ingest: parts.ingest,
                metrics_login: web.metrics_login && !same,
                disk: Mutex::new(VecDeque::new()),
            });
            let listener = Listener::bind(
                web.listen,
                ("the web page", "web.listen"),
                router(Arc::clone(&state)),
                true,
            )
            .await?;
            let local = listener.local_addr().unwrap_or(web.listen);
            let login = if state.auth.required() {
                "with a login"
            } else {
                "open to this machine only"
            };
            info!(address = %local, "the house's page at http://{local}/ ({login})");
            listeners.push(listener);
            shared = Some(state);
        }
        if let Some(addr) = metrics_addr
            && config.web.as_ref().is_none_or(|web| web.listen != addr)
        {
            let listener = Listener::bind(
                addr,
                ("metrics", "metrics.listen"),
                metrics_router(parts.queues),
                false,
            )
            .await?;
            let local = listener.local_addr().unwrap_or(addr);
            info!(address = %local, "metrics at http://{local}/metrics");
            listeners.push(listener);
        }
        Ok(Servers { listeners, shared })
    }

    /// Whether anything is configured to serve.
    pub fn is_empty(&self) -> bool {
        self.listeners.is_empty()
    }

    /// Serves until `shutdown`.
    pub async fn run(self, shutdown: tokio_util::sync::CancellationToken) {
        let mut tasks = tokio::task::JoinSet::new();
        for listener in self.listeners {
            tasks.spawn(listener.run(shutdown.clone()));
        }
        if let Some(shared) = self.shared {
            tasks.spawn(health::sample_disk(shared, shutdown.clone()));
        }
        while tasks.join_next().await.is_some() {}
    }
}

fn router(state: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(house::page))
        .route("/events", get(live::events))
        .route("/topic", get(topic::page))
        .route("/rules", get(rules::page))
        .route("/health", get(health::page))
        .route("/relays/{name}", post(house::switch))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(state)
}

fn metrics_router(queues: Arc<Queues>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let queues = Arc::clone(&queues);
                async move { metrics_text(&queues) }
            }),
        )
        .fallback(|| async { (StatusCode::NOT_FOUND, "try /metrics\n") })
}

fn metrics_text(queues: &Queues) -> Response {
    let mut response = METRICS.render(&queues.depths()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

async fn metrics(State(state): AppState, headers: HeaderMap) -> Response {
    if state.metrics_login && state.auth.csrf(&headers).is_none() {
        let text = "log in at /login first, or set web.metrics_login: false for a Prometheus server\n";
        return (StatusCode::UNAUTHORIZED, text).into_response();
    }
    metrics_text(&state.queues)
}

/// Why a request without a live session is not served.
pub(crate) enum Denied {
    /// A page: the visitor is sent to the login.
    Login,
    /// Anything else: refused.
    Refused,
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        match self {
            Denied::Login => Redirect::to("/login").into_response(),
            Denied::Refused => html::respond(
                StatusCode::FORBIDDEN,
                "<p class=\"error\">Log in first.</p>".into(),
            ),
        }
    }
}

/// The session's CSRF token, or why the request is not served: a page sends the visitor to the
/// login, anything else is refused.
pub(crate) fn gate(state: &Shared, headers: &HeaderMap, is_page: bool) -> Result<String, Denied> {
    match state.auth.csrf(headers) {
        Some(csrf) => Ok(csrf),
        None if is_page => Err(Denied::Login),
        None => Err(Denied::Refused),
    }
}

/// The logout button's token, shown only where there is a login.
pub(crate) fn logout_token<'a>(state: &Shared, csrf: &'a str) -> Option<&'a str> {
    state.auth.required().then_some(csrf)
}

async fn not_found() -> Response {
    html::respond(
        StatusCode::NOT_FOUND,
        "<!doctype html><title>Not found</title><p>Nothing here. Go to <a href=\"/\">the house</a>.</p>"
            .into(),
    )
}

fn login_form(status: StatusCode, error: Option<&str>) -> Response {
    let error = error
        .map(|e| format!("<p class=\"error\">{}</p>", escape(e)))
        .unwrap_or_default();
    let body = format!(
        "<form id=\"login\" class=\"login\" method=\"post\" action=\"/login\"><h1>Log in</h1>{error}\
         <input name=\"password\" type=\"password\" autocomplete=\"current-password\" placeholder=\"Password\" aria-label=\"Password\" autofocus required>\
         <button type=\"submit\">Log in</button></form>"
    );
    let mut response = html::page("Log in", "/login", None, &body);
    *response.status_mut() = status;
    response
}

async fn login_page(State(state): AppState, headers: HeaderMap) -> Response {
    if !state.auth.required() || state.auth.csrf(&headers).is_some() {
        return Redirect::to("/").into_response();
    }
    login_form(StatusCode::OK, None)
}

#[derive(serde::Deserialize)]
struct LoginForm {
    #[serde(default)]
    password: String,
}

async fn login(
    State(state): AppState,
    Extension(Peer(peer)): Extension<Peer>,
    Form(form): Form<LoginForm>,
) -> Response {
    if !state.auth.required() {
        return Redirect::to("/").into_response();
    }
    let client = peer.ip();
    match state.auth.login(client, &form.password) {
        Login::Granted(token) => {
            info!(client = %client, "logged in to the web page");
            let mut response = Redirect::to("/").into_response();
            if let Ok(cookie) = HeaderValue::from_str(&auth::set_cookie(&token)) {
                response.headers_mut().insert(header::SET_COOKIE, cookie);
            }
            html::secure(response.headers_mut());
            response
        }
        Login::Refused => {
            warn!(client = %client, "failed login to the web page: wrong password");
            login_form(StatusCode::UNAUTHORIZED, Some("Wrong password."))
        }
        Login::Wait(wait) => {
            warn!(client = %client, "login to the web page refused: too many failed logins from this address");
            login_form(
                StatusCode::TOO_MANY_REQUESTS,
                Some(&format!(
                    "Too many failed logins from {client}: try again in {} s.",
                    wait.as_secs().max(1)
                )),
            )
        }
    }
}

#[derive(serde::Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

async fn logout(State(state): AppState, headers: HeaderMap, Form(form): Form<CsrfForm>) -> Response {
    let Some(expected) = state.auth.csrf(&headers) else {
        return Redirect::to("/login").into_response();
    };
    if !auth::csrf_matches(&expected, &form.csrf) {
        return html::respond(
            StatusCode::FORBIDDEN,
            "<p class=\"error\">This form is out of date: reload the page.</p>".into(),
        );
    }
    state.auth.logout(&headers);
    let mut response = Redirect::to("/login").into_response();
    if let Ok(cookie) = HeaderValue::from_str(&auth::clear_cookie()) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}
