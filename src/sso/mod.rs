//! Single sign-on with OpenID Connect: the authorization code flow with PKCE, `state` and
//! `nonce`, and ID token verification against the provider's published keys.
//!
//! Discovery documents and key sets are cached per provider; a token signed with a key the
//! cache does not know makes ztka fetch the key set again once (key rotation). Sign-ins in
//! progress live in memory for ten minutes and are bound to the browser that started them
//! by a cookie, so a callback URL cannot be replayed or planted in another browser.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreClientAuthMethod, CoreJsonWebKeySet,
    CoreProviderMetadata,
};
use openidconnect::{
    AuthType, AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken,
    IssuerUrl, Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RequestTokenError, Scope,
    SignatureVerificationError, TokenResponse,
};
use uuid::Uuid;

use crate::authn::throttle::{Policy, Throttle};
use crate::client::{ClientError, HttpsClient};
use crate::domain::sso::SsoProvider;

/// How long a started sign-in may take at the provider.
const FLOW_TTL: Duration = Duration::from_secs(600);
/// Sign-ins in progress at once; more are refused rather than growing memory.
const MAX_FLOWS: usize = 10_000;
/// Sign-ins in progress from one client address, so one address cannot use them all up.
const MAX_FLOWS_PER_ADDRESS: usize = 20;
/// Discovery documents are fetched again after this long.
const METADATA_TTL: Duration = Duration::from_secs(3600);
/// Errors shown on the sign-in page are kept this long for the console to read once.
const ERROR_TTL: Duration = Duration::from_secs(300);
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest provider response read (discovery, keys, tokens).
const MAX_RESPONSE: usize = 512 * 1024;

/// A failed sign-in, with a stable code and a message for the person signing in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsoError {
    pub code: &'static str,
    pub message: String,
}

impl SsoError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for SsoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// A sign-in between the redirect to the provider and its callback.
#[derive(Debug, Clone)]
pub struct Flow {
    pub provider_id: Uuid,
    pub provider: String,
    nonce: String,
    pkce_verifier: String,
    /// SHA-256 of the browser-binding cookie.
    binding_hash: String,
    /// Console path to return to.
    pub next: String,
    client_addr: String,
    started: Instant,
}

/// What a provider vouched for, after every check of the ID token passed.
#[derive(Debug, Clone)]
pub struct Verified {
    pub issuer: String,
    pub subject: String,
    /// Every claim of the ID token.
    pub claims: serde_json::Value,
}

struct Discovered {
    /// What the cache entry was fetched for; a changed provider is discovered again.
    issuer: String,
    ca_pem: Option<String>,
    metadata: CoreProviderMetadata,
    fetched: Instant,
}

pub struct Sso {
    flows: Mutex<HashMap<String, Flow>>,
    discovered: Mutex<HashMap<Uuid, Discovered>>,
    errors: Mutex<HashMap<String, (SsoError, Instant)>>,
    /// Failed sign-ins per client address. Looser than the password throttle: a failure here
    /// is more often a provider's or an admin's mistake than a guess, and a whole office may
    /// share one address; it only keeps one address from flooding the log and the stash.
    pub throttle: Throttle,
}

impl Default for Sso {
    fn default() -> Self {
        Self {
            flows: Mutex::default(),
            discovered: Mutex::default(),
            errors: Mutex::default(),
            throttle: Throttle::new(Policy {
                window: Duration::from_secs(300),
                slow_after: 30,
                delay_step: Duration::from_millis(100),
                max_delay: Duration::from_secs(1),
                lock_after: 120,
                lockout: Duration::from_secs(60),
            }),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where the provider sends the browser back to, for a provider named `name`.
pub fn redirect_uri(external_url: &str, name: &str) -> String {
    format!(
        "{}/api/v1/auth/sso/{name}/callback",
        external_url.trim_end_matches('/')
    )
}

/// An HTTPS client that trusts the public web roots and the provider's own CA, if any.
fn http_client(provider_ca: Option<&str>) -> Result<HttpsClient, SsoError> {
    let mut roots = crate::client::public_roots();
    if let Some(pem) = provider_ca {
        crate::client::add_pem_roots(&mut roots, pem.as_bytes())
            .map_err(|e| SsoError::new("sso_misconfigured", format!("the provider CA {e}")))?;
    }
    HttpsClient::new(roots, None, HTTP_TIMEOUT)
        .map(|c| c.with_max_body(MAX_RESPONSE))
        .map_err(|e| SsoError::new("sso_misconfigured", e.to_string()))
}

/// The client closure openidconnect calls for every request to the provider.
fn transport(
    client: &HttpsClient,
) -> impl Fn(
    openidconnect::HttpRequest,
) -> std::pin::Pin<
    Box<dyn Future<Output = Result<openidconnect::HttpResponse, ClientError>> + Send>,
> + '_ {
    move |req: openidconnect::HttpRequest| {
        let client = client.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let res = client
                .send(hyper::Request::from_parts(
                    parts,
                    Full::new(Bytes::from(body)),
                ))
                .await?;
            let (parts, body) = res.into_parts();
            Ok(hyper::http::Response::from_parts(parts, body.to_vec()))
        })
    }
}

