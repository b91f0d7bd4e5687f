// End-to-end self-test of provider.mjs: runs the provider on a free port with
// a throwaway self-signed certificate and walks the authorization-code flow
// the way the Rust integration tests do (no browser: manual redirects, a
// cookie jar, the login form), then exercises the control API.
//
// Usage: node selftest.mjs        (set SELFTEST_VERBOSE=1 to print each hop)
//
// TLS is verified for real: the test re-runs itself with NODE_EXTRA_CA_CERTS
// pointing at the generated certificate.

import { spawn, execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { compactVerify, createLocalJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify } from 'jose';

const here = dirname(fileURLToPath(import.meta.url));
const VERBOSE = Boolean(process.env.SELFTEST_VERBOSE);

// ---------------------------------------------------------------------------
// Stage 1: make a certificate, then re-run this file trusting it.

if (!process.env.SELFTEST_WORKDIR) {
  const dir = mkdtempSync(join(tmpdir(), 'ztka-oidc-selftest-'));
  let code = 1;
  try {
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
      '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-days', '1',
      '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1',
    ], { stdio: ['ignore', 'ignore', 'pipe'] });
    const child = spawn(process.execPath, [fileURLToPath(import.meta.url)], {
      stdio: 'inherit',
      env: { ...process.env, SELFTEST_WORKDIR: dir, NODE_EXTRA_CA_CERTS: join(dir, 'cert.pem') },
    });
    code = await new Promise((resolve) => child.on('exit', (c, signal) => resolve(signal ? 1 : c)));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  process.exit(code);
}

// ---------------------------------------------------------------------------
// Stage 2: the test proper.

const workdir = process.env.SELFTEST_WORKDIR;
const REDIRECT_URI = 'https://127.0.0.1:5555/api/v1/sso/callback';
const CLIENT_ID = 'ztka';
const CLIENT_SECRET = 's3cret';

let passed = 0;
let failed = 0;
function check(name, condition, detail) {
  if (condition) {
    passed += 1;
    if (VERBOSE) console.log(`  ok   ${name}`);
  } else {
    failed += 1;
    console.log(`  FAIL ${name}${detail === undefined ? '' : `: ${typeof detail === 'string' ? detail : JSON.stringify(detail)}`}`);
  }
}
function log(...args) {
  if (VERBOSE) console.log(...args);
}

async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const port = await freePort();
const configPath = join(workdir, 'config.json');
writeFileSync(configPath, JSON.stringify({
  port,
  tls: { cert: join(workdir, 'cert.pem'), key: join(workdir, 'key.pem') },
  clients: [{ client_id: CLIENT_ID, client_secret: CLIENT_SECRET, redirect_uris: [REDIRECT_URI] }],
  users: [{
    username: 'alice',
    password: 'pw',
    claims: { email: 'alice@example.com', email_verified: true, name: 'Alice', groups: ['eng', 'ops'] },
  }],
}, null, 2));

// Starts provider.mjs; resolves once it printed READY.
async function startProvider() {
  const started = performance.now();
  const child = spawn(process.execPath, [join(here, 'provider.mjs'), configPath], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d) => { stderr += d; });
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  const ready = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`provider not ready after 30s; stderr: ${stderr}`)), 30_000);
    child.stdout.on('data', (d) => {
      stdout += d;
      const line = stdout.split('\n').find((l) => l.startsWith('READY '));
      if (line) {
        clearTimeout(timer);
        resolve(line.slice('READY '.length).trim());
      }
    });
    exited.then(({ code }) => reject(new Error(`provider exited early (${code}); stderr: ${stderr}`)));
  });
  const ms = Math.round(performance.now() - started);
  return {
    issuer: ready,
    ms,
    async stop() {
      child.kill('SIGTERM');
      const result = await exited;
      return { ...result, stdout, stderr };
    },
  };
}

// --- tiny HTTP client with a cookie jar -------------------------------------

class CookieJar {
  #cookies = new Map(); // `${name};${path}` -> { name, value, path }

