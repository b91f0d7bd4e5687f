// The REST API client: JSON over fetch with the session cookie, the CSRF token on every
// state-changing request, and the API's one error shape turned into ApiError.

const CSRF_KEY = "ztka.csrf";

export interface ErrorBody {
  code: string;
  message: string;
  request_id?: string;
  field?: string;
}

export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly field?: string;
  readonly requestId?: string;

  constructor(status: number, body: ErrorBody) {
    super(body.message);
    this.status = status;
    this.code = body.code;
    this.field = body.field;
    this.requestId = body.request_id;
  }

  /** The message without the leading `field: ` the server puts in front of it. */
  get fieldMessage(): string {
    const prefix = this.field ? `${this.field}: ` : "";
    return prefix && this.message.startsWith(prefix) ? this.message.slice(prefix.length) : this.message;
  }
}

/** Told about a response that means the session is gone or must change its password. */
type SessionListener = (code: string) => void;
let sessionListener: SessionListener = () => {};
export function onSessionProblem(l: SessionListener): void {
  sessionListener = l;
}

export function csrfToken(): string | null {
  try {
    return localStorage.getItem(CSRF_KEY);
  } catch {
    return null;
  }
}

export function setCsrfToken(token: string | null): void {
  try {
    if (token) localStorage.setItem(CSRF_KEY, token);
    else localStorage.removeItem(CSRF_KEY);
  } catch {
    // Storage disabled: the console then asks to sign in again on reload.
  }
}

export type Query = Record<string, string | number | undefined | null | false>;

export function withQuery(path: string, q?: Query): string {
  if (!q) return path;
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(q)) {
    if (v !== undefined && v !== null && v !== "" && v !== false) params.set(k, String(v));
  }
  const s = params.toString();
  return s ? `${path}?${s}` : path;
}

export const API = "/api/v1";

async function request<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET") {
    const t = csrfToken();
    if (t) headers["X-CSRF-Token"] = t;
  }
  let res: Response;
  try {
    res = await fetch(API + path, {
      method,
      headers,
      credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, {
      code: "network",
      message: "The server could not be reached. Check your connection and try again.",
    });
  }
  if (res.status === 204) return undefined as T;
  const text = await res.text();
  let json: unknown = undefined;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  if (!res.ok) {
    const err = (json as { error?: ErrorBody } | undefined)?.error ?? {
      code: `http_${res.status}`,
      message: `The server answered ${res.status} ${res.statusText}.`,
    };
    const e = new ApiError(res.status, err);
    if (
      (res.status === 401 && path !== "/auth/login") ||
      (res.status === 403 && e.code === "password_change_required")
    ) {
      sessionListener(e.code);
    }
    throw e;
  }
  return json as T;
}

export const api = {
  get: <T>(path: string, q?: Query) => request<T>("GET", withQuery(path, q)),
  post: <T>(path: string, body: unknown = {}) => request<T>("POST", path, body),
  patch: <T>(path: string, body: unknown) => request<T>("PATCH", path, body),
  del: (path: string) => request<void>("DELETE", path),
};

/** Path segment, escaped. */
export const seg = (s: string) => encodeURIComponent(s);

// ---- Types of the API's views ----

export interface Page<T> {
  items: T[];
  next_cursor: string | null;
}

export type UserKind = "local" | "service" | "sso";

export interface User {
  id: string;
  name: string;
  kind: UserKind;
  display_name: string;
  email: string;
  disabled: boolean;
  must_change_password: boolean;
  /** SSO users: the provider they last signed in through. */
  sso_provider?: string;
  created_at: string;
  updated_at: string;
}

export interface GroupMapping {
  idp_group: string;
  group: string;
}

export interface SsoProvider {
  id: string;
  name: string;
  display_name: string;
  issuer: string;
  client_id: string;
  client_secret_set: boolean;
  scopes: string[];
  username_claim: string;
  groups_claim: string;
  allowed_domains: string[];
  group_mapping: GroupMapping[];
  ca_pem: string | null;
  require_verified_email: boolean;
  enabled: boolean;
  redirect_uri: string;
  created_at: string;
  updated_at: string;
}

