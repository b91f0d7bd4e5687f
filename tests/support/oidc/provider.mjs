// Standalone OpenID Connect provider for ztka's single-sign-on integration
// tests. It wraps the certified `oidc-provider` package, serves HTTPS on
// 127.0.0.1 and adds a small test-only control API under /__control.
//
// Usage: node provider.mjs <config.json>
//
// stdout carries exactly one line, `READY <issuer>`, once the server listens.
// Everything else (rare) goes to stderr. Set OIDC_PROVIDER_DEBUG=1 for
// request and library diagnostics on stderr.

import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:https';
import { format } from 'node:util';

const DEBUG = Boolean(process.env.OIDC_PROVIDER_DEBUG);

// oidc-provider prints its notices with console.info (stdout). stdout is
// reserved for the READY line, so route console output to stderr and drop the
// library's development-mode notices unless debugging.
function toStderr(...args) {
  const line = format(...args);
  if (!DEBUG && /^(\x1b\[[0-9;]*m)?oidc-provider (NOTICE|WARNING):/.test(line)) return;
  process.stderr.write(`${line}\n`);
}
console.log = toStderr;
console.info = toStderr;
console.debug = toStderr;
console.warn = toStderr;

function debug(...args) {
  if (DEBUG) process.stderr.write(`[oidc] ${format(...args)}\n`);
}

function fail(message) {
  process.stderr.write(`oidc test provider: ${message}\n`);
  process.exit(1);
}

// oidc-provider 9 needs URL.parse and crypto.hash (Node.js 20.19 or later).
{
  const [major, minor] = process.versions.node.split('.').map(Number);
  if (major < 20 || (major === 20 && minor < 19)) {
    fail(`Node.js >= 20.19 is required (this is ${process.versions.node})`);
  }
}

// Imported after the console is redirected: oidc-provider may print a notice
// while its module initialises.
const { default: Provider, errors: oidcErrors } = await import('oidc-provider');
const { CompactSign, decodeProtectedHeader, exportJWK, generateKeyPair } = await import('jose');

// ---------------------------------------------------------------------------
// Configuration

const configPath = process.argv[2];
if (!configPath) fail('usage: node provider.mjs <config.json>');

let config;
try {
  config = JSON.parse(readFileSync(configPath, 'utf8'));
} catch (err) {
  fail(`cannot read config ${configPath}: ${err.message}`);
}

const port = Number(config.port);
if (!Number.isInteger(port) || port <= 0 || port > 65535) fail('config.port must be a TCP port number');
if (!config.tls?.cert || !config.tls?.key) fail('config.tls.cert and config.tls.key are required');
if (!Array.isArray(config.clients) || config.clients.length === 0) fail('config.clients must be a non-empty array');
if (!Array.isArray(config.users)) fail('config.users must be an array');

const issuer = `https://127.0.0.1:${port}`;

let tlsOptions;
try {
  tlsOptions = { cert: readFileSync(config.tls.cert), key: readFileSync(config.tls.key) };
} catch (err) {
  fail(`cannot read TLS files: ${err.message}`);
}

// username -> { password, claims }; claims are replaced through the control API.
const users = new Map();
for (const user of config.users) {
  if (typeof user?.username !== 'string' || typeof user?.password !== 'string') {
    fail('each user needs a string username and password');
  }
  users.set(user.username, { password: user.password, claims: { ...(user.claims ?? {}) } });
}

const clients = config.clients.map((client) => ({
  grant_types: ['authorization_code'],
  response_types: ['code'],
  token_endpoint_auth_method: 'client_secret_basic',
  id_token_signed_response_alg: 'RS256',
  ...client,
}));

// ---------------------------------------------------------------------------
// Signing key: fresh on every start, so a restart is a key rotation.

const { privateKey } = await generateKeyPair('RS256', { extractable: true });
const signingJwk = {
  ...(await exportJWK(privateKey)),
  kid: randomBytes(12).toString('base64url'),
  alg: 'RS256',
  use: 'sig',
};

// ---------------------------------------------------------------------------
// Accounts and grants

async function findAccount(_ctx, sub) {
  if (!users.has(sub)) return undefined;
  return {
    accountId: sub,
    // Read at call time so control-API changes show up in the next tokens.
    async claims() {
      const user = users.get(sub);
      return { ...structuredClone(user?.claims ?? {}), sub };
    },
  };
}

// Consent is implicit: whatever OpenID scopes (and claims) the request asks
// for are added to the grant, so the consent prompt never triggers.
async function loadExistingGrant(ctx) {
  const { oidc } = ctx;
  const accountId = oidc.account?.accountId ?? oidc.session?.accountId;
  if (!accountId) return undefined;
  const clientId = oidc.client.clientId;

  const grantId = oidc.result?.consent?.grantId || oidc.session.grantIdFor(clientId);
  let grant = grantId ? await oidc.provider.Grant.find(grantId) : undefined;
  if (!grant || grant.accountId !== accountId || grant.clientId !== clientId) {
    grant = new oidc.provider.Grant({ accountId, clientId });
  }

  const scopes = [...oidc.requestParamOIDCScopes].join(' ');
  if (scopes) grant.addOIDCScope(scopes);
  const claims = [...oidc.requestParamClaims];
  if (claims.length) grant.addOIDCClaims(claims);
  await grant.save();
  return grant;
}

// ---------------------------------------------------------------------------
// Provider

function escapeHtml(value) {
  return String(value)
    .replaceAll('&', '&amp;')
    .replaceAll('<', '&lt;')
    .replaceAll('>', '&gt;')
    .replaceAll('"', '&quot;')
    .replaceAll("'", '&#39;');
}

async function renderError(ctx, out) {
  ctx.type = 'html';
  ctx.body = `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Test IdP error</title></head>
<body><h1>Test IdP error</h1>
${Object.entries(out).map(([key, value]) => `<p><strong>${escapeHtml(key)}</strong>: ${escapeHtml(value)}</p>`).join('\n')}
</body></html>`;
}

const provider = new Provider(issuer, {
  clients,
  jwks: { keys: [signingJwk] },
  findAccount,
  loadExistingGrant,
  renderError,
  scopes: ['openid', 'email', 'profile', 'groups'],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['name'],
    groups: ['groups'],
  },
  // Keep the scope-requested claims in the ID token as well as in userinfo.
  conformIdTokenClaims: false,
  responseTypes: ['code'],
  pkce: { required: () => true },
  clientAuthMethods: ['client_secret_basic', 'client_secret_post'],
  features: {
    devInteractions: { enabled: false },
    resourceIndicators: { enabled: false },
    userinfo: { enabled: true },
  },
  interactions: {
    url: (_ctx, interaction) => `/interaction/${interaction.uid}`,
  },
  cookies: {
    keys: [randomBytes(32).toString('base64url')],
  },
  ttl: {
    AccessToken: 60 * 60,
    AuthorizationCode: 60,
    IdToken: 60 * 60,
    Interaction: 60 * 60,
    Session: 24 * 60 * 60,
    Grant: 24 * 60 * 60,
  },
});

