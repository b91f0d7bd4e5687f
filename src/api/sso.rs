//! Single sign-on: providers under `/api/v1/sso/providers` (organization admins), and the
//! sign-in itself under `/api/v1/auth/sso` (public: the console's sign-in page).

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use super::extract::{Body, Page, PageQuery, Path, Query};
use super::{ApiError, access, commit, find_named, page_named, record, validate_name};
use crate::authn::caller::{Caller, ClientInfo, cookie_value};
use crate::authn::throttle::Verdict;
use crate::authz::{Act, Obj};
use crate::domain::audit::{Durability, NewEvent, Target};
use crate::domain::sso::{self, GroupMapping, SsoProvider};
use crate::sso::SsoError;
use crate::state::AppState;
use crate::store::{self, named};

/// Binds a sign-in to the browser that started it. `__Host-`: only this origin can set it,
/// so a sibling domain cannot plant its own sign-in in a victim's browser.
const FLOW_COOKIE: &str = "__Host-ztka_sso";

#[derive(Debug, Serialize)]
pub struct ProviderView {
    pub id: Uuid,
    pub name: String,
    pub display_name: String,
    pub issuer: String,
    pub client_id: String,
    /// The secret itself is never returned.
    pub client_secret_set: bool,
    pub scopes: Vec<String>,
    pub username_claim: String,
    pub groups_claim: String,
    pub allowed_domains: Vec<String>,
    pub group_mapping: Vec<GroupMapping>,
    pub ca_pem: Option<String>,
    pub require_verified_email: bool,
    pub enabled: bool,
    /// Register this URL with the provider as the client's redirect URI.
    pub redirect_uri: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

fn view(state: &AppState) -> impl Fn(&SsoProvider) -> ProviderView + '_ {
    move |p| ProviderView {
        id: p.id,
        name: p.name.clone(),
        display_name: p.display_name.clone(),
        issuer: p.issuer.clone(),
        client_id: p.client_id.clone(),
        client_secret_set: !p.client_secret_sealed.is_empty(),
        scopes: p.scopes.clone(),
        username_claim: p.username_claim.clone(),
        groups_claim: p.groups_claim.clone(),
        allowed_domains: p.allowed_domains.clone(),
        group_mapping: p.group_mapping.clone(),
        ca_pem: p.ca_pem.clone(),
        require_verified_email: p.require_verified_email,
        enabled: p.enabled,
        redirect_uri: crate::sso::redirect_uri(&state.config.external_url.url, &p.name),
        created_at: p.created_at,
        updated_at: p.updated_at,
    }
}

pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<Page<ProviderView>>, ApiError> {
    access::org(&state, &caller, Obj::Settings, Act::Read).await?;
    page_named(&state, q, view(&state), |v: &ProviderView| v.name.clone()).await
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<axum::Json<ProviderView>, ApiError> {
    access::org(&state, &caller, Obj::Settings, Act::Read).await?;
    let p = find_named::<SsoProvider>(&state, name).await?;
    Ok(axum::Json(view(&state)(&p)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateProvider {
    pub name: String,
    #[serde(default)]
    pub display_name: Option<String>,
    pub issuer: String,
    pub client_id: String,
    pub client_secret: String,
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    #[serde(default)]
    pub username_claim: Option<String>,
    #[serde(default)]
    pub groups_claim: Option<String>,
    #[serde(default)]
    pub allowed_domains: Vec<String>,
    #[serde(default)]
    pub group_mapping: Vec<GroupMapping>,
    #[serde(default)]
    pub ca_pem: Option<String>,
    #[serde(default)]
    pub require_verified_email: Option<bool>,
    #[serde(default)]
    pub enabled: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateProvider {
    pub display_name: Option<String>,
    pub issuer: Option<String>,
    pub client_id: Option<String>,
    /// Replaces the stored secret.
    pub client_secret: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub username_claim: Option<String>,
    pub groups_claim: Option<String>,
    pub allowed_domains: Option<Vec<String>>,
    pub group_mapping: Option<Vec<GroupMapping>>,
    /// An empty string removes it.
    pub ca_pem: Option<String>,
    pub require_verified_email: Option<bool>,
    pub enabled: Option<bool>,
}

fn field<T>(name: &str, r: Result<T, sso::ProviderError>) -> Result<T, ApiError> {
    r.map_err(|e| ApiError::invalid(name, e))
}

fn check_secret(secret: &str) -> Result<(), ApiError> {
    field("client_secret", sso::check_text(secret, 1024))
}

fn check_ca(pem: &str) -> Result<(), ApiError> {
    // The same check the sign-in's HTTPS client makes, so a saved CA is one it can use.
    let mut roots = rustls::RootCertStore::empty();
    let added = crate::client::add_pem_roots(&mut roots, pem.as_bytes())
        .map_err(|e| ApiError::invalid("ca_pem", e))?;
    if added == 0 || pem.len() > 64 * 1024 {
        return Err(ApiError::invalid(
            "ca_pem",
            "must hold one or more PEM certificates (at most 64 KiB)",
        ));
    }
    Ok(())
}

/// Checks every field of a provider record and normalizes lists; group names in the mapping
/// must name existing groups.
async fn validate(state: &AppState, p: &mut SsoProvider) -> Result<(), ApiError> {
    field("display_name", sso::check_text(&p.display_name, 64))?;
    field("issuer", sso::check_issuer(&p.issuer))?;
    field("client_id", sso::check_text(&p.client_id, 512))?;
    p.scopes = field("scopes", sso::normalize_scopes(&p.scopes))?;
    field("username_claim", sso::check_claim(&p.username_claim))?;
    field("groups_claim", sso::check_claim(&p.groups_claim))?;
    p.allowed_domains = field(
        "allowed_domains",
        sso::normalize_domains(&p.allowed_domains),
    )?;
    if let Some(pem) = &p.ca_pem {
        check_ca(pem)?;
    }
    if p.group_mapping.len() > 256 {
        return Err(ApiError::invalid("group_mapping", "at most 256 entries"));
    }
    for m in &p.group_mapping {
        field("group_mapping", sso::check_text(&m.idp_group, 256))?;
    }
    p.group_mapping.sort();
    p.group_mapping.dedup();
    let names = p.group_mapping.iter().map(|m| m.group.clone()).collect();
    let missing = state
        .store
        .read(move |txn| store::sso::missing_groups(txn, &names))
        .await?;
    if !missing.is_empty() {
        return Err(ApiError::invalid(
            "group_mapping",
            format!("no group named {}", missing.join(", ")),
        ));
    }
    Ok(())
}

/// What an audit record says about a provider: everything but the secret.
fn described(p: &SsoProvider) -> serde_json::Value {
    serde_json::json!({
        "issuer": p.issuer,
        "client_id": p.client_id,
        "scopes": p.scopes,
        "username_claim": p.username_claim,
        "groups_claim": p.groups_claim,
        "allowed_domains": p.allowed_domains,
        "group_mapping": p.group_mapping,
        "require_verified_email": p.require_verified_email,
        "enabled": p.enabled,
    })
}

fn seal(state: &AppState, secret: &str, id: Uuid) -> Result<String, ApiError> {
    state
        .pki
        .sealer
        .seal(secret, &id.to_string())
        .map_err(ApiError::internal)
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    Body(req): Body<CreateProvider>,
) -> Result<(StatusCode, axum::Json<ProviderView>), ApiError> {
    let permit = access::org(&state, &caller, Obj::Settings, Act::Update).await?;
    validate_name("name", &req.name)?;
    check_secret(&req.client_secret)?;
    let now = OffsetDateTime::now_utc();
    let id = Uuid::now_v7();
    let mut provider = SsoProvider {
        id,
        display_name: req.display_name.unwrap_or_else(|| req.name.clone()),
        name: req.name,
        issuer: req.issuer.trim().to_owned(),
        client_id: req.client_id.trim().to_owned(),
        client_secret_sealed: seal(&state, &req.client_secret, id)?,
        scopes: req
            .scopes
            .unwrap_or_else(|| sso::DEFAULT_SCOPES.map(str::to_owned).to_vec()),
        username_claim: req
            .username_claim
            .unwrap_or_else(|| sso::DEFAULT_USERNAME_CLAIM.to_owned()),
        groups_claim: req
            .groups_claim
            .unwrap_or_else(|| sso::DEFAULT_GROUPS_CLAIM.to_owned()),
        allowed_domains: req.allowed_domains,
        group_mapping: req.group_mapping,
        ca_pem: req.ca_pem.filter(|p| !p.trim().is_empty()),
        require_verified_email: req.require_verified_email.unwrap_or(true),
        enabled: req.enabled.unwrap_or(true),
        created_at: now,
        updated_at: now,
    };
    validate(&state, &mut provider).await?;
    let mut event = caller.event(
        "sso.provider.create",
        Target::of("sso_provider", &provider.name),
    );
    event.details = described(&provider);
    let stored = provider.clone();
    commit(&state, &permit, event, move |txn| {
        store::sso::check_mapped_groups(txn, &stored)?;
        named::insert(txn, &stored)
    })
    .await?;
    Ok((StatusCode::CREATED, axum::Json(view(&state)(&provider))))
}

pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Body(req): Body<UpdateProvider>,
) -> Result<axum::Json<ProviderView>, ApiError> {
    let permit = access::org(&state, &caller, Obj::Settings, Act::Update).await?;
    let mut p = find_named::<SsoProvider>(&state, name).await?;
    let before = described(&p);
    macro_rules! set {
        ($($f:ident),*) => {$( if let Some(v) = req.$f { p.$f = v; } )*};
    }
    set!(
        display_name,
        issuer,
        client_id,
        scopes,
        username_claim,
        groups_claim,
        allowed_domains,
        group_mapping,
        require_verified_email,
        enabled
    );
    p.issuer = p.issuer.trim().to_owned();
    p.client_id = p.client_id.trim().to_owned();
    if let Some(pem) = req.ca_pem {
        p.ca_pem = (!pem.trim().is_empty()).then_some(pem);
    }
    let secret_changed = req.client_secret.is_some();
    if let Some(secret) = req.client_secret {
        check_secret(&secret)?;
        p.client_secret_sealed = seal(&state, &secret, p.id)?;
    }
    validate(&state, &mut p).await?;
    p.updated_at = OffsetDateTime::now_utc();
    let mut event = caller.event("sso.provider.update", Target::of("sso_provider", &p.name));
    event.details = serde_json::json!({
        "before": before,
        "after": described(&p),
        "client_secret_changed": secret_changed,
    });
    let stored = p.clone();
    commit(&state, &permit, event, move |txn| {
        store::sso::check_mapped_groups(txn, &stored)?;
        named::update(txn, &stored)
    })
    .await?;
    state.sso.forget(p.id);
    Ok(axum::Json(view(&state)(&p)))
}

pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let permit = access::org(&state, &caller, Obj::Settings, Act::Update).await?;
    let p = find_named::<SsoProvider>(&state, name).await?;
    let event = caller.event("sso.provider.delete", Target::of("sso_provider", &p.name));
    let doomed = p.clone();
    commit(&state, &permit, event, move |txn| {
        named::delete(txn, &doomed)
    })
    .await?;
    state.sso.forget(p.id);
    Ok(StatusCode::NO_CONTENT)
}

/// Fetches the provider's discovery document and keys now, so an admin sees at once whether
/// the issuer (and its CA) work.
pub async fn test(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    access::org(&state, &caller, Obj::Settings, Act::Update).await?;
    let p = find_named::<SsoProvider>(&state, name).await?;
    state
        .sso
        .probe(&p)
        .await
        .map(axum::Json)
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, e.code, e.message))
}

// ---- Sign-in -------------------------------------------------------------------------------

#[derive(Debug, Serialize)]
pub struct SignInOption {
    pub name: String,
    pub display_name: String,
    /// Navigate the browser here to sign in.
    pub login_url: String,
}

#[derive(Debug, Serialize)]
pub struct SignInOptions {
    pub items: Vec<SignInOption>,
}

/// The enabled providers, for the sign-in page's buttons.
pub async fn options(State(state): State<AppState>) -> Result<axum::Json<SignInOptions>, ApiError> {
    let providers: Vec<SsoProvider> = state.store.read(named::read::every).await?;
    let items = providers
        .into_iter()
        .filter(|p| p.enabled)
        .map(|p| SignInOption {
            login_url: format!("/api/v1/auth/sso/{}/login", p.name),
            name: p.name,
            display_name: p.display_name,
        })
        .collect();
    Ok(axum::Json(SignInOptions { items }))
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    /// Console path to return to after signing in.
    #[serde(default)]
    pub next: Option<String>,
}

/// A console path, never another origin.
fn safe_next(next: Option<String>) -> String {
    next.filter(|n| {
        n.starts_with('/')
            && !n.starts_with("//")
            && !["/api/", "/k8s/", "/agent/"]
                .iter()
                .any(|p| n.starts_with(p))
            && !n.contains('\\')
            && n.len() <= 512
            && !n.chars().any(char::is_control)
    })
    .unwrap_or_else(|| "/".to_owned())
}

fn see_other(location: &str, cookie: Option<String>) -> Response {
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(location) {
        headers.insert(header::LOCATION, v);
    }
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.append(header::SET_COOKIE, c);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    (StatusCode::SEE_OTHER, headers).into_response()
}

fn flow_cookie(value: &str, max_age: u64) -> String {
    format!("{FLOW_COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; Secure; SameSite=Lax")
}

fn login_event(
    client: &ClientInfo,
    provider: &str,
    user: Option<&crate::domain::user::User>,
) -> NewEvent {
    let mut e = NewEvent::system(
        "auth.sso.login",
        Target {
            kind: "session".into(),
            name: user.map(|u| u.name.clone()),
            ..Target::default()
        },
    );
    e.actor = client.actor(user);
    e.request_id = super::error::current_request_id();
    e.details = serde_json::json!({"provider": provider});
    e
}

/// Failed sign-ins count against the client address, so no one can fill the audit log or
/// the error stash from one address.
fn throttle_key(addr: &str) -> Vec<String> {
    vec![format!("sso-ip:{addr}")]
}

/// A path segment that cannot be a provider name is not looked up, stashed or recorded.
fn check_provider_name(name: &str) -> Result<(), ApiError> {
    crate::domain::names::validate_name(name)
        .map_err(|_| ApiError::not_found("no such sign-in provider"))
}

async fn throttled(state: &AppState, client: &ClientInfo) -> Result<(), ApiError> {
    match state.sso.throttle.check(&throttle_key(&client.addr)) {
        Verdict::Locked => Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            "too many failed sign-ins from this address; try again later",
        )),
        Verdict::Proceed(delay) => {
            tokio::time::sleep(delay).await;
            Ok(())
        }
    }
}