  store(setCookies, url) {
    for (const header of setCookies) {
      const [pair, ...attrs] = header.split(';').map((s) => s.trim());
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq);
      const value = pair.slice(eq + 1);
      let path = url.pathname.replace(/\/[^/]*$/, '') || '/';
      let expired = false;
      for (const attr of attrs) {
        const [k, v = ''] = attr.split('=');
        const key = k.toLowerCase();
        if (key === 'path') path = v;
        if (key === 'max-age' && Number(v) <= 0) expired = true;
        if (key === 'expires' && Date.parse(v) < Date.now()) expired = true;
      }
      const id = `${name};${path}`;
      if (expired) this.#cookies.delete(id);
      else this.#cookies.set(id, { name, value, path });
    }
  }

  header(url) {
    const p = url.pathname;
    return [...this.#cookies.values()]
      .filter((c) => p === c.path || p.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`))
      .map((c) => `${c.name}=${c.value}`)
      .join('; ');
  }

  names() {
    return [...this.#cookies.values()].map((c) => `${c.name} (path ${c.path})`);
  }
}

async function request(jar, url, { method = 'GET', form, headers = {} } = {}) {
  const target = new URL(url);
  const h = { ...headers };
  const cookie = jar?.header(target);
  if (cookie) h.cookie = cookie;
  let body;
  if (form) {
    body = new URLSearchParams(form).toString();
    h['content-type'] = 'application/x-www-form-urlencoded';
  }
  const res = await fetch(target, { method, headers: h, body, redirect: 'manual' });
  const setCookies = res.headers.getSetCookie();
  jar?.store(setCookies, target);
  const text = await res.text();
  log(`    ${method} ${target.pathname}${target.search ? '?…' : ''} -> ${res.status}`
    + `${res.headers.get('location') ? ` Location: ${res.headers.get('location')}` : ''}`
    + `${setCookies.length ? ` Set-Cookie: ${setCookies.map((c) => c.split(';')[0].split('=')[0]).join(', ')}` : ''}`);
  return { status: res.status, headers: res.headers, text, url: target };
}

function b64urlSha256(value) {
  return createHash('sha256').update(value).digest('base64url');
}

// Runs one authorization-code sign-in. Returns { code, state, callback, sawLoginForm, verifier, nonce }.
async function signIn(discovery, jar, { username = 'alice', password = 'pw', tryWrongPassword = false, extra = {} } = {}) {
  const verifier = randomBytes(32).toString('base64url');
  const state = randomBytes(16).toString('base64url');
  const nonce = randomBytes(16).toString('base64url');
  const authorize = new URL(discovery.authorization_endpoint);
  authorize.search = new URLSearchParams({
    client_id: CLIENT_ID,
    response_type: 'code',
    scope: 'openid email profile groups',
    redirect_uri: REDIRECT_URI,
    state,
    nonce,
    code_challenge: b64urlSha256(verifier),
    code_challenge_method: 'S256',
    ...extra,
  }).toString();

  let res = await request(jar, authorize);
  let sawLoginForm = false;
  for (let hops = 0; hops < 20; hops += 1) {
    if (res.status >= 300 && res.status < 400) {
      const next = new URL(res.headers.get('location'), res.url);
      if (next.href.startsWith(`${REDIRECT_URI}?`) || next.href === REDIRECT_URI) {
        const params = next.searchParams;
        if (params.get('error')) throw new Error(`authorization error: ${params.get('error')} ${params.get('error_description')}`);
        return { code: params.get('code'), state: params.get('state'), returnedState: state, iss: params.get('iss'), callback: next, sawLoginForm, verifier, nonce };
      }
      res = await request(jar, next);
      continue;
    }
    if (res.status === 200 && res.text.includes('<form')) {
      sawLoginForm = true;
      check('login page has heading', res.text.includes('Sign in to Test IdP'));
      const forms = res.text.match(/<form\b[^>]*>/g) ?? [];
      check('login page has exactly one form', forms.length === 1, forms);
      const action = /action="([^"]+)"/.exec(forms[0] ?? '')?.[1];
      check('form posts to /interaction/<uid>/login', /^\/interaction\/[^/]+\/login$/.test(action ?? ''), action);
      check('form has username and password inputs', /name="username"/.test(res.text) && /name="password"/.test(res.text));
      const actionUrl = new URL(action, res.url);
      if (tryWrongPassword) {
        const bad = await request(jar, actionUrl, { method: 'POST', form: { username, password: `${password}-wrong` } });
        check('wrong password -> 401', bad.status === 401, bad.status);
        check('wrong password -> message', bad.text.includes('Invalid username or password'));
        check('wrong password -> form again', bad.text.includes(`action="${action}"`));
        tryWrongPassword = false;
      }
      res = await request(jar, actionUrl, { method: 'POST', form: { username, password } });
      continue;
    }
    throw new Error(`unexpected response ${res.status} at ${res.url}: ${res.text.slice(0, 500)}`);
  }
  throw new Error('too many redirects');
}

async function exchange(discovery, code, verifier, { auth = 'basic' } = {}) {
  const form = { grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI, code_verifier: verifier };
  const headers = { accept: 'application/json' };
  if (auth === 'basic') {
    headers.authorization = `Basic ${Buffer.from(`${encodeURIComponent(CLIENT_ID)}:${encodeURIComponent(CLIENT_SECRET)}`).toString('base64')}`;
  } else {
    form.client_id = CLIENT_ID;
    form.client_secret = CLIENT_SECRET;
  }
  const res = await request(null, discovery.token_endpoint, { method: 'POST', form, headers });
  if (res.status !== 200) throw new Error(`token endpoint ${res.status}: ${res.text}`);
  return JSON.parse(res.text);
}

async function control(issuer, method, path, body) {
  const res = await fetch(`${issuer}${path}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, text: await res.text() };
}

async function getJwks(discovery) {
  const res = await request(null, discovery.jwks_uri);
  return JSON.parse(res.text);
}

// ---------------------------------------------------------------------------

let provider;
try {
  provider = await startProvider();
  const { issuer } = provider;
  console.log(`provider ready in ${provider.ms} ms at ${issuer}`);
  check('issuer', issuer === `https://127.0.0.1:${port}`, issuer);

  // Discovery
  const discoRes = await request(null, `${issuer}/.well-known/openid-configuration`);
  check('discovery 200', discoRes.status === 200, discoRes.status);
  const discovery = JSON.parse(discoRes.text);
  check('discovery issuer', discovery.issuer === issuer, discovery.issuer);
  check('discovery S256', discovery.code_challenge_methods_supported?.includes('S256'));
  check('discovery scopes', ['openid', 'email', 'profile', 'groups'].every((s) => discovery.scopes_supported?.includes(s)));
  check('discovery auth methods', ['client_secret_basic', 'client_secret_post'].every((m) => discovery.token_endpoint_auth_methods_supported?.includes(m)));
  log('  endpoints:', JSON.stringify({
    authorization: discovery.authorization_endpoint,
    token: discovery.token_endpoint,
    userinfo: discovery.userinfo_endpoint,
    jwks: discovery.jwks_uri,
  }));

  const health = await control(issuer, 'GET', '/__control/health');
  check('health', health.status === 200 && health.text === 'ok', health);

  const jwks = await getJwks(discovery);
  check('jwks has one RS256 key', jwks.keys?.length === 1 && jwks.keys[0].alg === 'RS256' && jwks.keys[0].kty === 'RSA', jwks);
  check('jwks is public only', jwks.keys?.every((k) => k.d === undefined));
  const firstKid = jwks.keys?.[0]?.kid;
  const keySet = createLocalJWKSet(jwks);

  // First sign-in: login form, wrong password, right password.
  log('  sign-in 1 (fresh jar)');
  const jar = new CookieJar();
  const s1 = await signIn(discovery, jar, { tryWrongPassword: true });
  check('sign-in 1 showed login form', s1.sawLoginForm);
  check('callback state', s1.state === s1.returnedState);
  check('callback iss', s1.iss === issuer, s1.iss);
  check('callback has code', typeof s1.code === 'string' && s1.code.length > 10);
  log('  cookies after sign-in 1:', jar.names().join(', '));

  const t1 = await exchange(discovery, s1.code, s1.verifier, { auth: 'basic' });
  check('token response has id_token + access_token', typeof t1.id_token === 'string' && typeof t1.access_token === 'string');
  const { payload: c1, protectedHeader: h1 } = await jwtVerify(t1.id_token, keySet, { issuer, audience: CLIENT_ID });
  log('  id_token header', JSON.stringify(h1), 'payload', JSON.stringify(c1));
  check('id_token kid is the JWKS kid', h1.kid === firstKid, h1);
  check('id_token sub', c1.sub === 'alice', c1.sub);
  check('id_token email', c1.email === 'alice@example.com', c1.email);
  check('id_token email_verified', c1.email_verified === true, c1.email_verified);
  check('id_token name', c1.name === 'Alice', c1.name);
  check('id_token groups', JSON.stringify(c1.groups) === '["eng","ops"]', c1.groups);
  check('id_token nonce', c1.nonce === s1.nonce, c1.nonce);

  const ui = await fetch(discovery.userinfo_endpoint, { headers: { authorization: `Bearer ${t1.access_token}` } });
  const userinfo = await ui.json();
  check('userinfo', ui.status === 200 && userinfo.sub === 'alice' && userinfo.email === 'alice@example.com'
    && JSON.stringify(userinfo.groups) === '["eng","ops"]', userinfo);

  const reuse = await request(null, discovery.token_endpoint, {
    method: 'POST',
    form: { grant_type: 'authorization_code', code: s1.code, redirect_uri: REDIRECT_URI, code_verifier: s1.verifier, client_id: CLIENT_ID, client_secret: CLIENT_SECRET },
  });
  // Replaying a code is rejected, and oidc-provider then revokes the tokens issued from it.
  check('code cannot be reused', reuse.status === 400 && reuse.text.includes('invalid_grant'), reuse.status);

  const ui2 = await fetch(discovery.userinfo_endpoint, { headers: { authorization: `Bearer ${t1.access_token}` } });
  check('code replay revokes the access token', ui2.status === 401, ui2.status);

  // PKCE is enforced.
  const s1b = await signIn(discovery, jar);
  const badPkce = await request(null, discovery.token_endpoint, {
    method: 'POST',
    form: { grant_type: 'authorization_code', code: s1b.code, redirect_uri: REDIRECT_URI, code_verifier: randomBytes(32).toString('base64url'), client_id: CLIENT_ID, client_secret: CLIENT_SECRET },
  });
  check('wrong code_verifier rejected', badPkce.status === 400 && badPkce.text.includes('invalid_grant'), badPkce.text);

  // Change claims, sign in again (session present: the form may be skipped).
  check('PUT claims unknown user -> 404', (await control(issuer, 'PUT', '/__control/users/bob', { claims: {} })).status === 404);
  const put = await control(issuer, 'PUT', '/__control/users/alice', {
    claims: { email: 'alice@example.com', email_verified: true, name: 'Alice', groups: ['eng'] },
  });
  check('PUT claims -> 204', put.status === 204, put);
  log('  sign-in 2 (same jar, client_secret_post)');
  const s2 = await signIn(discovery, jar);
  log(`  sign-in 2 ${s2.sawLoginForm ? 'showed' : 'skipped'} the login form`);
  const t2 = await exchange(discovery, s2.code, s2.verifier, { auth: 'post' });
  const { payload: c2 } = await jwtVerify(t2.id_token, keySet, { issuer, audience: CLIENT_ID });
  check('groups after PUT', JSON.stringify(c2.groups) === '["eng"]', c2.groups);
  check('nonce on sign-in 2', c2.nonce === s2.nonce);

  // prompt=login forces the form despite the session; prompt=consent goes
  // through an interaction that is granted automatically.
  const sLogin = await signIn(discovery, jar, { extra: { prompt: 'login' } });
  check('prompt=login shows the form', sLogin.sawLoginForm);
  const sConsent = await signIn(discovery, jar, { extra: { prompt: 'consent' } });
  check('prompt=consent needs no form', !sConsent.sawLoginForm);
  const tConsent = await exchange(discovery, sConsent.code, sConsent.verifier);
  check('prompt=consent token', decodeJwt(tConsent.id_token).email === 'alice@example.com');

  // A fresh jar always gets the form.
  const s3 = await signIn(discovery, new CookieJar());
  check('fresh jar shows login form', s3.sawLoginForm);

  // Faults.
  check('unknown fault -> 400', (await control(issuer, 'POST', '/__control/fault', { fault: 'bogus' })).status === 400);

  async function faulted(kind) {
    const armed = await control(issuer, 'POST', '/__control/fault', { fault: kind });
    check(`arm ${kind} -> 204`, armed.status === 204, armed);
    const s = await signIn(discovery, jar);
    const t = await exchange(discovery, s.code, s.verifier);
    return { s, t, claims: decodeJwt(t.id_token), header: decodeProtectedHeader(t.id_token) };
  }
  async function signatureOk(jwt) {
    try {
      await compactVerify(jwt, keySet);
      return true;
    } catch {
      return false;
    }
  }

  {
    const { t, claims } = await faulted('tamper');
    check('tamper: signature invalid', !(await signatureOk(t.id_token)));
    check('tamper: email changed', claims.email === 'mallory@example.com', claims.email);
  }
  {
    const { s, t, claims, header } = await faulted('nonce');
    check('nonce: signature valid', await signatureOk(t.id_token));
    check('nonce: kid kept', header.kid === firstKid, header);
    check('nonce: nonce differs', typeof claims.nonce === 'string' && claims.nonce !== s.nonce, claims.nonce);
  }
  {
    const { t, claims } = await faulted('expired');
    const now = Math.floor(Date.now() / 1000);
    check('expired: signature valid', await signatureOk(t.id_token));
    check('expired: exp in the past', claims.exp <= now - 3590 && claims.iat <= now - 7190, claims);
  }
  {
    const { t, claims } = await faulted('audience');
    check('audience: signature valid', await signatureOk(t.id_token));
    check('audience: aud changed', claims.aud === 'another-client', claims.aud);
  }
  {
    const { t, claims } = await faulted('issuer');
    check('issuer: signature valid', await signatureOk(t.id_token));
    check('issuer: iss changed', claims.iss === 'https://evil.example', claims.iss);
  }
  {
    // Faults fire once; "none" disarms.
    const s = await signIn(discovery, jar);
    const t = await exchange(discovery, s.code, s.verifier);
    const ok = await jwtVerify(t.id_token, keySet, { issuer, audience: CLIENT_ID }).then(() => true, () => false);
    check('fault is one-shot', ok && decodeJwt(t.id_token).nonce === s.nonce);
    await control(issuer, 'POST', '/__control/fault', { fault: 'tamper' });
    check('fault none -> 204', (await control(issuer, 'POST', '/__control/fault', { fault: 'none' })).status === 204);
    const s2b = await signIn(discovery, jar);
    const t2b = await exchange(discovery, s2b.code, s2b.verifier);
    check('none disarms', await signatureOk(t2b.id_token));
  }

  // Restart: clean SIGTERM, only READY on stdout, new key.
  const stopped = await provider.stop();
  provider = undefined;
  check('SIGTERM exit code 0', stopped.code === 0, stopped);
  check('stdout is exactly the READY line', stopped.stdout === `READY ${issuer}\n`, stopped.stdout);
  check('stderr is quiet', stopped.stderr === '', stopped.stderr);

  provider = await startProvider();
  console.log(`provider restarted in ${provider.ms} ms`);
  const jwks2 = await getJwks(discovery);
  const secondKid = jwks2.keys?.[0]?.kid;
  check('restart rotates the kid', secondKid && secondKid !== firstKid, { firstKid, secondKid });
  const s4 = await signIn(discovery, jar);
  check('old session is gone after restart', s4.sawLoginForm);
  const t4 = await exchange(discovery, s4.code, s4.verifier);
  check('new token signed with new kid', decodeProtectedHeader(t4.id_token).kid === secondKid);
  check('old JWKS no longer verifies', !(await signatureOk(t4.id_token)));
  check('config claims restored after restart', JSON.stringify(decodeJwt(t4.id_token).groups) === '["eng","ops"]');
} catch (err) {
  failed += 1;
  console.log(`  FAIL exception: ${err.stack ?? err}`);
} finally {
  if (provider) {
    const stopped = await provider.stop();
    if (stopped.stderr) console.log(`provider stderr:\n${stopped.stderr}`);
  }
}

console.log(`selftest: ${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
