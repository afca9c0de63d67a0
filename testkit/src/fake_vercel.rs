//! A loopback fake of Vercel's `POST /v1/edge-cache/dangerously-delete-by-src-images`
//! (and its sibling `invalidate-by-src-images`, which the official SDK also
//! sends and origin-watch never does) that enforces the documented request
//! contract, records every request it receives and can be told to fail (429
//! with `Retry-After`, 500, or any fixed status), so tests assert on what the
//! client actually sent.
//!
//! The checks are deliberately strict, stricter than the real API may be:
//! a client that passes this fake sends exactly the shape the contract and
//! the official `@vercel/sdk` send.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::ServerHandle;
use crate::image_cache::ImageCache;

/// The endpoint origin-watch calls: only its calls count as purged.
pub const PURGE_PATH: &str = "/v1/edge-cache/dangerously-delete-by-src-images";
/// The sibling endpoint (mark stale rather than delete): served so that
/// every request the official SDK sends is accepted, never called by
/// origin-watch, and never counted as purged.
pub const INVALIDATE_PATH: &str = "/v1/edge-cache/invalidate-by-src-images";
/// Most sources in one call (documented `maxItems`).
pub const MAX_SRC_IMAGES: usize = 8;
/// Longest source string, in characters (documented `maxLength`).
pub const MAX_SRC_IMAGE_CHARS: usize = 8192;
/// Largest `revalidationDeadlineSeconds` (one year, documented `maximum`).
pub const MAX_DEADLINE_SECONDS: u64 = 31_536_000;

/// Query keys the endpoint accepts.
const QUERY_KEYS: [&str; 3] = ["projectIdOrName", "teamId", "slug"];
/// Body keys each endpoint accepts (`additionalProperties: false`).
const PURGE_BODY_KEYS: &[&str] = &["srcImages", "revalidationDeadlineSeconds"];
const INVALIDATE_BODY_KEYS: &[&str] = &["srcImages"];
/// A valid body is at most ~66 KiB; anything far larger is a client bug, and
/// the cap keeps a runaway client from filling the test's memory.
const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What the fake checks against and how it misbehaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeVercelConfig {
    /// The bearer token a call must carry: `Authorization: Bearer <token>`.
    pub token: String,
    /// The first this-many valid calls are answered 429 with `Retry-After`.
    pub fail_429: u32,
    /// The `Retry-After` value, in seconds, sent with those 429s.
    pub retry_after_secs: u64,
    /// How the 429s say `Retry-After`: as seconds, as an HTTP date that many
    /// seconds from now, or not at all.
    pub retry_after_form: RetryAfterForm,
    /// After the 429s, this many valid calls are answered 500.
    pub fail_500: u32,
    /// After the faults above, every valid call gets this status (with a
    /// Vercel-style error body unless it is a 2xx).
    pub fixed_status: Option<u16>,
    /// How long each call waits, after it is recorded, before it is
    /// answered (a slow API, for shutdown tests).
    pub delay: std::time::Duration,
    /// The origin the simulated image cache (`GET /_next/image?url=`)
    /// fills from; `None`: no image cache is served.
    pub origin: Option<String>,
    /// The projects `GET /v9/projects/{idOrName}` knows (`check --online`).
    pub projects: Vec<FakeProject>,
}

/// How a 429 carries its `Retry-After` (RFC 9110 allows seconds or a date).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RetryAfterForm {
    /// `Retry-After: 7`.
    #[default]
    Seconds,
    /// `Retry-After: Wed, 21 Oct 2026 07:28:07 GMT`, `retry_after_secs` from now.
    HttpDate,
    /// No `Retry-After` header: the client backs off on its own.
    Absent,
}

/// A project the fake serves on `GET /v9/projects/{idOrName}?teamId=&slug=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeProject {
    pub id: String,
    pub name: String,
    /// The owning team's id and slug; both `None` for a personal project.
    pub team_id: Option<String>,
    pub slug: Option<String>,
}

impl FakeProject {
    /// A project of the team `team_id` (slug `slug`).
    pub fn new(name: &str, team_id: Option<&str>, slug: Option<&str>) -> FakeProject {
        FakeProject {
            id: format!("prj_{name}"),
            name: name.to_owned(),
            team_id: team_id.map(str::to_owned),
            slug: slug.map(str::to_owned),
        }
    }
}

impl FakeVercelConfig {
    /// A fake that accepts `token` and never misbehaves.
    pub fn new(token: impl Into<String>) -> Self {
        Self {
            token: token.into(),
            ..Self::default()
        }
    }
}

impl Default for FakeVercelConfig {
    fn default() -> Self {
        Self {
            token: "test-token".to_owned(),
            fail_429: 0,
            retry_after_secs: 1,
            retry_after_form: RetryAfterForm::Seconds,
            fail_500: 0,
            fixed_status: None,
            delay: std::time::Duration::ZERO,
            origin: None,
            projects: Vec::new(),
        }
    }
}