/// Records a failed sign-in and sends the browser to the sign-in page, which shows `error`.
async fn refuse(
    state: &AppState,
    mut event: NewEvent,
    status: u16,
    error: SsoError,
    clear_flow: bool,
) -> Result<Response, ApiError> {
    tracing::info!(code = error.code, message = %error.message, "single sign-on refused");
    if let Some(addr) = &event.actor.client_addr {
        state.sso.throttle.failure(&throttle_key(addr));
    }
    event = event.with_outcome(status);
    if let Some(obj) = event.details.as_object_mut() {
        obj.insert("reason".into(), error.code.into());
        obj.insert("message".into(), error.message.clone().into());
    }
    record(state, event, Durability::Durable).await?;
    let id = state.sso.stash_error(error);
    Ok(see_other(
        &format!("/login?sso_error={id}"),
        clear_flow.then(|| flow_cookie("", 0)),
    ))
}

/// `GET /auth/sso/{name}/login`: redirects the browser to the provider.
pub async fn login(
    State(state): State<AppState>,
    client: ClientInfo,
    Path(name): Path<String>,
    Query(q): Query<LoginQuery>,
) -> Result<Response, ApiError> {
    check_provider_name(&name)?;
    throttled(&state, &client).await?;
    let lookup = name.clone();
    let provider = state
        .store
        .read(move |txn| named::read::by_name::<SsoProvider>(txn, &lookup))
        .await?
        .filter(|p| p.enabled);
    let event = login_event(&client, &name, None);
    let Some(provider) = provider else {
        let e = SsoError::new(
            "sso_unknown_provider",
            format!("there is no enabled sign-in provider named {name}"),
        );
        return refuse(&state, event, 404, e, false).await;
    };
    let redirect = crate::sso::redirect_uri(&state.config.external_url.url, &provider.name);
    match state
        .sso
        .begin(&provider, &redirect, safe_next(q.next), &client.addr)
        .await
    {
        Ok((url, binding)) => Ok(see_other(&url, Some(flow_cookie(&binding, 600)))),
        Err(e) => refuse(&state, event, 502, e, false).await,
    }
}