/// Says what went wrong talking to the provider without echoing secrets or tokens.
fn unreachable(provider: &SsoProvider, e: &dyn std::error::Error) -> SsoError {
    let mut detail = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        detail = format!("{detail}: {s}");
        source = s.source();
    }
    SsoError::new(
        "sso_provider_unreachable",
        format!("cannot reach the provider at {}: {detail}", provider.issuer),
    )
}

fn discovery_error<E: std::error::Error + 'static>(
    provider: &SsoProvider,
    e: openidconnect::DiscoveryError<E>,
) -> SsoError {
    use openidconnect::DiscoveryError as D;
    match e {
        D::Request(inner) => unreachable(provider, &inner),
        D::Response(status, _, _) => SsoError::new(
            "sso_provider_unreachable",
            format!(
                "the provider at {} answered discovery with HTTP {status}",
                provider.issuer
            ),
        ),
        D::Validation(msg) => SsoError::new(
            "sso_misconfigured",
            format!("the provider's discovery document does not match its issuer: {msg}"),
        ),
        other => SsoError::new(
            "sso_misconfigured",
            format!(
                "the provider at {} has an unusable discovery document: {other}",
                provider.issuer
            ),
        ),
    }
}

impl Sso {
    /// The provider's discovery document and keys, from the cache unless stale or changed.
    async fn metadata(
        &self,
        provider: &SsoProvider,
        fresh: bool,
    ) -> Result<CoreProviderMetadata, SsoError> {
        if !fresh && let Some(d) = lock(&self.discovered).get(&provider.id) {
            let same = d.issuer == provider.issuer && d.ca_pem == provider.ca_pem;
            if same && d.fetched.elapsed() < METADATA_TTL {
                return Ok(d.metadata.clone());
            }
        }
        let client = http_client(provider.ca_pem.as_deref())?;
        let issuer = IssuerUrl::new(provider.issuer.clone())
            .map_err(|e| SsoError::new("sso_misconfigured", format!("issuer: {e}")))?;
        let metadata = CoreProviderMetadata::discover_async(issuer, &transport(&client))
            .await
            .map_err(|e| discovery_error(provider, e))?;
        lock(&self.discovered).insert(
            provider.id,
            Discovered {
                issuer: provider.issuer.clone(),
                ca_pem: provider.ca_pem.clone(),
                metadata: metadata.clone(),
                fetched: Instant::now(),
            },
        );
        Ok(metadata)
    }

    /// Fetches the provider's key set again (a token named a key the cache does not have).
    async fn refresh_keys(&self, provider: &SsoProvider) -> Result<CoreProviderMetadata, SsoError> {
        let mut metadata = self.metadata(provider, false).await?;
        let client = http_client(provider.ca_pem.as_deref())?;
        let jwks = CoreJsonWebKeySet::fetch_async(metadata.jwks_uri(), &transport(&client))
            .await
            .map_err(|e| discovery_error(provider, e))?;
        metadata = metadata.set_jwks(jwks);
        if let Some(d) = lock(&self.discovered).get_mut(&provider.id) {
            d.metadata = metadata.clone();
        }
        tracing::info!(provider = %provider.name, "fetched the provider's signing keys again");
        Ok(metadata)
    }

    /// Checks that the provider can be discovered now; returns a summary for the admin.
    pub async fn probe(&self, provider: &SsoProvider) -> Result<serde_json::Value, SsoError> {
        let m = self.metadata(provider, true).await?;
        Ok(serde_json::json!({
            "issuer": m.issuer().as_str(),
            "authorization_endpoint": m.authorization_endpoint().as_str(),
            "token_endpoint": m.token_endpoint().map(|u| u.as_str().to_owned()),
            "signing_keys": m.jwks().keys().len(),
        }))
    }