/// One request as the fake received it, and what it answered.
#[derive(Debug, Clone)]
pub struct RecordedCall {
    pub method: String,
    pub path: String,
    /// The query string exactly as sent, without the `?`.
    pub raw_query: String,
    /// The query pairs, percent-decoded, in the order sent.
    pub query: Vec<(String, String)>,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    /// The body, lossily decoded as UTF-8.
    pub body: String,
    /// The string items of `srcImages`; empty if the body did not parse.
    pub src_images: Vec<String>,
    /// `revalidationDeadlineSeconds` as sent, if present (even if invalid).
    pub deadline: Option<Value>,
    /// The status the fake answered.
    pub status: u16,
    /// The `x-vercel-id` the fake answered with (unique per request, as Vercel's).
    pub vercel_id: String,
}

impl RecordedCall {
    /// The first decoded value of query key `key`.
    pub fn query_value(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

type CallHook = Arc<dyn Fn(&RecordedCall) + Send + Sync>;

struct Shared {
    /// The simulated image cache, when the config names an origin.
    cache: Option<Arc<ImageCache>>,
    state: Mutex<FakeState>,
    hook: Mutex<Option<CallHook>>,
}

struct FakeState {
    cfg: FakeVercelConfig,
    /// Calls that passed auth and validation since the last `set_config`;
    /// the fault knobs count over these.
    valid_calls: u64,
    calls: Vec<RecordedCall>,
}

/// A running fake Vercel API on `127.0.0.1`. Stops when dropped.
pub struct FakeVercel {
    shared: Arc<Shared>,
    server: ServerHandle,
}

impl fmt::Debug for FakeVercel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeVercel")
            .field("addr", &self.server.addr())
            .finish_non_exhaustive()
    }
}

impl FakeVercel {
    /// Starts the fake on an ephemeral loopback port.
    pub async fn start(cfg: FakeVercelConfig) -> std::io::Result<FakeVercel> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), cfg).await
    }

    /// Starts the fake on `addr` (the example binds a fixed port).
    pub async fn start_on(addr: SocketAddr, cfg: FakeVercelConfig) -> std::io::Result<FakeVercel> {
        let shared = Arc::new(Shared {
            cache: cfg.origin.as_deref().map(|o| Arc::new(ImageCache::new(o))),
            state: Mutex::new(FakeState {
                cfg,
                valid_calls: 0,
                calls: Vec::new(),
            }),
            hook: Mutex::new(None),
        });
        let router = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let server = ServerHandle::spawn(listener, router)?;
        Ok(FakeVercel { shared, server })
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://127.0.0.1:PORT`, the value for `vercel.api_base`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Every request received so far, in arrival order.
    pub fn calls(&self) -> Vec<RecordedCall> {
        lock(&self.shared.state).calls.clone()
    }

    /// The sources of every delete call answered 200, in arrival order,
    /// flattened.
    pub fn purged(&self) -> Vec<String> {
        lock(&self.shared.state)
            .calls
            .iter()
            .filter(|call| call.status == 200 && call.path == PURGE_PATH)
            .flat_map(|call| call.src_images.iter().cloned())
            .collect()
    }

    /// The configuration in force.
    pub fn config(&self) -> FakeVercelConfig {
        lock(&self.shared.state).cfg.clone()
    }

    /// Replaces the configuration and restarts the fault counters, so
    /// `fail_429: 2` means the next two valid calls.
    pub fn set_config(&self, cfg: FakeVercelConfig) {
        let mut state = lock(&self.shared.state);
        state.cfg = cfg;
        state.valid_calls = 0;
    }

    /// Forgets the recorded calls (the fault counters keep counting).
    pub fn clear(&self) {
        lock(&self.shared.state).calls.clear();
    }

    /// Calls `f` with every request after it is recorded (replacing any
    /// earlier hook); the example uses it to log calls as they arrive.
    pub fn on_call(&self, f: impl Fn(&RecordedCall) + Send + Sync + 'static) {
        *lock(&self.shared.hook) = Some(Arc::new(f));
    }

    /// Stops accepting and waits (a few seconds at most) for open
    /// connections to finish.
    pub async fn shutdown(mut self) {
        self.server.shutdown().await;
    }
}

/// A poisoned lock only means a test panicked mid-update; the data is still
/// the best record of what happened, so keep serving it.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What to answer: a status and, unless it is a 2xx, a Vercel error body.
struct Reply {
    status: StatusCode,
    error: Option<(&'static str, String)>,
    retry_after: Option<HeaderValue>,
    /// A JSON body for a 2xx (the project lookup).
    body: Option<Value>,
}

impl Reply {
    fn ok() -> Self {
        Self {
            status: StatusCode::OK,
            error: None,
            retry_after: None,
            body: None,
        }
    }