#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// `GET /auth/sso/{name}/callback`: the provider sends the browser back here with a code.
pub async fn callback(
    State(state): State<AppState>,
    client: ClientInfo,
    Path(name): Path<String>,
    Query(q): Query<CallbackQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_provider_name(&name)?;
    throttled(&state, &client).await?;
    let event = login_event(&client, &name, None);
    let binding = cookie_value(&headers, FLOW_COOKIE);
    let flow = match q
        .state
        .as_deref()
        .ok_or_else(|| SsoError::new("sso_state_invalid", "the provider's answer has no state"))
        .and_then(|s| state.sso.take_flow(s, &name, binding))
    {
        Ok(flow) => flow,
        Err(e) => return refuse(&state, event, 400, e, true).await,
    };
    if let Some(err) = q.error {
        let text: String = q
            .error_description
            .unwrap_or_default()
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect();
        let message = match err.as_str() {
            "access_denied" => "the provider denied the sign-in".to_owned(),
            _ => format!("the provider refused the sign-in ({err}) {text}")
                .trim()
                .to_owned(),
        };
        return refuse(
            &state,
            event,
            401,
            SsoError::new("sso_denied", message),
            true,
        )
        .await;
    }
    let Some(code) = q.code.filter(|c| !c.is_empty() && c.len() <= 4096) else {
        let e = SsoError::new("sso_denied", "the provider's answer has no code");
        return refuse(&state, event, 400, e, true).await;
    };
    let pid = flow.provider_id.to_string();
    let provider = state
        .store
        .read(move |txn| named::read::by_id::<SsoProvider>(txn, &pid))
        .await?
        .filter(|p| p.enabled && p.name == name);
    let Some(provider) = provider else {
        let e = SsoError::new(
            "sso_unknown_provider",
            format!("the sign-in provider {name} was removed or disabled during the sign-in"),
        );
        return refuse(&state, event, 404, e, true).await;
    };
    let secret = match state
        .pki
        .sealer
        .open(&provider.client_secret_sealed, &provider.id.to_string())
    {
        Ok(s) => s,
        Err(e) => {
            let e = SsoError::new(
                "sso_misconfigured",
                format!("the client secret cannot be read: {e}"),
            );
            return refuse(&state, event, 500, e, true).await;
        }
    };
    let redirect = crate::sso::redirect_uri(&state.config.external_url.url, &provider.name);
    let verified = match state
        .sso
        .finish(&provider, secret, &flow, code, &redirect)
        .await
    {
        Ok(v) => v,
        Err(e) => {
            let status = if e.code == "sso_token_invalid" {
                401
            } else {
                502
            };
            return refuse(&state, event, status, e, true).await;
        }
    };
    let assertion = match provider.assertion(&verified.issuer, &verified.subject, &verified.claims)
    {
        Ok(a) => a,
        Err(e) => {
            let status = if e.code() == "sso_bad_claims" {
                401
            } else {
                403
            };
            return refuse(
                &state,
                event,
                status,
                SsoError::new(e.code(), e.to_string()),
                true,
            )
            .await;
        }
    };
    let (p, a) = (provider.clone(), assertion.clone());
    let now = OffsetDateTime::now_utc();
    let outcome = state
        .store
        .write(move |txn| store::sso::sign_in(txn, &p, &a, now))
        .await?;
    let signed = match outcome {
        Ok(s) => s,
        Err(store::sso::Refusal::Disabled(user)) => {
            let event = login_event(&client, &name, Some(&user));
            let e = SsoError::new(
                "account_disabled",
                format!("the account {} is disabled in ztka", user.name),
            );
            return refuse(&state, event, 403, e, true).await;
        }
        Err(store::sso::Refusal::NameTaken(n)) => {
            let e = SsoError::new(
                "sso_name_taken",
                format!(
                    "the user name {n} already belongs to another ztka user; an admin must remove or rename it first"
                ),
            );
            return refuse(&state, event, 409, e, true).await;
        }
    };
    apply_memberships(&state, &client, &provider, &signed).await?;
    let (session_headers, csrf) = super::auth::start_session(&state, &signed.user, &client).await?;
    let mut event = login_event(&client, &name, Some(&signed.user)).with_outcome(200);
    event.details = serde_json::json!({
        "provider": provider.name,
        "created": signed.created,
        "groups_joined": signed.joined.iter().map(|(_, n)| n).collect::<Vec<_>>(),
        "groups_left": signed.left.iter().map(|(_, n)| n).collect::<Vec<_>>(),
        "groups_missing": signed.missing,
        "groups_claim_present": assertion.groups.is_some(),
    });
    record(&state, event, Durability::Durable).await?;
    // The console picks the CSRF token up from the fragment, which never reaches a server.
    let mut res = see_other(
        &format!("{}#sso={csrf}", flow.next),
        Some(flow_cookie("", 0)),
    );
    for v in session_headers.get_all(header::SET_COOKIE) {
        res.headers_mut().append(header::SET_COOKIE, v.clone());
    }
    Ok(res)
}

