import { useState } from "preact/hooks";
import { all, api, seg, type Grant, type Page, type Project, type Role } from "../api";
import { localInputToRfc3339, rfc3339ToLocalInput } from "../format";
import { Icon } from "../icons";
import { Link, navigate, useLocation } from "../router";
import { useSession } from "../session";
import {
  Badge,
  Button,
  Dialog,
  Empty,
  Field,
  Form,
  Loader,
  PageHeader,
  TableWrap,
  Time,
  attempt,
  notify,
  useAction,
  useConfirm,
  useLoad,
} from "../ui";

export function GrantScope({ grant }: { grant: Grant }) {
  if (grant.scope === "organization") return <span>the organization</span>;
  const project = grant.project ?? "";
  const link = <Link href={`/projects/${seg(project)}`}>{project}</Link>;
  if (grant.scope === "project") return <span>project {link}</span>;
  return (
    <span>
      {(grant.namespaces ?? []).map((n, i) => (
        <>
          {i > 0 && ", "}
          <code>{n}</code>
        </>
      ))}{" "}
      in {link}
    </span>
  );
}

export function GrantExpiry({ grant }: { grant: Grant }) {
  if (!grant.expires_at) return null;
  return grant.active ? (
    <span class="muted small">
      until <Time value={grant.expires_at} />
    </span>
  ) : (
    <Badge tone="warn">expired</Badge>
  );
}

export function SubjectLink({ grant }: { grant: Grant }) {
  const { caps } = useSession();
  const s = grant.subject;
  const href = `/${s.kind === "user" ? "users" : "groups"}/${seg(s.name)}`;
  return (
    <span class="subject">
      <Icon name={s.kind === "user" ? "user" : "users"} />
      {caps.orgRead ? <Link href={href}>{s.name}</Link> : s.name}
      <span class="sr-only"> ({s.kind})</span>
    </span>
  );
}