    fn error(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            error: Some((code, message.into())),
            retry_after: None,
            body: None,
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::error(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    fn into_response(self) -> Response {
        let mut response = match self.error {
            None => match self.body {
                Some(body) => (self.status, axum::Json(body)).into_response(),
                None => self.status.into_response(),
            },
            Some((code, message)) => (
                self.status,
                axum::Json(json!({ "error": { "code": code, "message": message } })),
            )
                .into_response(),
        };
        if let Some(value) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    if let (Some(cache), true) = (&shared.cache, request.uri().path() == "/_next/image") {
        let src = url::form_urlencoded::parse(request.uri().query().unwrap_or_default().as_bytes())
            .find(|(k, _)| k == "url")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        return cache.serve(&src).await;
    }
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY_BYTES).await;
    let body_too_large = body.is_err();
    let body = body.unwrap_or_default();

    let raw_query = parts.uri.query().unwrap_or_default().to_owned();
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let mut call = RecordedCall {
        method: parts.method.as_str().to_owned(),
        path: parts.uri.path().to_owned(),
        query: url::form_urlencoded::parse(raw_query.as_bytes())
            .into_owned()
            .collect(),
        raw_query,
        authorization: header_text(&parts.headers, header::AUTHORIZATION),
        content_type: header_text(&parts.headers, header::CONTENT_TYPE),
        body: String::from_utf8_lossy(&body).into_owned(),
        src_images: src_images_of(parsed.as_ref()),
        deadline: parsed
            .as_ref()
            .and_then(|v| v.get("revalidationDeadlineSeconds"))
            .cloned(),
        status: 0,
        vercel_id: String::new(),
    };

    let (reply, delay) = {
        let mut state = lock(&shared.state);
        call.vercel_id = format!("fra1::fake-{:06}", state.calls.len() + 1);
        let checked = if body_too_large {
            Err(Reply::error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("request body exceeds {MAX_BODY_BYTES} bytes"),
            ))
        } else {
            validate(&parts.method, &parts.headers, &call, &body, &state.cfg)
        };
        let project = (parts.method == Method::GET)
            .then(|| call.path.strip_prefix("/v9/projects/"))
            .flatten();
        let reply = match (project, checked) {
            (Some(p), _) => project_reply(&parts.headers, &call, p, &state.cfg),
            (None, Err(rejection)) => rejection,
            (None, Ok(())) => next_valid_reply(&mut state),
        };
        call.status = reply.status.as_u16();
        state.calls.push(call.clone());
        (reply, state.cfg.delay)
    };

    // Cloned out of the lock so a slow hook (printing) never blocks recording.
    let hook = lock(&shared.hook).clone();
    if let Some(hook) = hook {
        hook(&call);
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let (Some(cache), 200) = (&shared.cache, call.status) {
        match call.path.as_str() {
            PURGE_PATH => cache.delete(&call.src_images),
            INVALIDATE_PATH => cache.invalidate(&call.src_images),
            _ => {}
        }
    }
    let mut response = reply.into_response();
    if let Ok(id) = HeaderValue::from_str(&call.vercel_id) {
        response.headers_mut().insert("x-vercel-id", id);
    }
    response
}

/// `GET /v9/projects/{idOrName}`: 401 for a wrong token, 403 for a team
/// no project of the fake belongs to, 404 for a project not under the
/// team (or, with neither `teamId` nor `slug`, not personal), else 200 with
/// the project's `id` and `name`.
fn project_reply(
    headers: &HeaderMap,
    call: &RecordedCall,
    id_or_name: &str,
    cfg: &FakeVercelConfig,
) -> Reply {
    if !is_authorized(headers, &cfg.token) {
        return Reply::error(StatusCode::UNAUTHORIZED, "forbidden", "Not authorized");
    }
    // Percent-decoded (`+` is a plus in a path, not a space).
    let wanted =
        url::form_urlencoded::parse(format!("x={}", id_or_name.replace('+', "%2B")).as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
    let (team, slug) = (call.query_value("teamId"), call.query_value("slug"));
    let in_team = |p: &FakeProject| match (team, slug) {
        (None, None) => p.team_id.is_none() && p.slug.is_none(),
        (t, s) => {
            t.is_none_or(|t| p.team_id.as_deref() == Some(t))
                && s.is_none_or(|s| p.slug.as_deref() == Some(s))
        }
    };
    if (team.is_some() || slug.is_some()) && !cfg.projects.iter().any(in_team) {
        return Reply::error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "You don't have permission to access this team",
        );
    }
    match cfg
        .projects
        .iter()
        .find(|p| in_team(p) && (p.id == wanted || p.name == wanted))
    {
        Some(p) => Reply {
            status: StatusCode::OK,
            error: None,
            retry_after: None,
            body: Some(json!({ "id": p.id, "name": p.name, "accountId": p.team_id })),
        },
        None => Reply::error(StatusCode::NOT_FOUND, "not_found", "Project not found"),
    }
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
}

fn src_images_of(body: Option<&Value>) -> Vec<String> {
    body.and_then(|v| v.get("srcImages"))
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The contract checks, in the order the brief fixes: route, auth, query,
/// content type, body. The first failure is the answer.
fn validate(
    method: &Method,
    headers: &HeaderMap,
    call: &RecordedCall,
    body: &Bytes,
    cfg: &FakeVercelConfig,
) -> Result<(), Reply> {
    let body_keys = match call.path.as_str() {
        PURGE_PATH if method == Method::POST => PURGE_BODY_KEYS,
        INVALIDATE_PATH if method == Method::POST => INVALIDATE_BODY_KEYS,
        _ => {
            return Err(Reply::error(
                StatusCode::NOT_FOUND,
                "not_found",
                format!(
                    "no such endpoint: {} {} (this fake serves only POST {PURGE_PATH} and POST {INVALIDATE_PATH})",
                    call.method, call.path
                ),
            ));
        }
    };
    if !is_authorized(headers, &cfg.token) {
        return Err(Reply::error(
            StatusCode::UNAUTHORIZED,
            "forbidden",
            "Not authorized",
        ));
    }
    check_query(&call.query).map_err(Reply::bad_request)?;
    check_content_type(call.content_type.as_deref()).map_err(Reply::bad_request)?;
    check_body(body, body_keys).map_err(Reply::bad_request)?;
    Ok(())
}

/// Exactly one `Authorization` header, exactly `Bearer <token>`: the scheme
/// spelling the SDK uses, so a client sending `bearer` or a padded value is
/// caught here rather than by a stricter proxy in production.
fn is_authorized(headers: &HeaderMap, token: &str) -> bool {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => value
            .as_bytes()
            .strip_prefix(b"Bearer ")
            .is_some_and(|sent| sent == token.as_bytes()),
        _ => false,
    }
}

fn check_query(pairs: &[(String, String)]) -> Result<(), String> {
    let mut seen: Vec<&str> = Vec::with_capacity(QUERY_KEYS.len());
    for (key, value) in pairs {
        if !QUERY_KEYS.contains(&key.as_str()) {
            return Err(format!(
                "unknown query parameter `{key}`; allowed: projectIdOrName, teamId, slug"
            ));
        }
        if seen.contains(&key.as_str()) {
            return Err(format!("query parameter `{key}` given more than once"));
        }
        // An empty teamId or slug is a client that forgot to omit an unset
        // option; the real API would scope the call wrongly or reject it.
        if value.is_empty() {
            return Err(format!("query parameter `{key}` must not be empty"));
        }
        seen.push(key);
    }
    if !seen.contains(&"projectIdOrName") {
        return Err("query parameter `projectIdOrName` is required".to_owned());
    }
    Ok(())
}

fn check_content_type(content_type: Option<&str>) -> Result<(), String> {
    let wrong = || {
        format!(
            "content-type must be application/json, got {}",
            content_type.map_or_else(|| "none".to_owned(), |ct| format!("`{ct}`"))
        )
    };
    let Some(content_type) = content_type else {
        return Err(wrong());
    };
    let mut parts = content_type.split(';');
    let mime = parts.next().unwrap_or_default().trim();
    if !mime.eq_ignore_ascii_case("application/json") {
        return Err(wrong());
    }
    for param in parts {
        let (name, value) = param.split_once('=').ok_or_else(wrong)?;
        let value = value.trim().trim_matches('"');
        if !name.trim().eq_ignore_ascii_case("charset") || !value.eq_ignore_ascii_case("utf-8") {
            return Err(wrong());
        }
    }
    Ok(())
}

fn check_body(body: &[u8], allowed: &[&str]) -> Result<(), String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|err| format!("body is not valid JSON: {err}"))?;
    let Value::Object(fields) = value else {
        return Err("body must be a JSON object".to_owned());
    };
    if let Some(key) = fields.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!(
            "unknown body key `{key}`; allowed: {}",
            allowed.join(", ")
        ));
    }

    let Some(src_images) = fields.get("srcImages") else {
        return Err("body key `srcImages` is required".to_owned());
    };
    let Value::Array(items) = src_images else {
        return Err("body key `srcImages` must be an array of strings".to_owned());
    };
    if !(1..=MAX_SRC_IMAGES).contains(&items.len()) {
        return Err(format!(
            "body key `srcImages` must hold 1 to {MAX_SRC_IMAGES} items, got {}",
            items.len()
        ));
    }
    for (index, item) in items.iter().enumerate() {
        let Value::String(src) = item else {
            return Err(format!("body key `srcImages[{index}]` must be a string"));
        };
        let chars = src.chars().count();
        if !(1..=MAX_SRC_IMAGE_CHARS).contains(&chars) {
            return Err(format!(
                "body key `srcImages[{index}]` must be 1 to {MAX_SRC_IMAGE_CHARS} characters, got {chars}"
            ));
        }
    }

    if let Some(deadline) = fields.get("revalidationDeadlineSeconds") {
        // `as_u64` is None for floats (1.5, 60.0), negatives and non-numbers,
        // which is exactly the "integer >= 0" the 2026 docs require.
        let Some(secs) = deadline.as_u64() else {
            return Err(format!(
                "body key `revalidationDeadlineSeconds` must be an integer from 0 to {MAX_DEADLINE_SECONDS}, got {deadline}"
            ));
        };
        if secs > MAX_DEADLINE_SECONDS {
            return Err(format!(
                "body key `revalidationDeadlineSeconds` must be at most {MAX_DEADLINE_SECONDS}, got {secs}"
            ));
        }
    }
    Ok(())
}