/// Tells the authorizer and the relay about the memberships a sign-in changed, and records
/// them as the user's own actions.
async fn apply_memberships(
    state: &AppState,
    client: &ClientInfo,
    provider: &SsoProvider,
    signed: &store::sso::SignIn,
) -> Result<(), ApiError> {
    let user = &signed.user;
    // The authorizer and the relay follow the database first; the records come after.
    for (changes, add) in [(&signed.joined, true), (&signed.left, false)] {
        for (gid, _) in changes {
            state.authz.set_membership(user.id, *gid, add);
        }
    }
    if !signed.left.is_empty() {
        crate::relay::access_changed(state, vec![user.id]).await;
    }
    let event = |action: &str, target: Target, details: serde_json::Value| {
        let mut e = NewEvent::system(action, target);
        e.actor = client.actor(Some(user));
        e.request_id = super::error::current_request_id();
        e.details = details;
        e
    };
    if signed.created {
        let details = serde_json::json!({"kind": "sso", "provider": provider.name});
        record(
            state,
            event("user.create", Target::user(&user.name), details),
            Durability::Durable,
        )
        .await?;
    }
    for (changes, add) in [(&signed.joined, true), (&signed.left, false)] {
        for (_, gname) in changes {
            let action = if add {
                "group.member.add"
            } else {
                "group.member.remove"
            };
            let details =
                serde_json::json!({"user": user.name, "source": "sso", "provider": provider.name});
            record(
                state,
                event(action, Target::of("group", gname), details),
                Durability::Durable,
            )
            .await?;
        }
    }
    Ok(())
}

#[derive(Debug, Serialize)]
pub struct SignInError {
    pub code: &'static str,
    pub message: String,
}

/// `GET /auth/sso/errors/{id}`: what went wrong with a sign-in, for the sign-in page (once).
pub async fn error(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<axum::Json<SignInError>, ApiError> {
    state
        .sso
        .take_error(&id)
        .map(|e| {
            axum::Json(SignInError {
                code: e.code,
                message: e.message,
            })
        })
        .ok_or_else(|| ApiError::not_found("no such sign-in error (they are shown once)"))
}