    /// Starts a sign-in: returns the provider's authorization URL and the value of the
    /// browser-binding cookie.
    pub async fn begin(
        &self,
        provider: &SsoProvider,
        redirect_uri: &str,
        next: String,
        client_addr: &str,
    ) -> Result<(String, String), SsoError> {
        let metadata = self.metadata(provider, false).await?;
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(provider.client_id.clone()),
            None,
        )
        .set_redirect_uri(redirect(redirect_uri)?);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in provider.scopes.iter().filter(|s| s.as_str() != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, state, nonce) = request.url();
        let binding = crate::authn::new_secret();
        let flow = Flow {
            provider_id: provider.id,
            provider: provider.name.clone(),
            nonce: nonce.secret().clone(),
            pkce_verifier: verifier.secret().clone(),
            binding_hash: crate::authn::sha256_hex(&binding),
            next,
            client_addr: client_addr.to_owned(),
            started: Instant::now(),
        };
        let mut flows = lock(&self.flows);
        flows.retain(|_, f| f.started.elapsed() < FLOW_TTL);
        let from_here = flows
            .values()
            .filter(|f| f.client_addr == client_addr)
            .count();
        if flows.len() >= MAX_FLOWS || from_here >= MAX_FLOWS_PER_ADDRESS {
            return Err(SsoError::new(
                "sso_busy",
                "too many sign-ins are in progress; try again in a few minutes",
            ));
        }
        flows.insert(state.secret().clone(), flow);
        Ok((url.to_string(), binding))
    }

    /// Takes the sign-in `state` names (each works once), if the browser presents the
    /// binding cookie that started it and the callback is the provider's own.
    pub fn take_flow(
        &self,
        state: &str,
        provider: &str,
        binding: Option<&str>,
    ) -> Result<Flow, SsoError> {
        let flow = lock(&self.flows)
            .remove(state)
            .filter(|f| f.started.elapsed() < FLOW_TTL)
            .ok_or_else(|| {
                SsoError::new(
                    "sso_state_invalid",
                    "this sign-in has expired or was already used; start again",
                )
            })?;
        let bound = binding.is_some_and(|b| {
            crate::authn::digest_eq(&crate::authn::sha256_hex(b), &flow.binding_hash)
        });
        if !bound || flow.provider != provider {
            return Err(SsoError::new(
                "sso_state_invalid",
                "this sign-in was not started in this browser, or a newer one replaced it; start again",
            ));
        }
        Ok(flow)
    }

    /// Exchanges the code (with the PKCE verifier) and verifies the ID token: signature by
    /// the provider's keys, issuer, audience, expiry and the flow's nonce.
    pub async fn finish(
        &self,
        provider: &SsoProvider,
        client_secret: String,
        flow: &Flow,
        code: String,
        redirect_uri: &str,
    ) -> Result<Verified, SsoError> {
        let metadata = self.metadata(provider, false).await?;
        let auth_type = auth_type(&metadata);
        let build = |metadata: CoreProviderMetadata| -> Result<_, SsoError> {
            Ok(CoreClient::from_provider_metadata(
                metadata,
                ClientId::new(provider.client_id.clone()),
                Some(ClientSecret::new(client_secret.clone())),
            )
            .set_redirect_uri(redirect(redirect_uri)?)
            .set_auth_type(auth_type.clone()))
        };
        let client = build(metadata)?;
        let http = http_client(provider.ca_pem.as_deref())?;
        let token = client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|e| SsoError::new("sso_misconfigured", e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(flow.pkce_verifier.clone()))
            .request_async(&transport(&http))
            .await
            .map_err(|e| token_error(provider, e))?;
        let id_token = token.id_token().ok_or_else(|| {
            SsoError::new(
                "sso_token_invalid",
                "the provider's token response has no ID token (is the openid scope allowed?)",
            )
        })?;
        let nonce = Nonce::new(flow.nonce.clone());
        let claims = match id_token.claims(&client.id_token_verifier(), &nonce) {
            Ok(c) => c.clone(),
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey
                | SignatureVerificationError::AmbiguousKeyId(_),
            )) => {
                let client = build(self.refresh_keys(provider).await?)?;
                id_token
                    .claims(&client.id_token_verifier(), &nonce)
                    .map_err(claims_error)?
                    .clone()
            }
            Err(e) => return Err(claims_error(e)),
        };
        // The signature covers exactly these bytes, so every claim in them is vouched for.
        let raw = id_token.to_string();
        let payload = raw
            .split('.')
            .nth(1)
            .and_then(|p| {
                use base64::Engine as _;
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(p.trim_end_matches('='))
                    .ok()
            })
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(serde_json::Value::Null);
        Ok(Verified {
            issuer: claims.issuer().as_str().to_owned(),
            subject: claims.subject().as_str().to_owned(),
            claims: payload,
        })
    }

    /// Keeps an error for the sign-in page; returns the id the page reads it by.
    pub fn stash_error(&self, error: SsoError) -> String {
        let id = crate::authn::new_secret();
        let mut errors = lock(&self.errors);
        errors.retain(|_, (_, at)| at.elapsed() < ERROR_TTL);
        if errors.len() < MAX_FLOWS {
            errors.insert(id.clone(), (error, Instant::now()));
        }
        id
    }

    /// The stashed error, once.
    pub fn take_error(&self, id: &str) -> Option<SsoError> {
        lock(&self.errors)
            .remove(id)
            .filter(|(_, at)| at.elapsed() < ERROR_TTL)
            .map(|(e, _)| e)
    }

    /// Forgets a provider's cached discovery (it was changed or deleted).
    pub fn forget(&self, provider: Uuid) {
        lock(&self.discovered).remove(&provider);
    }
}