/// The answer to a call that passed every check: the fault knobs in order
/// (429s, then 500s, then the fixed status), else 200.
fn next_valid_reply(state: &mut FakeState) -> Reply {
    let n = state.valid_calls;
    state.valid_calls += 1;
    let cfg = &state.cfg;
    if n < u64::from(cfg.fail_429) {
        return rate_limited(cfg.retry_after_secs, cfg.retry_after_form);
    }
    if n < u64::from(cfg.fail_429) + u64::from(cfg.fail_500) {
        return Reply::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_server_error",
            "An unexpected internal error occurred",
        );
    }
    match cfg.fixed_status {
        Some(status) => fixed_reply(status, cfg.retry_after_secs, cfg.retry_after_form),
        None => Reply::ok(),
    }
}

fn rate_limited(retry_after_secs: u64, form: RetryAfterForm) -> Reply {
    let retry_after = match form {
        RetryAfterForm::Seconds => Some(HeaderValue::from(retry_after_secs)),
        RetryAfterForm::HttpDate => {
            let at =
                std::time::SystemTime::now() + std::time::Duration::from_secs(retry_after_secs);
            HeaderValue::from_str(&httpdate::fmt_http_date(at)).ok()
        }
        RetryAfterForm::Absent => None,
    };
    Reply {
        retry_after,
        ..Reply::error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("Rate limit exceeded, retry in {retry_after_secs} seconds"),
        )
    }
}