/** The grants table used on the access, project, user and group pages. */
export function GrantsTable({
  grants,
  onChanged,
  hide = [],
}: {
  grants: Grant[];
  onChanged: () => void;
  hide?: ("subject" | "scope")[];
}) {
  const { caps } = useSession();
  const [confirm, ask] = useConfirm();
  const remove = async (g: Grant) => {
    const ok = await ask({
      title: "Remove this grant?",
      body: (
        <p>
          {g.subject.name} loses the role <strong>{g.role}</strong> on <GrantScope grant={g} />. Open kubectl streams of
          affected users are closed.
        </p>
      ),
      confirm: "Remove grant",
      danger: true,
    });
    if (!ok) return;
    await attempt(() => api.del(`/grants/${seg(g.id)}`), `Removed ${g.role} from ${g.subject.name}.`);
    onChanged();
  };
  const canRemove = (g: Grant) => (g.project ? caps.manageGrants(g.project) : caps.orgWrite);
  return (
    <>
      {confirm}
      <TableWrap label="Grants">
        <thead>
          <tr>
            {!hide.includes("subject") && <th>Who</th>}
            <th>Role</th>
            {!hide.includes("scope") && <th>On</th>}
            <th>Expires</th>
            <th>Granted</th>
            <th class="actions-col">
              <span class="sr-only">Actions</span>
            </th>
          </tr>
        </thead>
        <tbody>
          {grants.map((g) => (
            <tr key={g.id} class={g.active ? "" : "inactive"}>
              {!hide.includes("subject") && (
                <td>
                  <SubjectLink grant={g} />
                </td>
              )}
              <td>
                <Badge tone="info">{g.role}</Badge>
              </td>
              {!hide.includes("scope") && (
                <td>
                  <GrantScope grant={g} />
                </td>
              )}
              <td>
                {g.expires_at ? (
                  g.active ? (
                    <Time value={g.expires_at} />
                  ) : (
                    <Badge tone="warn">expired</Badge>
                  )
                ) : (
                  <span class="muted">never</span>
                )}
              </td>
              <td>
                <Time value={g.created_at} />
              </td>
              <td class="actions-col">
                {canRemove(g) && (
                  <Button
                    small
                    variant="ghost"
                    onClick={() => remove(g)}
                    aria-label={`Remove ${g.role} from ${g.subject.name}`}
                  >
                    Remove
                  </Button>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </TableWrap>
    </>
  );
}

interface GrantPreset {
  user?: string;
  group?: string;
  project?: string;
}

/** The dialog that grants a role; presets fix the subject or project when opened from their page. */
export function GrantDialog({
  open,
  onClose,
  onDone,
  preset = {},
}: {
  open: boolean;
  onClose: () => void;
  onDone: () => void;
  preset?: GrantPreset;
}) {
  const { caps } = useSession();
  const [kind, setKind] = useState<"user" | "group">(preset.group ? "group" : "user");
  const [roleName, setRoleName] = useState<string>(preset.project ? "project-read-only" : "");
  const action = useAction();
  const roles = useLoad(() => api.get<Page<Role>>("/roles").then((p) => p.items), []);
  const projects = useLoad(() => all<Project>("/projects"), []);
  const names = useLoad(
    () =>
      caps.orgRead
        ? Promise.all([all<{ name: string }>("/users"), all<{ name: string }>("/groups")])
        : Promise.resolve([[], []] as { name: string }[][]),
    [],
  );
  const fixedSubject = preset.user ?? preset.group;
  const role = roles.data?.find((r) => r.name === roleName);
  const scope = role?.scope ?? "project";
  const grantable = (roles.data ?? []).filter((r) => caps.orgWrite || r.scope !== "organization");
  const listId = `grant-${kind}-names`;

  const submit = (data: FormData) =>
    action.run(async () => {
      const body: Record<string, unknown> = { role: roleName };
      body[kind] = String(data.get(kind) ?? "").trim();
      if (scope !== "organization") body.project = String(data.get("project") ?? "");
      if (scope === "namespaces") {
        body.namespaces = String(data.get("namespaces") ?? "")
          .split(/[\s,]+/)
          .filter(Boolean);
      }
      const exp = localInputToRfc3339(String(data.get("expires_at") ?? ""));
      if (exp) body.expires_at = exp;
      const g = await api.post<Grant>("/grants", body);
      notify(`Granted ${g.role} to ${g.subject.name}.`);
      onDone();
      onClose();
    });

  return (
    <Dialog open={open} title="Grant access" onClose={onClose}>
      <Form
        onSubmit={submit}
        error={action.error}
        fields={["user", "group", "role", "project", "namespaces", "expires_at"]}
        label="Grant access"
      >
        {!fixedSubject && (
          <fieldset class="segmented">
            <legend>Grant to</legend>
            {(["user", "group"] as const).map((k) => (
              <label key={k}>
                <input type="radio" name="subject_kind" value={k} checked={kind === k} onChange={() => setKind(k)} />
                {k === "user" ? "A user" : "A group"}
              </label>
            ))}
          </fieldset>
        )}
        <Field label={kind === "user" ? "User" : "Group"} name={kind} error={action.error}>
          {(a) => (
            <>
              <input
                {...a}
                key={kind}
                list={listId}
                value={fixedSubject}
                readOnly={!!fixedSubject}
                autoComplete="off"
                autoCapitalize="none"
                spellcheck={false}
                autoFocus={!fixedSubject}
              />
              <datalist id={listId}>
                {(kind === "user" ? names.data?.[0] : names.data?.[1])?.map((n) => (
                  <option key={n.name} value={n.name} />
                ))}
              </datalist>
            </>
          )}
        </Field>
        <Field
          label="Role"
          name="role"
          error={action.error}
          hint={role ? `${role.description}.` : "What the subject may do."}
        >
          {(a) => (
            <select
              {...a}
              value={roleName}
              onChange={(e) => setRoleName(e.currentTarget.value)}
              autoFocus={!!fixedSubject}
            >
              <option value="" disabled>
                Choose a role…
              </option>
              {grantable.map((r) => (
                <option key={r.name} value={r.name}>
                  {r.name} ({r.scope === "namespaces" ? "namespaces" : r.scope})
                </option>
              ))}
            </select>
          )}
        </Field>
        {scope !== "organization" && (
          <Field label="Project" name="project" error={action.error}>
            {(a) => (
              <select {...a} value={preset.project}>
                {!preset.project && <option value="">Choose a project…</option>}
                {(projects.data ?? [])
                  .filter((p) => !preset.project || p.name === preset.project)
                  .filter((p) => caps.manageGrants(p.name))
                  .map((p) => (
                    <option key={p.name} value={p.name}>
                      {p.name}
                    </option>
                  ))}
              </select>
            )}
          </Field>
        )}
        {scope === "namespaces" && (
          <Field
            label="Namespaces"
            name="namespaces"
            error={action.error}
            hint="One or more, separated by commas or spaces."
          >
            {(a) => <input {...a} autoCapitalize="none" spellcheck={false} placeholder="team-a, team-a-staging" />}
          </Field>
        )}
        <Field
          label="Expires (optional)"
          name="expires_at"
          error={action.error}
          hint="The grant stops applying at this time, without anyone having to remember to remove it."
        >
          {(a) => <input {...a} type="datetime-local" min={rfc3339ToLocalInput(new Date().toISOString())} />}
        </Field>
        <div class="form-actions">
          <Button onClick={onClose}>Cancel</Button>
          <Button type="submit" variant="primary" busy={action.busy}>
            Grant
          </Button>
        </div>
      </Form>
    </Dialog>
  );
}

export function Access() {
  const { caps } = useSession();
  const loc = useLocation();
  const project = loc.query.get("project") ?? "";
  const [open, setOpen] = useState(false);
  const grants = useLoad(() => all<Grant>("/grants", { project }), [project]);
  const projects = useLoad(() => all<Project>("/projects"), []);
  const canGrant = caps.orgWrite || (projects.data ?? []).some((p) => caps.manageGrants(p.name));
  return (
    <>
      <PageHeader
        title="Access"
        subtitle="Who holds which role where. Roles decide both console permissions and Kubernetes access."
        actions={
          canGrant && (
            <Button variant="primary" onClick={() => setOpen(true)}>
              <Icon name="plus" /> Grant access
            </Button>
          )
        }
      />
      <div class="toolbar">
        <label class="inline-field">
          <span>Project</span>
          <select
            value={project}
            onChange={(e) => {
              const v = e.currentTarget.value;
              navigate(v ? `/access?project=${encodeURIComponent(v)}` : "/access", { replace: true });
            }}
          >
            <option value="">All grants</option>
            {(projects.data ?? []).map((p) => (
              <option key={p.name} value={p.name}>
                {p.name}
              </option>
            ))}
          </select>
        </label>
      </div>
      <Loader state={grants} what="Loading grants">
        {(list) =>
          list.length === 0 ? (
            <Empty
              title={project ? `No grants in ${project}` : "No grants yet"}
              action={
                canGrant && (
                  <Button variant="primary" onClick={() => setOpen(true)}>
                    Grant access
                  </Button>
                )
              }
            >
              Grant a role to a user or a group, on the organization, a project, or namespaces of a project. Group
              grants are easiest to keep tidy.
            </Empty>
          ) : (
            <GrantsTable grants={list} onChanged={grants.reload} />
          )
        }
      </Loader>
      <GrantDialog
        open={open}
        onClose={() => setOpen(false)}
        onDone={grants.reload}
        preset={{ project: project || undefined }}
      />
    </>
  );
}
