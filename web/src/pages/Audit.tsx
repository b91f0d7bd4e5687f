import { useState } from "preact/hooks";
import { API, api, withQuery, type ApiError, type AuditEvent, type AuditList, type Query } from "../api";
import { absolute, localInputToRfc3339, rfc3339ToLocalInput } from "../format";
import { navigate, useLocation } from "../router";
import {
  Badge,
  Button,
  Card,
  CopyButton,
  Empty,
  Field,
  Form,
  Loader,
  PageHeader,
  TableWrap,
  Time,
  useLoad,
} from "../ui";

const TEXT_FILTERS = [
  ["user", "User"],
  ["project", "Project"],
  ["cluster", "Cluster"],
  ["namespace", "Namespace"],
  ["verb", "Verb"],
  ["resource", "Resource"],
  ["action", "Action"],
  ["status", "HTTP status"],
] as const;
const ALL_FILTERS = ["from", "to", "kind", "outcome", ...TEXT_FILTERS.map(([k]) => k)];
const PAGE = 50;

function filtersFrom(query: URLSearchParams): Query {
  const q: Query = {};
  for (const k of ALL_FILTERS) {
    const v = query.get(k);
    if (v) q[k] = v;
  }
  return q;
}

export function OutcomeBadge({ e, brief }: { e: AuditEvent; brief?: boolean }) {
  const tone = e.outcome === "success" ? "ok" : e.outcome === "denied" ? "warn" : "bad";
  return (
    <Badge tone={tone}>
      {e.outcome}
      {e.status && !brief ? ` ${e.status}` : ""}
    </Badge>
  );
}

export function describeTarget(e: AuditEvent): string {
  if (e.kube) {
    const k = e.kube;
    const what = [k.resource, k.subresource].filter(Boolean).join("/") || k.path;
    return [k.verb, what, k.name].filter(Boolean).join(" ");
  }
  const t = e.target;
  const d = (e.details ?? {}) as Record<string, unknown>;
  const str = (v: unknown) => (typeof v === "string" ? v : undefined);
  if (t.kind === "grant" && str(d.role)) {
    return [str(d.role), str(d.subject) && `to ${d.subject}`].filter(Boolean).join(" ");
  }
  return [t.kind, t.name, str(d.user) && `· ${d.user}`].filter(Boolean).join(" ");
}

function where(e: AuditEvent): string {
  const t = e.target;
  return [t.project && `project ${t.project}`, t.cluster && `cluster ${t.cluster}`, t.namespace && `ns ${t.namespace}`]
    .filter(Boolean)
    .join(" · ");
}

/** Leaves out unset fields so the details show what the event carries. */
function withoutNulls(_key: string, value: unknown): unknown {
  return value === null ? undefined : value;
}

function EventRow({ e }: { e: AuditEvent }) {
  const [open, setOpen] = useState(false);
  return (
    <>
      <tr class={open ? "expanded" : ""}>
        <td class="nowrap">
          <Time value={e.time} />
        </td>
        <td>
          {e.actor.user_name ?? <span class="muted">anonymous</span>}
          {e.actor.client_addr && <div class="muted small">{e.actor.client_addr}</div>}
        </td>
        <td>
          <code>{e.action}</code>
        </td>
        <td>
          {describeTarget(e)}
          {where(e) && <div class="muted small">{where(e)}</div>}
        </td>
        <td>
          <OutcomeBadge e={e} />
        </td>
        <td class="actions-col">
          <Button
            small
            variant="ghost"
            aria-expanded={open}
            onClick={() => setOpen(!open)}
            aria-label={`Details of event ${e.seq}`}
          >
            {open ? "Hide" : "Details"}
          </Button>
        </td>
      </tr>
      {open && (
        <tr class="details-row">
          <td colSpan={6}>
            <dl class="facts compact">
              <dt>Sequence</dt>
              <dd>{e.seq}</dd>
              <dt>Time</dt>
              <dd>{absolute(e.time)}</dd>
              <dt>Request id</dt>
              <dd>
                <code>{e.request_id || "—"}</code>
              </dd>
              {e.actor.user_agent && (
                <>
                  <dt>User agent</dt>
                  <dd>{e.actor.user_agent}</dd>
                </>
              )}
              {e.actor.groups && e.actor.groups.length > 0 && (
                <>
                  <dt>Groups</dt>
                  <dd>{e.actor.groups.join(", ")}</dd>
                </>
              )}
              <dt>Hash</dt>
              <dd>
                <code class="hash">{e.hash}</code>
              </dd>
            </dl>
            {(e.details !== undefined || e.kube) && (
              <pre class="snippet">{JSON.stringify({ details: e.details, kube: e.kube }, withoutNulls, 2)}</pre>
            )}
          </td>
        </tr>
      )}
    </>
  );
}