export interface SignInOption {
  name: string;
  display_name: string;
  login_url: string;
}

export interface Group {
  id: string;
  name: string;
  description: string;
  member_count: number;
  created_at: string;
}

export interface Project {
  id: string;
  name: string;
  description: string;
  created_at: string;
}

export type RoleName =
  | "admin"
  | "admin-read-only"
  | "project-admin"
  | "project-read-only"
  | "cluster-admin"
  | "namespace-admin"
  | "namespace-read-only";

export type Scope = "organization" | "project" | "namespaces";

export interface Role {
  name: RoleName;
  scope: Scope;
  kubernetes_access: string;
  description: string;
}

export interface Grant {
  id: string;
  subject: { kind: "user" | "group"; id: string; name: string };
  role: RoleName;
  scope: Scope;
  project?: string;
  namespaces?: string[];
  expires_at: string | null;
  active: boolean;
  created_at: string;
}

export interface Me {
  user: User;
  groups: string[];
  grants: Grant[];
}

export interface LoginResponse {
  user: User;
  csrf_token: string;
  must_change_password: boolean;
}

export interface Token {
  id: string;
  name: string;
  prefix: string;
  user_id: string;
  created_at: string;
  expires_at: string;
  last_used_at: string | null;
}

/** A client certificate issued in a kubeconfig download. */
export interface KubeconfigCertificate {
  serial: string;
  issued_at: string;
  expires_at: string;
  clusters: string[];
  revoked_at: string | null;
  /** Still accepted by the relay. */
  active: boolean;
}

export interface CreatedToken extends Token {
  token: string;
}

export interface Settings {
  session_idle_timeout_secs: number;
  session_absolute_timeout_secs: number;
  kubeconfig_validity_secs: number;
  service_account_ttl_secs: number;
  api_token_max_validity_secs: number;
}

export type ClusterState = "pending" | "online" | "offline";

export interface Cluster {
  id: string;
  name: string;
  project: string;
  description: string;
  created_at: string;
  status: {
    state: ClusterState;
    registered_at: string | null;
    connected_since: string | null;
    last_heartbeat: string | null;
    agent_version: string | null;
    kubernetes_version: string | null;
  };
}

export interface Bootstrap {
  token: string;
  expires_at: string;
  manifest: string;
  install_command: string;
}

export interface AuditEvent {
  seq: number;
  time: string;
  kind: "system" | "kube";
  action: string;
  actor: {
    user_id?: string;
    user_name?: string;
    groups?: string[];
    client_addr?: string;
    user_agent?: string;
  };
  target: { kind: string; name?: string; project?: string; cluster?: string; namespace?: string };
  outcome: "success" | "denied" | "error";
  status: number;
  request_id: string;
  details?: unknown;
  kube?: {
    method: string;
    verb: string;
    api_group: string;
    api_version: string;
    resource: string;
    subresource: string;
    name: string;
    path: string;
    bytes: number;
    duration_ms: number;
  };
  prev_hash: string;
  hash: string;
}

export interface AuditList {
  items: AuditEvent[];
  next_cursor: string | null;
  head: { seq: number; hash: string };
}

/** Every item of a paginated list (the console's lists are small; stops after 20 pages). */
export async function all<T>(path: string, q: Query = {}): Promise<T[]> {
  const out: T[] = [];
  let cursor: string | null = null;
  for (let i = 0; i < 20; i++) {
    const page: Page<T> = await api.get<Page<T>>(path, { ...q, limit: 500, cursor });
    out.push(...page.items);
    cursor = page.next_cursor;
    if (!cursor) break;
  }
  return out;
}

/** Kubeconfig download address (a plain GET: the browser saves the attachment). */
export function kubeconfigUrl(cluster?: string): string {
  return withQuery(`${API}/kubeconfig`, { cluster });
}