/// A Vercel-like answer for `fixed_status`; the messages name the
/// condition so a client's error output can be asserted on.
fn fixed_reply(status: u16, retry_after_secs: u64, form: RetryAfterForm) -> Reply {
    let Ok(code) = StatusCode::from_u16(status) else {
        return Reply::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_server_error",
            format!("fake misconfigured: {status} is not an HTTP status"),
        );
    };
    if code.is_success() {
        return Reply {
            status: code,
            error: None,
            retry_after: None,
            body: None,
        };
    }
    let (name, message): (&'static str, String) = match status {
        400 => (
            "bad_request",
            "400: one of the provided values in the request body is invalid".to_owned(),
        ),
        401 => ("forbidden", "Not authorized".to_owned()),
        402 => (
            "payment_required",
            "purging by source image is not available on your plan".to_owned(),
        ),
        403 => (
            "forbidden",
            "403: you do not have permission to access this resource".to_owned(),
        ),
        404 => ("not_found", "404: project not found".to_owned()),
        410 => ("gone", "410: the project no longer exists".to_owned()),
        429 => return rate_limited(retry_after_secs, form),
        500 => (
            "internal_server_error",
            "500: an unexpected internal error occurred".to_owned(),
        ),
        502 => ("bad_gateway", "502: bad gateway".to_owned()),
        503 => ("service_unavailable", "503: service unavailable".to_owned()),
        504 => ("gateway_timeout", "504: gateway timeout".to_owned()),
        other => (
            "error",
            format!("{other}: the fake was told to answer {other}"),
        ),
    };
    Reply::error(code, name, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUERY: &str = "projectIdOrName=my-app";

    async fn fake() -> FakeVercel {
        FakeVercel::start(FakeVercelConfig::default())
            .await
            .expect("start fake")
    }

    /// POSTs `body` to the purge path with `query`, the default token and a
    /// JSON content type; returns the status and the parsed error body.
    async fn post(fake: &FakeVercel, query: &str, body: &str) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(format!("{}{PURGE_PATH}?{query}", fake.base_url()))
            .bearer_auth("test-token")
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("send");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn message(body: &Value) -> &str {
        body["error"]["message"].as_str().unwrap_or_default()
    }

    #[tokio::test]
    async fn valid_call_is_answered_200_and_recorded() {
        let fake = fake().await;
        let body = r#"{"srcImages":["/images/a.png","https://cdn.example.com/b.jpg?v=1"],"revalidationDeadlineSeconds":60}"#;
        let (status, _) = post(&fake, "projectIdOrName=my%20app&teamId=team_1", body).await;
        assert_eq!(status, 200);

        let calls = fake.calls();
        assert_eq!(calls.len(), 1);
        let call = &calls[0];
        assert_eq!(call.method, "POST");
        assert_eq!(call.path, PURGE_PATH);
        assert_eq!(call.raw_query, "projectIdOrName=my%20app&teamId=team_1");
        assert_eq!(call.query_value("projectIdOrName"), Some("my app"));
        assert_eq!(call.query_value("teamId"), Some("team_1"));
        assert_eq!(call.authorization.as_deref(), Some("Bearer test-token"));
        assert_eq!(call.content_type.as_deref(), Some("application/json"));
        assert_eq!(call.body, body);
        assert_eq!(call.deadline, Some(json!(60)));
        assert_eq!(call.status, 200);
        assert_eq!(
            fake.purged(),
            ["/images/a.png", "https://cdn.example.com/b.jpg?v=1"]
        );
    }

    #[tokio::test]
    async fn boundary_values_are_accepted() {
        let fake = fake().await;
        let eight: Vec<String> = (0..8).map(|i| format!("/{i}.png")).collect();
        let long = "x".repeat(MAX_SRC_IMAGE_CHARS);
        // Characters, not bytes: 24,576 bytes of CJK are 8,192 characters.
        let cjk = "画".repeat(MAX_SRC_IMAGE_CHARS);
        for body in [
            json!({ "srcImages": eight }),
            json!({ "srcImages": [long] }),
            json!({ "srcImages": [cjk] }),
            json!({ "srcImages": ["/a.png"], "revalidationDeadlineSeconds": 0 }),
            json!({ "srcImages": ["/a.png"], "revalidationDeadlineSeconds": MAX_DEADLINE_SECONDS }),
        ] {
            let (status, error) = post(&fake, QUERY, &body.to_string()).await;
            assert_eq!(status, 200, "{body} -> {error}");
        }
        let (status, _) = post(
            &fake,
            "slug=my-team&projectIdOrName=p",
            r#"{"srcImages":["/a"]}"#,
        )
        .await;
        assert_eq!(status, 200);
        let response = reqwest::Client::new()
            .post(format!("{}{PURGE_PATH}?{QUERY}", fake.base_url()))
            .bearer_auth("test-token")
            .header("content-type", "application/json; charset=utf-8")
            .body(r#"{"srcImages":["/a"]}"#)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status().as_u16(), 200);
    }

    #[tokio::test]
    async fn missing_or_wrong_token_is_401() {
        let fake = fake().await;
        let url = format!("{}{PURGE_PATH}?{QUERY}", fake.base_url());
        let client = reqwest::Client::new();
        let body = r#"{"srcImages":["/a.png"]}"#;

        let missing = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("send");
        assert_eq!(missing.status().as_u16(), 401);
        let error: Value = missing.json().await.expect("json");
        assert_eq!(error["error"]["code"], "forbidden");
        assert_eq!(message(&error), "Not authorized");

        for auth in [
            "Bearer wrong",
            "bearer test-token",
            "test-token",
            "Bearer  test-token",
            "Bearer test-token2",
        ] {
            let wrong = client
                .post(&url)
                .header("authorization", auth)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("send");
            assert_eq!(wrong.status().as_u16(), 401, "{auth}");
        }
        assert!(fake.purged().is_empty());
        assert!(fake.calls().iter().all(|c| c.status == 401));
    }

    #[tokio::test]
    async fn wrong_path_or_method_is_404() {
        let fake = fake().await;
        let client = reqwest::Client::new();
        let response = client
            .post(format!(
                "{}/v1/edge-cache/invalidate-by-tags?{QUERY}",
                fake.base_url()
            ))
            .bearer_auth("test-token")
            .header("content-type", "application/json")
            .body(r#"{"tags":["a"]}"#)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status().as_u16(), 404);
        let error: Value = response.json().await.expect("json");
        assert_eq!(error["error"]["code"], "not_found");

        let response = client
            .get(format!("{}{PURGE_PATH}?{QUERY}", fake.base_url()))
            .bearer_auth("test-token")
            .send()
            .await
            .expect("send");
        assert_eq!(response.status().as_u16(), 404);
        assert_eq!(fake.calls().len(), 2);
    }

    #[tokio::test]
    async fn body_rules_are_enforced_with_a_message_naming_the_key() {
        let fake = fake().await;
        let nine: Vec<String> = (0..9).map(|i| format!("/{i}.png")).collect();
        let too_long = "x".repeat(MAX_SRC_IMAGE_CHARS + 1);
        let cases = [
            (json!({ "srcImages": nine }).to_string(), "srcImages"),
            (json!({ "srcImages": [] }).to_string(), "srcImages"),
            (
                json!({ "srcImages": [too_long] }).to_string(),
                "srcImages[0]",
            ),
            (json!({ "srcImages": [""] }).to_string(), "srcImages[0]"),
            (
                json!({ "srcImages": ["/a", 1] }).to_string(),
                "srcImages[1]",
            ),
            (json!({ "srcImages": "/a.png" }).to_string(), "srcImages"),
            (json!({}).to_string(), "srcImages"),
            (
                r#"{"srcImages":["/a"],"revalidationDeadlineSeconds":1.5}"#.to_owned(),
                "revalidationDeadlineSeconds",
            ),
            (
                r#"{"srcImages":["/a"],"revalidationDeadlineSeconds":60.0}"#.to_owned(),
                "revalidationDeadlineSeconds",
            ),
            (
                r#"{"srcImages":["/a"],"revalidationDeadlineSeconds":"60"}"#.to_owned(),
                "revalidationDeadlineSeconds",
            ),
            (
                r#"{"srcImages":["/a"],"revalidationDeadlineSeconds":-1}"#.to_owned(),
                "revalidationDeadlineSeconds",
            ),
            (
                r#"{"srcImages":["/a"],"revalidationDeadlineSeconds":31536001}"#.to_owned(),
                "revalidationDeadlineSeconds",
            ),
            (r#"{"srcImages":["/a"],"tags":["x"]}"#.to_owned(), "tags"),
            (r#"["/a"]"#.to_owned(), "object"),
            ("not json".to_owned(), "JSON"),
        ];
        for (body, named) in cases {
            let (status, error) = post(&fake, QUERY, &body).await;
            assert_eq!(status, 400, "{body}");
            assert_eq!(error["error"]["code"], "bad_request", "{body}");
            assert!(message(&error).contains(named), "{body} -> {error}");
        }
        assert!(fake.purged().is_empty());
    }

    #[tokio::test]
    async fn query_rules_are_enforced() {
        let fake = fake().await;
        let body = r#"{"srcImages":["/a.png"]}"#;
        for (query, named) in [
            ("", "projectIdOrName"),
            ("teamId=team_1", "projectIdOrName"),
            ("projectIdOrName=", "projectIdOrName"),
            ("projectIdOrName=p&target=production", "target"),
            ("projectIdOrName=p&projectIdOrName=q", "projectIdOrName"),
            ("projectIdOrName=p&teamId=", "teamId"),
        ] {
            let (status, error) = post(&fake, query, body).await;
            assert_eq!(status, 400, "{query}");
            assert!(message(&error).contains(named), "{query} -> {error}");
        }
    }

    #[tokio::test]
    async fn content_type_must_be_json() {
        let fake = fake().await;
        let client = reqwest::Client::new();
        let url = format!("{}{PURGE_PATH}?{QUERY}", fake.base_url());
        for content_type in [
            None,
            Some("text/plain"),
            Some("application/json; charset=latin1"),
        ] {
            let mut request = client
                .post(&url)
                .bearer_auth("test-token")
                .body(r#"{"srcImages":["/a.png"]}"#);
            if let Some(ct) = content_type {
                request = request.header("content-type", ct);
            }
            let response = request.send().await.expect("send");
            assert_eq!(response.status().as_u16(), 400, "{content_type:?}");
            let error: Value = response.json().await.expect("json");
            assert!(message(&error).contains("content-type"), "{error}");
        }
    }

    #[tokio::test]
    async fn first_calls_are_rate_limited_with_retry_after_then_accepted() {
        let fake = FakeVercel::start(FakeVercelConfig {
            fail_429: 2,
            retry_after_secs: 7,
            ..FakeVercelConfig::default()
        })
        .await
        .expect("start");
        let url = format!("{}{PURGE_PATH}?{QUERY}", fake.base_url());
        let client = reqwest::Client::new();
        let mut seen = Vec::new();
        for _ in 0..3 {
            let response = client
                .post(&url)
                .bearer_auth("test-token")
                .header("content-type", "application/json")
                .body(r#"{"srcImages":["/a.png"]}"#)
                .send()
                .await
                .expect("send");
            let retry_after = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().expect("ascii").to_owned());
            let status = response.status().as_u16();
            let body = response.text().await.expect("body");
            seen.push((status, retry_after, body));
        }
        assert_eq!(seen[0].0, 429);
        assert_eq!(seen[0].1.as_deref(), Some("7"));
        assert!(seen[0].2.contains("rate_limited"));
        assert_eq!(seen[1].0, 429);
        assert_eq!(
            (seen[2].0, seen[2].1.as_deref(), seen[2].2.as_str()),
            (200, None, "")
        );
        assert_eq!(fake.purged(), ["/a.png"]);
    }

    #[tokio::test]
    async fn invalid_calls_do_not_use_up_the_fault_knobs() {
        let fake = FakeVercel::start(FakeVercelConfig {
            fail_429: 1,
            ..FakeVercelConfig::default()
        })
        .await
        .expect("start");
        assert_eq!(post(&fake, QUERY, "{}").await.0, 400);
        assert_eq!(post(&fake, QUERY, r#"{"srcImages":["/a"]}"#).await.0, 429);
        assert_eq!(post(&fake, QUERY, r#"{"srcImages":["/a"]}"#).await.0, 200);
    }

    #[tokio::test]
    async fn server_errors_follow_the_429s_and_set_config_restarts_the_count() {
        let fake = FakeVercel::start(FakeVercelConfig {
            fail_429: 1,
            fail_500: 2,
            ..FakeVercelConfig::default()
        })
        .await
        .expect("start");
        let body = r#"{"srcImages":["/a"]}"#;
        let mut statuses = Vec::new();
        for _ in 0..4 {
            statuses.push(post(&fake, QUERY, body).await.0);
        }
        assert_eq!(statuses, [429, 500, 500, 200]);
        assert_eq!(
            fake.calls().iter().map(|c| c.status).collect::<Vec<_>>(),
            statuses
        );

        fake.set_config(FakeVercelConfig {
            fail_500: 1,
            ..FakeVercelConfig::default()
        });
        let (status, error) = post(&fake, QUERY, body).await;
        assert_eq!(
            (status, error["error"]["code"].as_str()),
            (500, Some("internal_server_error"))
        );
        assert_eq!(post(&fake, QUERY, body).await.0, 200);

        fake.clear();
        assert!(fake.calls().is_empty());
    }

    #[tokio::test]
    async fn fixed_status_answers_every_valid_call() {
        let fake = FakeVercel::start(FakeVercelConfig {
            fixed_status: Some(402),
            ..FakeVercelConfig::default()
        })
        .await
        .expect("start");
        for _ in 0..2 {
            let (status, error) = post(&fake, QUERY, r#"{"srcImages":["/a"]}"#).await;
            assert_eq!(status, 402);
            assert_eq!(error["error"]["code"], "payment_required");
            assert!(message(&error).contains("plan"), "{error}");
        }
        for (fixed, code) in [(400, "bad_request"), (403, "forbidden"), (404, "not_found")] {
            fake.set_config(FakeVercelConfig {
                fixed_status: Some(fixed),
                ..FakeVercelConfig::default()
            });
            let (status, error) = post(&fake, QUERY, r#"{"srcImages":["/a"]}"#).await;
            assert_eq!(
                (status, error["error"]["code"].as_str()),
                (fixed, Some(code))
            );
        }
        assert!(fake.purged().is_empty());
    }

    #[tokio::test]
    async fn hook_sees_every_call_with_its_status() {
        let fake = fake().await;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        fake.on_call(move |call| lock(&sink).push(call.status));
        post(&fake, QUERY, r#"{"srcImages":["/a"]}"#).await;
        post(&fake, QUERY, "{}").await;
        assert_eq!(*lock(&seen), [200, 400]);
    }

    #[tokio::test]
    async fn shutdown_stops_the_server() {
        let fake = fake().await;
        let url = format!("{}{PURGE_PATH}", fake.base_url());
        fake.shutdown().await;
        assert!(reqwest::Client::new().post(url).send().await.is_err());
    }

    /// Replays the requests the official `@vercel/sdk` sent, to prove the
    /// fake accepts the real client's shape (and so is not stricter than
    /// the API in a way that would bless a wrong client).
    #[tokio::test]
    async fn sdk_capture_replays_cleanly() {
        let capture = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/data/sdk-capture.jsonl"
        ))
        .expect("read tests/data/sdk-capture.jsonl");
        let fake = FakeVercel::start(FakeVercelConfig::new("tok_secret"))
            .await
            .expect("start");
        let client = reqwest::Client::new();
        let mut replayed = 0;
        for line in capture.lines().filter(|l| !l.trim().is_empty()) {
            let captured: Value = serde_json::from_str(line).expect("capture line is JSON");
            let url = captured["url"].as_str().expect("url");
            let method: reqwest::Method = captured["method"]
                .as_str()
                .expect("method")
                .parse()
                .expect("valid method");
            let mut request = client
                .request(method, format!("{}{url}", fake.base_url()))
                .body(captured["body"].as_str().expect("body").to_owned());
            for (name, value) in captured["headers"].as_object().expect("headers") {
                if ["host", "content-length", "connection"].contains(&name.as_str()) {
                    continue;
                }
                request = request.header(name.as_str(), value.as_str().expect("header value"));
            }
            let status = request.send().await.expect("send").status().as_u16();
            assert_eq!(status, 200, "{url}");
            replayed += 1;
        }
        assert_eq!(replayed, 2);

        let calls = fake.calls();
        let delete = calls
            .iter()
            .find(|c| c.path == PURGE_PATH)
            .expect("delete call recorded");
        assert_eq!(delete.query_value("projectIdOrName"), Some("my app"));
        assert_eq!(delete.query_value("teamId"), Some("team_1"));
        assert_eq!(delete.query_value("slug"), Some("my-team"));
        assert_eq!(delete.deadline, Some(json!(60)));
        // The invalidate call is accepted but is not a purge.
        assert_eq!(
            fake.purged(),
            ["/images/a b.png", "https://cdn.example.com/x.jpg?v=1&w=2"]
        );
        let invalidate = calls
            .iter()
            .find(|c| c.path == INVALIDATE_PATH)
            .expect("invalidate call recorded");
        assert_eq!(invalidate.query_value("projectIdOrName"), Some("prj_1"));
        assert_eq!(invalidate.src_images, ["/a.png"]);
    }

    #[tokio::test]
    async fn invalidate_takes_no_deadline_and_other_paths_are_404() {
        let fake = fake().await;
        let client = reqwest::Client::new();
        let send = |path: &'static str, body: &'static str| {
            client
                .post(format!("{}{path}?{QUERY}", fake.base_url()))
                .bearer_auth("test-token")
                .header("content-type", "application/json")
                .body(body)
                .send()
        };
        let with_deadline = r#"{"srcImages":["/a.png"],"revalidationDeadlineSeconds":1}"#;
        let status = |r: reqwest::Response| r.status().as_u16();
        assert_eq!(
            status(send(INVALIDATE_PATH, with_deadline).await.unwrap()),
            400
        );
        assert_eq!(status(send(PURGE_PATH, with_deadline).await.unwrap()), 200);
        let tags = "/v1/edge-cache/dangerously-delete-by-tags";
        assert_eq!(status(send(tags, r#"{"tags":["a"]}"#).await.unwrap()), 404);
        assert_eq!(fake.purged(), ["/a.png"]);
    }
}