function Filters({ current, onApply, error }: { current: Query; onApply: (q: Query) => void; error?: ApiError }) {
  const submit = (data: FormData) => {
    const q: Query = {};
    for (const k of ALL_FILTERS) {
      const v = String(data.get(k) ?? "").trim();
      if (!v) continue;
      q[k] = k === "from" || k === "to" ? localInputToRfc3339(v) : v;
    }
    onApply(q);
  };
  const val = (k: string) => (current[k] === undefined || current[k] === null ? "" : String(current[k]));
  return (
    <Card class="filters">
      <Form onSubmit={submit} error={error} fields={ALL_FILTERS} class="form filter-grid" label="Filter the audit log">
        <Field label="From" name="from" error={error}>
          {(a) => <input {...a} type="datetime-local" value={rfc3339ToLocalInput(val("from"))} />}
        </Field>
        <Field label="To" name="to" error={error}>
          {(a) => <input {...a} type="datetime-local" value={rfc3339ToLocalInput(val("to"))} />}
        </Field>
        <Field label="Kind" name="kind" error={error}>
          {(a) => (
            <select {...a} value={val("kind")}>
              <option value="">Any</option>
              <option value="system">Console and API</option>
              <option value="kube">Kubernetes requests</option>
            </select>
          )}
        </Field>
        <Field label="Outcome" name="outcome" error={error}>
          {(a) => (
            <select {...a} value={val("outcome")}>
              <option value="">Any</option>
              <option value="success">Success</option>
              <option value="denied">Denied</option>
              <option value="error">Error</option>
            </select>
          )}
        </Field>
        {TEXT_FILTERS.map(([k, label]) => (
          <Field key={k} label={label} name={k} error={error}>
            {(a) => (
              <input
                {...a}
                value={val(k)}
                autoCapitalize="none"
                spellcheck={false}
                inputMode={k === "status" ? "numeric" : undefined}
              />
            )}
          </Field>
        ))}
        <div class="form-actions">
          <Button onClick={() => onApply({})}>Clear</Button>
          <Button type="submit" variant="primary">
            Apply filters
          </Button>
        </div>
      </Form>
    </Card>
  );
}

export function Audit() {
  const loc = useLocation();
  const filters = filtersFrom(loc.query);
  const cursor = loc.query.get("cursor") ?? "";
  const key = withQuery("", { ...filters, cursor });
  const [history, setHistory] = useState<string[]>([]);
  const page = useLoad(() => api.get<AuditList>("/audit", { ...filters, cursor, limit: PAGE }), [key]);
  const go = (q: Query, c: string) => navigate(withQuery("/audit", { ...q, cursor: c }), { replace: true });
  const apply = (q: Query) => {
    setHistory([]);
    go(q, "");
  };
  const active = Object.keys(filters).length > 0;
  // Errors about a filter show next to it, not above the table.
  const fieldError = page.error?.field && ALL_FILTERS.includes(page.error.field) ? page.error : undefined;
  return (
    <>
      <PageHeader
        title="Audit log"
        subtitle="Every console and API action, sign-in and kubectl request, newest first. Reading the log is recorded too."
        actions={
          <a class="btn" href={withQuery(`${API}/audit/export`, filters)} download>
            Export JSON Lines
          </a>
        }
      />
      <Filters key={key} current={filters} onApply={apply} error={fieldError} />
      {fieldError && !page.data ? null : (
        <Loader state={{ ...page, error: fieldError ? undefined : page.error }} what="Loading events">
          {(p) => (
            <>
              {p.items.length === 0 ? (
                <Empty title={active ? "No events match these filters" : "No events yet"}>
                  {active ? "Widen the time range or clear a filter." : "Actions appear here as people use ztka."}
                </Empty>
              ) : (
                <TableWrap label="Audit events">
                  <thead>
                    <tr>
                      <th>Time</th>
                      <th>Who</th>
                      <th>Action</th>
                      <th>Target</th>
                      <th>Outcome</th>
                      <th class="actions-col">
                        <span class="sr-only">Details</span>
                      </th>
                    </tr>
                  </thead>
                  <tbody>
                    {p.items.map((e) => (
                      <EventRow key={e.seq} e={e} />
                    ))}
                  </tbody>
                </TableWrap>
              )}
              <div class="pager">
                <Button
                  disabled={!cursor}
                  onClick={() => {
                    const prev = history[history.length - 1] ?? "";
                    setHistory(history.slice(0, -1));
                    go(filters, prev);
                  }}
                >
                  ← Newer
                </Button>
                <span class="muted small">
                  Chain head #{p.head.seq}{" "}
                  <code class="hash" title={p.head.hash}>
                    {p.head.hash.slice(0, 16)}…
                  </code>{" "}
                  <CopyButton text={`${p.head.seq} ${p.head.hash}`} label="Copy head" />
                </span>
                <Button
                  disabled={!p.next_cursor}
                  onClick={() => {
                    setHistory([...history, cursor]);
                    go(filters, p.next_cursor ?? "");
                  }}
                >
                  Older →
                </Button>
              </div>
            </>
          )}
        </Loader>
      )}
    </>
  );
}
