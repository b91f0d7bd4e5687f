#!/usr/bin/env node
// Drives the console in headless Chromium against a running ztka server, as an administrator
// and as a second user, and saves screenshots of every page in light and dark.
//
//   node e2e/console.mjs --url https://localhost:PORT --ca DATA/ca.crt \
//        --password-file DATA/initial-admin-password [--screenshots DIR] \
//        [--clusters --agent-command CMD] [--kubectl PATH] \
//        [--idp-issuer URL --idp-ca FILE --idp-client-id ID --idp-client-secret SECRET]
//
// With --idp-issuer, an admin configures that OpenID provider on the single sign-on page and
// a third person signs in through it (user "alice", password "alice-pw" at the provider,
// member of its "eng" group, which the admin maps to the console's developers group).
//
// The cluster part (import a cluster, watch it come online, use its kubeconfig with kubectl)
// runs only with --clusters or ZTKA_E2E_CLUSTERS=1. It runs CMD with `sh -c` once the
// bootstrap token exists, with ZTKA_SERVER_URL, ZTKA_CA_FILE, ZTKA_PROJECT, ZTKA_CLUSTER,
// ZTKA_BOOTSTRAP_TOKEN and ZTKA_BOOTSTRAP_MANIFEST (a file) in its environment; CMD starts an
// agent that registers with that token, and is stopped when the script ends.
//
// Without --clusters, the cluster pages are still exercised, against a stand-in for the
// cluster endpoints inside the browser (--no-simulated-clusters turns that off): it follows
// the API contract (list, create, get, bootstrap), so the import flow, the manifest, and the
// status turning online by polling are checked until the real API is used.
//
// Exit status 0 when every step passed; otherwise the failing step, its error and a
// screenshot of the page at that moment (failure-*.png).

import { spawn, spawnSync } from "node:child_process";
import { createHash, X509Certificate } from "node:crypto";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import tls from "node:tls";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";

const { values: args } = parseArgs({
  options: {
    url: { type: "string" },
    ca: { type: "string" },
    "password-file": { type: "string" },
    screenshots: { type: "string", default: "docs/screenshots" },
    clusters: { type: "boolean", default: process.env.ZTKA_E2E_CLUSTERS === "1" },
    "agent-command": { type: "string", default: process.env.ZTKA_E2E_AGENT_COMMAND },
    "no-simulated-clusters": { type: "boolean", default: false },
    kubectl: { type: "string", default: process.env.KUBECTL ?? "kubectl" },
    chromium: { type: "string", default: process.env.CHROMIUM ?? "/usr/bin/chromium" },
    "idp-issuer": { type: "string" },
    "idp-ca": { type: "string" },
    "idp-client-id": { type: "string" },
    "idp-client-secret": { type: "string" },
  },
});
for (const required of ["url", "ca", "password-file"]) {
  if (!args[required]) {
    console.error(
      `missing --${required}\nusage: console.mjs --url URL --ca CA_FILE --password-file FILE [--screenshots DIR] [--clusters --agent-command CMD]`,
    );
    process.exit(2);
  }
}

const BASE = args.url.replace(/\/$/, "");
const SHOTS = resolve(args.screenshots);
mkdirSync(SHOTS, { recursive: true });
rmSync(join(SHOTS, "failure.png"), { force: true });
const work = mkdtempSync(join(tmpdir(), "ztka-e2e-"));

const ADMIN_PASSWORD = "an admin passphrase for the console test";
const ALICE_INITIAL = "alice-temporary-pw-1";
const ALICE_PASSWORD = "alice chooses a long passphrase";
const ALICE_PASSWORD_2 = "alice chooses another passphrase";
const PROJECT = "payments";
const CLUSTER = "dev";

let passed = 0;
const problems = [];
let current = null;
const started = Date.now();
const children = [];