fn redirect(uri: &str) -> Result<RedirectUrl, SsoError> {
    RedirectUrl::new(uri.to_owned()).map_err(|e| {
        SsoError::new(
            "sso_misconfigured",
            format!("the callback URL {uri} is not a URL: {e}"),
        )
    })
}

/// `client_secret_basic` unless the provider only supports `client_secret_post`.
fn auth_type(metadata: &CoreProviderMetadata) -> AuthType {
    match metadata.token_endpoint_auth_methods_supported() {
        Some(methods)
            if !methods.contains(&CoreClientAuthMethod::ClientSecretBasic)
                && methods.contains(&CoreClientAuthMethod::ClientSecretPost) =>
        {
            AuthType::RequestBody
        }
        _ => AuthType::BasicAuth,
    }
}

fn token_error<RE: std::error::Error + 'static, T: openidconnect::ErrorResponse + 'static>(
    provider: &SsoProvider,
    e: RequestTokenError<RE, T>,
) -> SsoError {
    match e {
        RequestTokenError::ServerResponse(r) => {
            let body = serde_json::to_value(&r).unwrap_or_default();
            let code = body["error"].as_str().unwrap_or("unknown").to_owned();
            match code.as_str() {
                "invalid_client" | "unauthorized_client" => SsoError::new(
                    "sso_client_rejected",
                    format!(
                        "the provider refused ztka's client credentials ({code}); check the client id and client secret of {}",
                        provider.name
                    ),
                ),
                "invalid_grant" => SsoError::new(
                    "sso_code_rejected",
                    "the provider refused the sign-in code (expired or already used); sign in again",
                ),
                _ => SsoError::new(
                    "sso_token_failed",
                    format!("the provider refused to issue tokens ({code})"),
                ),
            }
        }
        RequestTokenError::Request(inner) => unreachable(provider, &inner),
        RequestTokenError::Parse(_, _) => SsoError::new(
            "sso_token_failed",
            "the provider's token response is not valid JSON of the expected shape",
        ),
        RequestTokenError::Other(msg) => SsoError::new(
            "sso_token_failed",
            format!("the provider's token response is unusable: {msg}"),
        ),
    }
}

fn claims_error(e: ClaimsVerificationError) -> SsoError {
    let message = match e {
        ClaimsVerificationError::SignatureVerification(s) => match s {
            SignatureVerificationError::NoMatchingKey => {
                "the ID token is signed with a key the provider does not publish".to_owned()
            }
            SignatureVerificationError::DisallowedAlg(alg) => {
                format!("the ID token is signed with a disallowed algorithm ({alg})")
            }
            _ => "the ID token's signature does not verify".to_owned(),
        },
        ClaimsVerificationError::Expired(_) => "the ID token has expired".to_owned(),
        ClaimsVerificationError::InvalidAudience(_) => {
            "the ID token was issued to another client (audience)".to_owned()
        }
        ClaimsVerificationError::InvalidIssuer(_) => {
            "the ID token was issued by another issuer".to_owned()
        }
        ClaimsVerificationError::InvalidNonce(_) => {
            "the ID token does not belong to this sign-in (nonce)".to_owned()
        }
        other => format!("the ID token is not acceptable: {other}"),
    };
    SsoError::new("sso_token_invalid", message)
}