provider.on('server_error', (_ctx, err) => {
  process.stderr.write(`oidc test provider: server error: ${err?.stack ?? err}\n`);
});
if (DEBUG) {
  for (const event of ['authorization.error', 'grant.error', 'userinfo.error', 'jwks.error', 'discovery.error']) {
    provider.on(event, (_ctx, err) => debug(`${event}: ${err?.message} ${err?.error_description ?? ''}`));
  }
}

const tokenPath = provider.pathFor('token');

// Outermost middleware: request log when debugging.
if (DEBUG) {
  provider.use(async (ctx, next) => {
    await next();
    debug(`${ctx.method} ${ctx.url} -> ${ctx.status}${ctx.response.get('location') ? ` ${ctx.response.get('location')}` : ''}`);
  });
}

// ---------------------------------------------------------------------------
// Helpers for the custom routes

async function readBody(ctx, limit = 64 * 1024) {
  const chunks = [];
  let size = 0;
  for await (const chunk of ctx.req) {
    size += chunk.length;
    if (size > limit) ctx.throw(413, 'request body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

async function readJson(ctx) {
  const raw = await readBody(ctx);
  if (!raw) return {};
  try {
    return JSON.parse(raw);
  } catch {
    ctx.throw(400, 'invalid JSON body');
  }
  return undefined;
}

function noStore(ctx) {
  ctx.set('Cache-Control', 'no-store');
}

function loginPage(uid, { error, username } = {}) {
  const safeUid = encodeURIComponent(uid);
  return `<!DOCTYPE html>
<html>
<head><meta charset="utf-8"><title>Sign in to Test IdP</title></head>
<body>
<h1>Sign in to Test IdP</h1>
${error ? `<p class="error">${escapeHtml(error)}</p>` : ''}
<form method="post" action="/interaction/${safeUid}/login">
<label>Username <input type="text" name="username" value="${escapeHtml(username ?? '')}" autocomplete="username" autofocus></label>
<label>Password <input type="password" name="password" autocomplete="current-password"></label>
<button type="submit">Sign in</button>
</form>
</body>
</html>
`;
}

async function loadInteraction(ctx, uid) {
  const interaction = await provider.interactionDetails(ctx.req, ctx.res);
  if (interaction.uid !== uid) {
    throw new oidcErrors.SessionNotFound('interaction cookie does not match the requested interaction');
  }
  return interaction;
}

// Grant whatever the consent prompt reports as missing, and finish.
async function finishConsent(ctx, interaction) {
  const { prompt: { details = {} }, params, session } = interaction;
  let grant = interaction.grantId ? await provider.Grant.find(interaction.grantId) : undefined;
  if (!grant) {
    grant = new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  }
  if (details.missingOIDCScope) grant.addOIDCScope(details.missingOIDCScope.join(' '));
  if (details.missingOIDCClaims) grant.addOIDCClaims(details.missingOIDCClaims);
  if (details.missingResourceScopes) {
    for (const [indicator, scopes] of Object.entries(details.missingResourceScopes)) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
  }
  const grantId = await grant.save();
  const returnTo = await provider.interactionResult(
    ctx.req, ctx.res, { consent: { grantId } }, { mergeWithLastSubmission: true },
  );
  noStore(ctx);
  ctx.status = 303;
  ctx.redirect(returnTo);
}

async function finishLogin(ctx, interaction, accountId) {
  const grant = new provider.Grant({ accountId, clientId: interaction.params.client_id });
  if (interaction.params.scope) grant.addOIDCScope(String(interaction.params.scope));
  const grantId = await grant.save();
  const returnTo = await provider.interactionResult(
    ctx.req,
    ctx.res,
    { login: { accountId }, consent: { grantId } },
    { mergeWithLastSubmission: false },
  );
  noStore(ctx);
  ctx.status = 303;
  ctx.redirect(returnTo);
}

function sendError(ctx, err) {
  const status = err.status || err.statusCode || 500;
  if (status >= 500) process.stderr.write(`oidc test provider: ${err.stack ?? err}\n`);
  noStore(ctx);
  ctx.status = status;
  ctx.type = 'html';
  ctx.body = `<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>Test IdP error</title></head>
<body><h1>Test IdP error</h1>
<p><strong>error</strong>: ${escapeHtml(err.error ?? err.name ?? 'error')}</p>
<p><strong>error_description</strong>: ${escapeHtml(err.error_description ?? err.message ?? '')}</p>
</body></html>`;
}

// ---------------------------------------------------------------------------
// Interaction routes (login form, automatic consent)

const INTERACTION = /^\/interaction\/([A-Za-z0-9_-]+)$/;
const INTERACTION_LOGIN = /^\/interaction\/([A-Za-z0-9_-]+)\/login$/;

provider.use(async (ctx, next) => {
  let match;
  if (ctx.method === 'GET' && (match = INTERACTION.exec(ctx.path))) {
    try {
      const interaction = await loadInteraction(ctx, match[1]);
      debug(`interaction ${interaction.uid} prompt=${interaction.prompt.name}`);
      if (interaction.prompt.name === 'consent') {
        await finishConsent(ctx, interaction);
        return;
      }
      noStore(ctx);
      ctx.type = 'html';
      ctx.body = loginPage(interaction.uid);
    } catch (err) {
      sendError(ctx, err);
    }
    return;
  }

  if (ctx.method === 'POST' && (match = INTERACTION_LOGIN.exec(ctx.path))) {
    try {
      const interaction = await loadInteraction(ctx, match[1]);
      if (interaction.prompt.name === 'consent') {
        await finishConsent(ctx, interaction);
        return;
      }
      const form = new URLSearchParams(await readBody(ctx));
      const username = form.get('username') ?? '';
      const password = form.get('password') ?? '';
      const user = users.get(username);
      if (!user || user.password !== password) {
        debug(`interaction ${interaction.uid}: rejected login for ${JSON.stringify(username)}`);
        noStore(ctx);
        ctx.status = 401;
        ctx.type = 'html';
        ctx.body = loginPage(interaction.uid, { error: 'Invalid username or password', username });
        return;
      }
      debug(`interaction ${interaction.uid}: login ${username}`);
      await finishLogin(ctx, interaction, username);
    } catch (err) {
      sendError(ctx, err);
    }
    return;
  }

  await next();
});

// ---------------------------------------------------------------------------
// Test-only control API

const FAULTS = new Set(['tamper', 'nonce', 'expired', 'audience', 'issuer']);
let armedFault = null;

const CONTROL_USER = /^\/__control\/users\/([^/]+)$/;

provider.use(async (ctx, next) => {
  if (!ctx.path.startsWith('/__control/')) {
    await next();
    return;
  }
  noStore(ctx);
  try {
    let match;
    if (ctx.path === '/__control/health' && ctx.method === 'GET') {
      ctx.type = 'text/plain';
      ctx.body = 'ok';
      return;
    }
    if ((match = CONTROL_USER.exec(ctx.path)) && ctx.method === 'PUT') {
      const username = decodeURIComponent(match[1]);
      const user = users.get(username);
      if (!user) ctx.throw(404, `unknown user ${username}`);
      const body = await readJson(ctx);
      const { claims } = body ?? {};
      if (typeof claims !== 'object' || claims === null || Array.isArray(claims)) {
        ctx.throw(400, 'body must be {"claims": {...}}');
      }
      user.claims = { ...claims };
      debug(`control: claims of ${username} replaced`);
      ctx.status = 204;
      return;
    }
    if (ctx.path === '/__control/fault' && ctx.method === 'POST') {
      const { fault } = (await readJson(ctx)) ?? {};
      if (fault === 'none') {
        armedFault = null;
      } else if (FAULTS.has(fault)) {
        armedFault = fault;
      } else {
        ctx.throw(400, `unknown fault ${JSON.stringify(fault)}`);
      }
      debug(`control: fault ${fault}`);
      ctx.status = 204;
      return;
    }
    ctx.throw(404, 'unknown control endpoint');
  } catch (err) {
    ctx.status = err.status || 500;
    ctx.type = 'application/json';
    ctx.body = { error: err.message };
  }
});

// ---------------------------------------------------------------------------
// ID token faults, applied to the next successful authorization_code token
// response only.

function b64json(value) {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

async function applyFault(kind, idToken) {
  const [headerB64, payloadB64, signatureB64] = idToken.split('.');
  const payload = JSON.parse(Buffer.from(payloadB64, 'base64url').toString('utf8'));
  const now = Math.floor(Date.now() / 1000);

  switch (kind) {
    case 'tamper':
      payload.email = 'mallory@example.com';
      // Keep the original header and signature: the signature no longer matches.
      return `${headerB64}.${b64json(payload)}.${signatureB64}`;
    case 'nonce':
      payload.nonce = randomBytes(16).toString('base64url');
      break;
    case 'expired':
      payload.iat = now - 7200;
      payload.exp = now - 3600;
      break;
    case 'audience':
      payload.aud = 'another-client';
      if ('azp' in payload) payload.azp = 'another-client';
      break;
    case 'issuer':
      payload.iss = 'https://evil.example';
      break;
    default:
      return idToken;
  }

  // Re-sign with the provider's current key, keeping the original header
  // (alg, kid, typ) so the token verifies against the published JWKS.
  const header = decodeProtectedHeader(idToken);
  return new CompactSign(Buffer.from(JSON.stringify(payload)))
    .setProtectedHeader(header)
    .sign(privateKey);
}

provider.use(async (ctx, next) => {
  await next();
  if (
    armedFault
    && ctx.method === 'POST'
    && ctx.path === tokenPath
    && ctx.status === 200
    && ctx.oidc?.params?.grant_type === 'authorization_code'
    && typeof ctx.body?.id_token === 'string'
  ) {
    const kind = armedFault;
    armedFault = null;
    ctx.body = { ...ctx.body, id_token: await applyFault(kind, ctx.body.id_token) };
    debug(`fault ${kind} applied to id_token`);
  }
});

// ---------------------------------------------------------------------------
// Server

const server = createServer(tlsOptions, provider.callback());
server.on('error', (err) => fail(`server error: ${err.message}`));
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`READY ${issuer}\n`);
});

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