function log(msg) {
  console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${msg}`);
}

async function step(name, fn) {
  const t = Date.now();
  try {
    await fn();
    passed += 1;
    log(`ok   ${name} (${Date.now() - t} ms)`);
  } catch (e) {
    log(`FAIL ${name}`);
    const err = new Error(`step "${name}" failed: ${e?.message ?? e}`);
    err.stack = `${err.message}\n${e?.stack ?? ""}`;
    throw err;
  }
}

function expect(cond, message) {
  if (!cond) throw new Error(message);
}

/**
 * Chromium is told to accept exactly the certificate that Node verified against the CA file:
 * the server's public key is pinned (needs a user-data-dir, which Playwright always gives).
 */
async function serverKeyPin(base = BASE, caFile = args.ca) {
  const u = new URL(base);
  const ca = readFileSync(caFile);
  const spki = await new Promise((ok, fail) => {
    const sock = tls.connect({ host: u.hostname, port: Number(u.port || 443), servername: u.hostname, ca }, () => {
      const cert = sock.getPeerCertificate(false);
      sock.end();
      if (!sock.authorized) fail(new Error(`server certificate not trusted: ${sock.authorizationError}`));
      else ok(new X509Certificate(cert.raw).publicKey.export({ type: "spki", format: "der" }));
    });
    sock.on("error", fail);
  });
  return createHash("sha256").update(spki).digest("base64");
}

// Every page is captured in both color schemes, and a few at phone width.
async function shot(page, name, opts = {}) {
  for (const scheme of ["light", "dark"]) {
    await page.emulateMedia({ colorScheme: scheme });
    await page.waitForTimeout(50);
    await page.screenshot({ path: join(SHOTS, `${name}-${scheme}.png`), fullPage: opts.fullPage ?? true });
  }
  await page.emulateMedia({ colorScheme: "light" });
}

async function phoneShot(page, name) {
  const size = page.viewportSize();
  await page.setViewportSize({ width: 390, height: 844 });
  await page.waitForTimeout(100);
  await shot(page, `${name}-phone`, { fullPage: false });
  await page.setViewportSize(size);
}

/** Collects what would show a broken build: CSP violations, script errors, failed assets. */
function watch(page, who) {
  page.on("console", (m) => {
    const text = m.text();
    if (/Content Security Policy|Refused to (apply|execute|load)/i.test(text)) problems.push(`${who}: ${text}`);
  });
  page.on("pageerror", (e) => problems.push(`${who}: page error: ${e.message}`));
  page.on("response", (r) => {
    if (r.url().includes("/assets/") && r.status() >= 400) problems.push(`${who}: ${r.status()} for ${r.url()}`);
  });
}

async function nav(page, label) {
  await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: label, exact: true }).click();
  await page.getByRole("heading", { level: 1 }).first().waitFor();
}

async function heading(page, text) {
  await page.getByRole("heading", { level: 1, name: text }).waitFor({ timeout: 15000 });
}

async function signIn(page, user, password) {
  await page.getByLabel("User name").fill(user);
  await page.getByLabel("Password", { exact: true }).fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
}

async function choosePassword(page, current, next) {
  await heading(page, "Choose your password");
  await page.getByLabel("Current password").fill(current);
  await page.getByLabel("New password", { exact: true }).fill(next);
  await page.getByLabel("New password again").fill(next);
  await page.getByRole("button", { name: "Change password" }).click();
}

/** The dialog that is open now. */
const dialog = (page) => page.locator("dialog[open]");

/**
 * A stand-in for `/api/v1/projects/{p}/clusters[...]` in one browser context, following the
 * cluster API contract. `connect(name)` plays an agent that registers and comes online.
 */
async function simulateClusterApi(context) {
  const clusters = new Map();
  const now = () => new Date().toISOString();
  const json = (route, status, body) =>
    route.fulfill({ status, contentType: "application/json", body: body === undefined ? "" : JSON.stringify(body) });
  const notFound = (route, what) =>
    json(route, 404, { error: { code: "not_found", message: `${what} not found`, request_id: "simulated" } });
  await context.route(/\/api\/v1\/projects\/[^/]+\/clusters(\/|\?|$)/, async (route) => {
    const req = route.request();
    const url = new URL(req.url());
    const [, , , , project, , name, sub] = url.pathname.split("/");
    const key = `${project}/${name}`;
    if (!name) {
      if (req.method() === "GET") {
        const items = [...clusters.values()].filter((c) => c.project === project);
        return json(route, 200, { items, next_cursor: null });
      }
      const body = req.postDataJSON();
      if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(body.name ?? "")) {
        return json(route, 400, {
          error: {
            code: "invalid_input",
            message: "name: must be a DNS-1123 label",
            field: "name",
            request_id: "simulated",
          },
        });
      }
      const c = {
        id: `01900000-0000-7000-8000-${String(clusters.size + 1).padStart(12, "0")}`,
        name: body.name,
        project,
        description: body.description ?? "",
        created_at: now(),
        status: {
          state: "pending",
          registered_at: null,
          connected_since: null,
          last_heartbeat: null,
          agent_version: null,
          kubernetes_version: null,
        },
      };
      clusters.set(`${project}/${c.name}`, c);
      return json(route, 201, c);
    }
    const c = clusters.get(key);
    if (!c) return notFound(route, `cluster ${name}`);
    if (sub === "bootstrap") {
      const token = "ztka_bt_simulated0123456789";
      return json(route, 201, {
        token,
        expires_at: new Date(Date.now() + 3600e3).toISOString(),
        manifest: [
          "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ztka-system",
          "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: ztka-agent\n  namespace: ztka-system",
          "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: ztka-agent\n  namespace: ztka-system\nspec:\n  replicas: 1",
        ].join("\n---\n"),
        install_command: `curl -fsS --cacert ca.crt ${BASE}/agent/v1/install/${token} | kubectl apply -f -`,
      });
    }
    if (req.method() === "GET") return json(route, 200, c);
    if (req.method() === "PATCH") {
      c.description = req.postDataJSON().description ?? c.description;
      return json(route, 200, c);
    }
    if (req.method() === "DELETE") {
      clusters.delete(key);
      return json(route, 204);
    }
    return json(route, 405, { error: { code: "method_not_allowed", message: "no", request_id: "simulated" } });
  });
  return {
    connect(project, name) {
      const c = clusters.get(`${project}/${name}`);
      const t = now();
      Object.assign(c.status, {
        state: "online",
        registered_at: t,
        connected_since: t,
        last_heartbeat: t,
        agent_version: "0.1.0",
        kubernetes_version: "v1.33.1",
      });
    },
  };
}

async function main() {
  const initial = readFileSync(args["password-file"], "utf8").trim();
  const pins = [await serverKeyPin()];
  if (args["idp-issuer"]) pins.push(await serverKeyPin(args["idp-issuer"], args["idp-ca"]));
  const browser = await chromium.launch({
    executablePath: args.chromium,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
      `--ignore-certificate-errors-spki-list=${pins.join(",")}`,
    ],
  });
  const contextOptions = { viewport: { width: 1280, height: 820 }, acceptDownloads: true, locale: "en-US" };
  try {
    const adminCtx = await browser.newContext(contextOptions);
    const admin = await adminCtx.newPage();
    current = admin;
    watch(admin, "admin");

    await step("unsigned visitors land on sign-in", async () => {
      await admin.goto(`${BASE}/projects`);
      await heading(admin, "Sign in");
      expect(new URL(admin.url()).pathname === "/login", `at ${admin.url()}`);
      await shot(admin, "login");
    });

    await step("a wrong password is refused with the server's message", async () => {
      await signIn(admin, "admin", "not the password");
      await admin.getByRole("alert").filter({ hasText: "invalid username or password" }).waitFor();
      await shot(admin, "login-error");
    });

    await step("sign in with the initial password and be made to change it", async () => {
      await signIn(admin, "admin", initial);
      await heading(admin, "Choose your password");
      await shot(admin, "password-change");
      // The server's rule shows next to the field it names.
      await choosePassword(admin, initial, "too short");
      await admin.locator(".field.invalid").filter({ hasText: "New password" }).getByText("12").first().waitFor();
      await choosePassword(admin, initial, ADMIN_PASSWORD);
      // Back where the visit started.
      await heading(admin, "Projects");
      expect(new URL(admin.url()).pathname === "/projects", `after sign-in at ${admin.url()}`);
    });

    await step("overview", async () => {
      await nav(admin, "Overview");
      await admin.getByText("Get started").waitFor();
      await shot(admin, "overview-empty");
    });

    await step("create a project (API errors show next to the field)", async () => {
      await nav(admin, "Projects");
      await admin.getByRole("heading", { name: "No projects yet" }).waitFor();
      await shot(admin, "projects-empty");
      await admin.getByRole("button", { name: "New project" }).first().click();
      const d = dialog(admin);
      await d.getByLabel("Name").fill("Not A Name");
      await d.getByRole("button", { name: "Create project" }).click();
      await d.locator(".field.invalid").filter({ hasText: "Name" }).locator(".field-error").waitFor();
      expect(await d.getByLabel("Name").evaluate((el) => el === document.activeElement), "the invalid field has focus");
      await shot(admin, "project-create-error");
      await d.getByLabel("Name").fill(PROJECT);
      await d.getByLabel("Description (optional)").fill("Payment services");
      await d.getByRole("button", { name: "Create project" }).click();
      await heading(admin, PROJECT);
      expect(new URL(admin.url()).pathname === `/projects/${PROJECT}`, `at ${admin.url()}`);
      await admin.getByRole("heading", { name: "Clusters", exact: true }).waitFor();
      await shot(admin, "project");
      await nav(admin, "Projects");
      await admin.getByRole("link", { name: PROJECT }).waitFor();
      await shot(admin, "projects");
    });

    await step("create a local user and a service user", async () => {
      await nav(admin, "Users");
      await admin.getByRole("button", { name: "New user" }).click();
      let d = dialog(admin);
      await d.getByLabel("User name").fill("alice");
      await d.getByLabel("Display name (optional)").fill("Alice Example");
      await d.getByLabel("Email (optional)").fill("alice@example.com");
      await d.getByLabel("Initial password").fill(ALICE_INITIAL);
      await d.getByRole("button", { name: "Create user" }).click();
      await d.getByText(ALICE_INITIAL).waitFor();
      await shot(admin, "user-created");
      await d.getByRole("button", { name: "Close" }).last().click();

      await admin.getByRole("button", { name: "New user" }).click();
      d = dialog(admin);
      await d.getByText("Service (automation)").click();
      await d.getByLabel("User name").fill("ci-deployer");
      await d.getByRole("button", { name: "Create user" }).click();
      await d.getByText("Service users have no password").waitFor();
      await d.getByRole("button", { name: "Close" }).last().click();
      await admin.getByRole("link", { name: "ci-deployer" }).waitFor();
      await admin.getByRole("link", { name: "alice" }).waitFor();
      await shot(admin, "users");
    });

    await step("create a group and add alice", async () => {
      await nav(admin, "Groups");
      await admin.getByRole("heading", { name: "No groups yet" }).waitFor();
      await admin.getByRole("button", { name: "New group" }).first().click();
      const d = dialog(admin);
      await d.getByLabel("Name").fill("developers");
      await d.getByLabel("Description (optional)").fill("Everyone who ships payments");
      await d.getByRole("button", { name: "Create group" }).click();
      await heading(admin, "developers");
      await admin.getByRole("form", { name: "Add a member" }).getByLabel("User name").fill("alice");
      await admin.getByRole("button", { name: "Add", exact: true }).click();
      await admin.locator(".member-list").getByRole("link", { name: "alice" }).waitFor();
      await admin.getByRole("heading", { name: "Members (1)" }).waitFor();
      await shot(admin, "group");
      await nav(admin, "Groups");
      await admin.getByRole("cell", { name: "1 member", exact: true }).waitFor();
      await shot(admin, "groups");
    });

    await step("grant the group a project role and alice a namespace role until a date", async () => {
      await nav(admin, "Access");
      // The first admin's own grant is there from the start.
      await admin.getByRole("row").filter({ hasText: "the organization" }).waitFor();
      await admin.getByRole("button", { name: "Grant access" }).first().click();
      let d = dialog(admin);
      await d.getByText("A group").click();
      await d.getByLabel("Group", { exact: true }).fill("developers");
      await d.getByLabel("Role", { exact: true }).selectOption("project-admin");
      await d.getByLabel("Project", { exact: true }).selectOption(PROJECT);
      await d.getByRole("button", { name: "Grant", exact: true }).click();
      await admin.getByRole("row").filter({ hasText: "developers" }).filter({ hasText: "project-admin" }).waitFor();

      await admin.getByRole("button", { name: "Grant access" }).first().click();
      d = dialog(admin);
      await d.getByText("A user").click();
      await d.getByLabel("User", { exact: true }).fill("alice");
      await d.getByLabel("Role", { exact: true }).selectOption("namespace-read-only");
      await d.getByLabel("Project", { exact: true }).selectOption(PROJECT);
      // Missing namespaces: the server names the field and the console shows it there.
      await d.getByRole("button", { name: "Grant", exact: true }).click();
      await d.locator(".field.invalid").filter({ hasText: "Namespaces" }).locator(".field-error").waitFor();
      await shot(admin, "grant-error");
      await d.getByLabel("Namespaces").fill("web, jobs");
      const next = new Date(Date.now() + 90 * 86400 * 1000);
      const pad = (n) => String(n).padStart(2, "0");
      const local = `${next.getFullYear()}-${pad(next.getMonth() + 1)}-${pad(next.getDate())}T09:00`;
      await d.getByLabel("Expires (optional)").fill(local);
      await d.getByRole("button", { name: "Grant", exact: true }).click();
      const row = admin.getByRole("row").filter({ hasText: "namespace-read-only" });
      await row.waitFor();
      const text = await row.innerText();
      expect(text.includes("jobs") && text.includes("web") && text.includes("alice"), `grant row: ${text}`);
      expect(!/never/.test(text), `the grant has an expiry: ${text}`);
      await shot(admin, "access");
    });

    await step("create an API token (shown once)", async () => {
      await nav(admin, "API tokens");
      await admin.getByRole("heading", { name: "No API tokens" }).waitFor();
      await admin.getByRole("button", { name: "New token" }).first().click();
      const d = dialog(admin);
      await d.getByLabel("Name").fill("release pipeline");
      await d.getByRole("button", { name: "Create token" }).click();
      const token = await d.getByLabel("API token", { exact: true }).innerText();
      expect(token.startsWith("ztka_"), `token looks like ${token.slice(0, 5)}…`);
      await shot(admin, "token-created");
      await d.getByRole("button", { name: "I have copied it" }).click();
      await admin.getByRole("cell", { name: "release pipeline", exact: true }).waitFor();
      const page = await admin.locator("main").innerText();
      expect(!page.includes(token), "the token is not shown again");
      await shot(admin, "tokens");
    });

    await step("settings: a bad value is refused next to its field, a good one is saved", async () => {
      await nav(admin, "Settings");
      const idle = admin.getByLabel("Session idle timeout");
      await idle.fill("0");
      await admin.getByRole("button", { name: "Save settings" }).click();
      await admin
        .locator(".field.invalid")
        .filter({ hasText: "Session idle timeout" })
        .locator(".field-error")
        .waitFor();
      await shot(admin, "settings-error");
      await idle.fill("30");
      await admin.locator('select[name="session_idle_timeout_secs_unit"]').selectOption({ label: "minutes" });
      await admin.getByLabel("Kubeconfig validity").fill("3");
      await admin.locator('select[name="kubeconfig_validity_secs_unit"]').selectOption({ label: "days" });
      await admin.getByRole("button", { name: "Save settings" }).click();
      await admin.getByText("Settings saved.").waitFor();
      await admin.getByText("Now 3 days.").waitFor();
      await shot(admin, "settings");
    });

    if (args["idp-issuer"]) {
      await step("single sign-on: add an OpenID provider, test it, see its redirect URI", async () => {
        await nav(admin, "Single sign-on");
        await admin.getByRole("heading", { name: "No sign-in providers yet" }).waitFor();
        await shot(admin, "sso-empty");
        await admin.getByRole("button", { name: "Add provider" }).first().click();
        const d = dialog(admin);
        await d.getByLabel("Name", { exact: true }).fill("test-idp");
        await d.getByLabel("Button text", { exact: true }).fill("Test IdP");
        await d.getByLabel("Issuer URL", { exact: true }).fill("http://not-https.example");
        await d.getByLabel("Client ID", { exact: true }).fill(args["idp-client-id"]);
        await d.getByLabel("Client secret", { exact: true }).fill(args["idp-client-secret"]);
        await d.getByRole("button", { name: "Add provider" }).click();
        // The server's refusal appears next to the field it names.
        await d.locator(".field.invalid").filter({ hasText: "Issuer URL" }).waitFor();
        await d.getByLabel("Issuer URL", { exact: true }).fill(args["idp-issuer"]);
        await d.getByLabel("Scopes", { exact: true }).fill("openid email profile groups");
        await d.getByLabel("Allowed email domains", { exact: true }).fill("example.com");
        await d.getByLabel("Group mapping", { exact: true }).fill("eng = developers");
        await d.getByLabel("Provider CA (PEM)", { exact: true }).fill(readFileSync(args["idp-ca"], "utf8"));
        await d.getByRole("button", { name: "Add provider" }).click();
        await admin.getByRole("heading", { name: /Test IdP/ }).waitFor();
        await admin.getByRole("button", { name: "Test", exact: true }).click();
        await admin.getByText(/Discovery works/).waitFor();
        const redirect = await admin.getByLabel("Redirect URI").innerText();
        expect(redirect === `${BASE}/api/v1/auth/sso/test-idp/callback`, `redirect URI ${redirect}`);
        expect(!(await admin.content()).includes(args["idp-client-secret"]), "the client secret is not shown");
        await shot(admin, "sso");
      });
    }

    await step("my kubeconfig and account pages", async () => {
      await nav(admin, "My kubeconfig");
      await admin.getByRole("link", { name: "Download for all clusters" }).waitFor();
      await shot(admin, "kubeconfig");
      await admin.getByRole("link", { name: /^Your account/ }).click();
      await heading(admin, "Your account");
      await shot(admin, "account");
    });

    if (!args.clusters && !args["no-simulated-clusters"]) {
      await step("[simulated cluster API] import a cluster, see the manifest, watch it come online", async () => {
        const sim = await simulateClusterApi(adminCtx);
        await admin.goto(`${BASE}/projects/${PROJECT}`);
        await heading(admin, PROJECT);
        await admin.getByRole("heading", { name: "No clusters in this project yet" }).waitFor();
        await admin.getByRole("button", { name: "Import cluster" }).first().click();
        const d = dialog(admin);
        await d.getByLabel("Name").fill(CLUSTER);
        await d.getByLabel("Description (optional)").fill("Development cluster");
        await d.getByRole("button", { name: "Create and get the manifest" }).click();
        await d.getByLabel("Install command").waitFor();
        await d.getByText("Show the manifest").click();
        expect((await d.getByLabel("Agent manifest").innerText()).includes("kind: Deployment"), "manifest shown");
        await d.locator('.live-status[data-state="pending"]').waitFor();
        await shot(admin, "cluster-import");
        const navigations = [];
        admin.on("framenavigated", (f) => f === admin.mainFrame() && navigations.push(f.url()));
        sim.connect(PROJECT, CLUSTER);
        await d.locator('.live-status[data-state="online"]').waitFor({ timeout: 10000 });
        expect(navigations.length === 0, `the page reloaded: ${navigations.join(", ")}`);
        await shot(admin, "cluster-online");
        await d.getByRole("button", { name: "Done" }).click();
        await heading(admin, new RegExp(`^${CLUSTER}`));
        await admin.getByText("v1.33.1").first().waitFor();
        await shot(admin, "cluster");
        await admin.getByRole("link", { name: PROJECT }).click();
        await admin.getByRole("row").filter({ hasText: CLUSTER }).getByText("online").waitFor();
        await shot(admin, "project-with-cluster");
        await nav(admin, "Overview");
        await admin.getByText("1/1").waitFor();
        await shot(admin, "overview");
        await nav(admin, "My kubeconfig");
        await admin.getByRole("link", { name: `Download kubeconfig for ${CLUSTER}` }).waitFor();
        await shot(admin, "kubeconfig-with-cluster");
        await adminCtx.unrouteAll({ behavior: "ignoreErrors" });
      });
    }

    let agent = null;
    if (args.clusters) {
      await step("[clusters] import a cluster: manifest and install command", async () => {
        await admin.goto(`${BASE}/projects/${PROJECT}`);
        await heading(admin, PROJECT);
        await admin.getByRole("button", { name: "Import cluster" }).first().click();
        const d = dialog(admin);
        await d.getByLabel("Name").fill(CLUSTER);
        const bootstrapResponse = admin.waitForResponse((r) => r.url().endsWith(`/clusters/${CLUSTER}/bootstrap`));
        await d.getByRole("button", { name: "Create and get the manifest" }).click();
        const bootstrap = await (await bootstrapResponse).json();
        await d.getByLabel("Install command").waitFor();
        expect(
          (await d.getByLabel("Install command").innerText()).trim() === bootstrap.install_command.trim(),
          "install command shown",
        );
        await d.getByText("Show the manifest").click();
        const manifest = await d.getByLabel("Agent manifest").innerText();
        expect(manifest.includes("kind: Deployment"), "the manifest has the agent Deployment");
        await d.locator('.live-status[data-state="pending"]').waitFor();
        await shot(admin, "cluster-import");
        const manifestFile = join(work, "agent.yaml");
        writeFileSync(manifestFile, bootstrap.manifest);
        agent = { token: bootstrap.token, manifestFile };
      });

      await step("[clusters] the agent registers and the status turns online without a reload", async () => {
        expect(args["agent-command"], "--agent-command is required with --clusters");
        const navigations = [];
        admin.on("framenavigated", (f) => f === admin.mainFrame() && navigations.push(f.url()));
        const child = spawn("sh", ["-c", args["agent-command"]], {
          env: {
            ...process.env,
            ZTKA_SERVER_URL: BASE,
            ZTKA_CA_FILE: resolve(args.ca),
            ZTKA_PROJECT: PROJECT,
            ZTKA_CLUSTER: CLUSTER,
            ZTKA_BOOTSTRAP_TOKEN: agent.token,
            ZTKA_BOOTSTRAP_MANIFEST: agent.manifestFile,
          },
          stdio: ["ignore", "inherit", "inherit"],
          detached: true,
        });
        children.push(child);
        await dialog(admin).locator('.live-status[data-state="online"]').waitFor({ timeout: 90000 });
        expect(navigations.length === 0, `the page reloaded: ${navigations.join(", ")}`);
        await shot(admin, "cluster-online");
        await dialog(admin).getByRole("button", { name: "Done" }).click();
        await heading(admin, CLUSTER);
        await shot(admin, "cluster");
        await admin.goto(`${BASE}/projects/${PROJECT}`);
        await admin.getByRole("row").filter({ hasText: CLUSTER }).getByText("online").waitFor();
        await shot(admin, "project-with-cluster");
        await nav(admin, "Overview");
        await admin.getByText("All clusters are online.").waitFor();
        await shot(admin, "overview");
      });
    }

    const aliceCtx = await browser.newContext(contextOptions);
    const alice = await aliceCtx.newPage();
    watch(alice, "alice");

    await step("alice signs in in a second browser, chooses her password and sees her access", async () => {
      current = alice;
      await alice.goto(`${BASE}/`);
      await heading(alice, "Sign in");
      await signIn(alice, "alice", ALICE_INITIAL);
      await choosePassword(alice, ALICE_INITIAL, ALICE_PASSWORD);
      await heading(alice, "Overview");
      await alice.getByText("Signed in as Alice Example").waitFor();
      const navText = await alice.getByRole("navigation", { name: "Main" }).innerText();
      expect(!navText.includes("Users") && !navText.includes("Settings"), `alice's menu: ${navText}`);
      await shot(alice, "overview-alice");
      await nav(alice, "Projects");
      await alice.getByRole("link", { name: PROJECT }).waitFor();
      await alice.getByRole("link", { name: /^Your account/ }).click();
      await alice.getByText("via group developers").waitFor();
      await alice.getByText("namespace-read-only").waitFor();
      await shot(alice, "account-alice");
    });

    if (args["idp-issuer"]) {
      await step("a third person signs in with single sign-on and lands in their mapped group", async () => {
        const ctx = await browser.newContext(contextOptions);
        const page = await ctx.newPage();
        current = page;
        watch(page, "sso");
        // A failed sign-in comes back with an error id the page reads (once) and explains.
        await page.goto(`${BASE}/login?sso_error=no-such-error`);
        await page.getByRole("alert").filter({ hasText: "Single sign-on failed" }).waitFor();
        expect(!page.url().includes("sso_error"), `the error id is dropped from ${page.url()}`);
        await page.goto(`${BASE}/projects`);
        await heading(page, "Sign in");
        await page.getByRole("link", { name: "Sign in with Test IdP" }).waitFor();
        await shot(page, "login-sso");
        await page.getByRole("link", { name: "Sign in with Test IdP" }).click();
        await page.getByRole("heading", { name: "Sign in to Test IdP" }).waitFor();
        await page.locator("input[name=username]").fill("alice");
        await page.locator("input[name=password]").fill("alice-pw");
        await page.locator("form [type=submit]").click();
        // Back in the console, signed in, on the page the sign-in started from.
        await heading(page, "Projects");
        expect(new URL(page.url()).pathname === "/projects", `at ${page.url()}`);
        expect(new URL(page.url()).hash === "", "the CSRF token is gone from the address bar");
        await page.getByRole("link", { name: PROJECT }).waitFor();
        await page.getByRole("link", { name: /^Your account/ }).click();
        await page.getByText("via group developers").waitFor();
        // The session can change things (the CSRF token from the sign-in works).
        await nav(page, "API tokens");
        await page.getByRole("button", { name: "New token" }).first().click();
        const d = dialog(page);
        await d.getByLabel("Name").fill("sso laptop");
        await d.getByRole("button", { name: "Create token" }).click();
        const token = await d.getByLabel("API token", { exact: true }).innerText();
        expect(token.startsWith("ztka_"), `token looks like ${token.slice(0, 5)}…`);
        await ctx.close();
        current = admin;
        await nav(admin, "Users");
        await admin.getByRole("link", { name: "alice@example.com" }).waitFor();
      });
    }

    if (args.clusters) {
      await step("[clusters] alice downloads a kubeconfig for the cluster and kubectl uses it", async () => {
        await nav(alice, "My kubeconfig");
        const row = alice.getByRole("row").filter({ hasText: CLUSTER });
        await row.getByText("online").waitFor();
        const downloading = alice.waitForEvent("download");
        await row.getByRole("link", { name: `Download kubeconfig for ${CLUSTER}` }).click();
        const file = join(work, "kubeconfig.yaml");
        await (await downloading).saveAs(file);
        const r = spawnSync(args.kubectl, ["--kubeconfig", file, "get", "namespaces", "-o", "name"], {
          encoding: "utf8",
          timeout: 60000,
        });
        expect(r.status === 0, `kubectl exited ${r.status}: ${r.stderr}`);
        log(`kubectl: ${r.stdout.trim().split("\n").join(" ")}`);
        await shot(alice, "kubeconfig-alice");

        // The download's certificate is listed (without reloading the page); revoking it (a
        // lost laptop) stops the file.
        const certs = alice.getByRole("region", { name: "Kubeconfig certificates" });
        await certs.getByText("active").first().waitFor();
        const rows = await certs.getByRole("row").count();
        expect(rows === 2, `one certificate listed (${rows - 1})`);
        await certs.getByRole("button", { name: /^Revoke the kubeconfig downloaded/ }).click();
        await dialog(alice).getByRole("button", { name: "Revoke" }).click();
        await alice.getByText("Kubeconfig revoked.").waitFor();
        await certs.getByText("revoked").waitFor();
        await shot(alice, "kubeconfig-certificates");
        const after = spawnSync(args.kubectl, ["--kubeconfig", file, "get", "namespaces", "-o", "name"], {
          encoding: "utf8",
          timeout: 60000,
        });
        expect(after.status !== 0, "kubectl still works with a revoked kubeconfig");
      });
    }

    await step("the audit page lists what was done, filtered and unfiltered", async () => {
      current = admin;
      await nav(admin, "Audit log");
      const table = admin.getByRole("region", { name: "Audit events" });
      // Kubernetes requests (kubectl's discovery alone is dozens) would push the console's
      // actions off the first page; look at those.
      // (A filter in the URL is what the form's Apply produces; loading it directly avoids
      // racing the page's first fetch.)
      await admin.goto(`${BASE}/audit?kind=system`);
      await admin.getByRole("combobox", { name: "Kind" }).and(admin.locator("select")).waitFor();
      expect(
        (await admin.getByRole("combobox", { name: "Kind" }).inputValue()) === "system",
        "the kind filter from the URL is applied",
      );
      for (const action of [
        "project.create",
        "user.create",
        "group.create",
        "group.member.add",
        "grant.create",
        "token.create",
        "settings.update",
      ]) {
        await table.getByText(action, { exact: true }).first().waitFor();
      }
      await shot(admin, "audit");
      // The form's Apply, retried if a re-render swallowed the typing under load.
      for (let attempt = 1; ; attempt++) {
        await admin.getByRole("textbox", { name: "User" }).fill("alice");
        await admin.getByRole("button", { name: "Apply filters" }).click();
        try {
          await admin.waitForURL(/user=alice/, { timeout: 5000 });
          break;
        } catch (e) {
          if (attempt >= 3) throw e;
        }
      }
      await table.getByText("auth.login", { exact: true }).first().waitFor();
      await table.getByText("auth.password.change", { exact: true }).first().waitFor();
      const whoColumn = await table.locator("tbody tr td:nth-child(2)").allInnerTexts();
      expect(whoColumn.length > 0 && whoColumn.every((t) => t.startsWith("alice")), `who: ${whoColumn.join(" | ")}`);
      await table
        .getByRole("button", { name: /Details of event/ })
        .first()
        .click();
      await table.getByText("Request id").waitFor();
      await shot(admin, "audit-filtered");
      const exportHref = await admin.getByRole("link", { name: "Export JSON Lines" }).getAttribute("href");
      expect(exportHref === "/api/v1/audit/export?kind=system&user=alice", `export link ${exportHref}`);
      if (args.clusters) {
        // Loaded from the URL: typing right after "Clear" races its re-render.
        await admin.goto(`${BASE}/audit?cluster=${encodeURIComponent(CLUSTER)}`);
        expect(
          (await admin.getByRole("textbox", { name: "Cluster" }).inputValue()) === CLUSTER,
          "the cluster filter from the URL is applied",
        );
        await table.locator("tbody tr").filter({ hasText: "alice" }).first().waitFor();
      }
      // The cluster import and (with a real cluster) alice's kubeconfig download.
      const actions = ["cluster.create", "cluster.bootstrap"];
      if (args.clusters) actions.push("kubeconfig.download");
      for (const action of actions) {
        await admin.goto(`${BASE}/audit?action=${action}`);
        await table.getByText(action, { exact: true }).first().waitFor();
      }
    });

    await step("a user's page: reset the password, revoke the kubeconfig, disable and enable", async () => {
      current = admin;
      await nav(admin, "Users");
      await admin.getByRole("link", { name: "alice", exact: true }).click();
      await heading(admin, /^alice/);
      await admin.getByRole("link", { name: "developers" }).waitFor();
      await admin.getByText("namespace-read-only").waitFor();
      await admin.getByRole("heading", { name: "Kubeconfig certificates" }).waitFor();
      if (args.clusters) {
        // alice's download, revoked by her.
        await admin.getByRole("region", { name: "Kubeconfig certificates" }).getByText("revoked").waitFor();
      }
      await shot(admin, "user");

      // A generated temporary password, shown once; alice's session ends and she must
      // choose her own at the next sign-in.
      await admin.getByRole("button", { name: "Reset password" }).click();
      let d = dialog(admin);
      await d.getByRole("button", { name: "Reset password" }).click();
      const temporary = (await d.getByLabel("Temporary password").innerText()).trim();
      expect(temporary.length >= 12, `temporary password of ${temporary.length} characters`);
      await shot(admin, "user-password-reset");
      await d.getByRole("button", { name: "Done" }).click();
      current = alice;
      await alice.goto(`${BASE}/projects`);
      await heading(alice, "Sign in");
      await signIn(alice, "alice", temporary);
      await choosePassword(alice, temporary, ALICE_PASSWORD_2);
      await heading(alice, "Projects");

      // Revoking her credentials signs her out again.
      current = admin;
      await admin.getByRole("button", { name: "Revoke kubeconfig" }).click();
      await dialog(admin).getByRole("button", { name: "Revoke" }).click();
      await admin.getByText("Credentials of alice revoked.").waitFor();
      current = alice;
      await alice.reload();
      await heading(alice, "Sign in");

      // Disabled, she is refused with the server's reason; enabled, she is back.
      current = admin;
      await admin.getByRole("button", { name: "Disable", exact: true }).click();
      await admin.getByText("alice is disabled.").waitFor();
      await admin.getByRole("button", { name: "Enable", exact: true }).waitFor();
      await shot(admin, "user-disabled");
      current = alice;
      await signIn(alice, "alice", ALICE_PASSWORD_2);
      await alice.getByRole("alert").filter({ hasText: "disabled" }).waitFor();
      current = admin;
      await admin.getByRole("button", { name: "Enable", exact: true }).click();
      await admin.getByText("alice can sign in again.").waitFor();
      current = alice;
      await signIn(alice, "alice", ALICE_PASSWORD_2);
      // Back on the page she was signed out of.
      await heading(alice, "Projects");

      current = admin;
      for (const action of ["user.password.reset", "kubeconfig.revoke", "user.disable", "user.enable"]) {
        await admin.goto(`${BASE}/audit?action=${action}`);
        await admin.getByRole("region", { name: "Audit events" }).getByText(action, { exact: true }).first().waitFor();
      }
    });

    await step("phone-width layout with the menu", async () => {
      await nav(admin, "Overview");
      await phoneShot(admin, "overview");
      await admin.setViewportSize({ width: 390, height: 844 });
      await admin.getByRole("button", { name: "Menu" }).click();
      await admin.getByRole("navigation", { name: "Main" }).getByRole("link", { name: "Access" }).click();
      await heading(admin, "Access");
      await shot(admin, "access-phone", { fullPage: false });
      await admin.setViewportSize(contextOptions.viewport);
      await admin.goto(`${BASE}/projects/${PROJECT}`);
      await heading(admin, PROJECT);
      await phoneShot(admin, "project");
    });

    await step("keyboard: sign out and sign in again without the mouse", async () => {
      await admin.getByRole("button", { name: "Sign out" }).click();
      await heading(admin, "Sign in");
      await admin.getByText("You are signed out.").waitFor();
      await admin.getByLabel("User name").focus();
      await admin.keyboard.type("admin");
      await admin.keyboard.press("Tab");
      await admin.keyboard.type(ADMIN_PASSWORD);
      await admin.keyboard.press("Enter");
      await heading(admin, "Overview");
    });

    await step("an unknown path shows a page-not-found inside the console", async () => {
      await admin.goto(`${BASE}/no/such/page`);
      await heading(admin, "Page not found");
      await shot(admin, "not-found");
    });

    expect(problems.length === 0, `browser problems:\n${problems.join("\n")}`);
    log(`console e2e: ${passed} steps passed; screenshots in ${SHOTS}`);
  } catch (e) {
    try {
      const file = join(SHOTS, "failure.png");
      await current?.screenshot({ path: file, fullPage: true });
      console.error(`page at failure: ${current?.url()} (screenshot ${file})`);
    } catch {
      // The page may be gone already.
    }
    throw e;
  } finally {
    await browser.close();
  }
}

main()
  .then(() => cleanup(0))
  .catch(async (e) => {
    console.error(e?.stack ?? String(e));
    if (problems.length) console.error(`browser problems:\n${problems.join("\n")}`);
    cleanup(1);
  });

function cleanup(code) {
  for (const c of children) {
    try {
      process.kill(-c.pid, "SIGTERM");
    } catch {
      // Already gone.
    }
  }
  rmSync(work, { recursive: true, force: true });
  process.exit(code);
}
