import { useState } from "preact/hooks";
import { Certificates } from "../certificates";
import { all, api, seg, type Grant, type Group, type Page, type User, type UserKind } from "../api";
import { Icon } from "../icons";
import { Link, navigate } from "../router";
import { useSession } from "../session";
import {
  Badge,
  Button,
  Card,
  Code,
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
import { GrantDialog, GrantsTable } from "./Access";

/** A random password for handing over once; the user must change it at first sign-in. */
export function generatePassword(): string {
  const alphabet = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
  const bytes = new Uint8Array(20);
  crypto.getRandomValues(bytes);
  let out = "";
  for (const b of bytes) out += alphabet[b % alphabet.length];
  return `${out.slice(0, 5)}-${out.slice(5, 10)}-${out.slice(10, 15)}-${out.slice(15, 20)}`;
}

function UserStatus({ user }: { user: User }) {
  if (user.disabled) return <Badge tone="bad">disabled</Badge>;
  if (user.must_change_password) return <Badge tone="warn">must change password</Badge>;
  return <Badge tone="ok">active</Badge>;
}

function CreateUser({ open, onClose, onDone }: { open: boolean; onClose: () => void; onDone: () => void }) {
  const action = useAction();
  const [kind, setKind] = useState<UserKind>("local");
  const [password, setPassword] = useState("");
  const [created, setCreated] = useState<{ user: User; password?: string } | null>(null);
  const close = () => {
    setCreated(null);
    setPassword("");
    action.clear();
    onClose();
  };
  const submit = (data: FormData) =>
    action.run(async () => {
      const body: Record<string, unknown> = {
        name: String(data.get("name") ?? "").trim(),
        kind,
        display_name: String(data.get("display_name") ?? ""),
        email: String(data.get("email") ?? "").trim(),
      };
      if (kind === "local") {
        body.password = password;
        body.must_change_password = data.get("must_change_password") === "on";
      }
      const user = await api.post<User>("/users", body);
      notify(`User ${user.name} created.`);
      onDone();
      setCreated({ user, password: kind === "local" ? password : undefined });
    });
  return (
    <Dialog open={open} title={created ? `User ${created.user.name} created` : "New user"} onClose={close}>
      {created ? (
        <>
          {created.password ? (
            <>
              <p>
                Give <strong>{created.user.name}</strong> this password over a channel you trust.
                {created.user.must_change_password && " They choose their own at first sign-in."} It is not shown again.
              </p>
              <Code text={created.password} label="Temporary password" />
            </>
          ) : (
            <p>
              Service users have no password; automation authenticates as them with API tokens. Grant{" "}
              {created.user.name} a role next.
            </p>
          )}
          <div class="form-actions">
            <Button onClick={close}>Close</Button>
            <Button
              variant="primary"
              onClick={() => {
                const name = created.user.name;
                close();
                navigate(`/users/${seg(name)}`);
              }}
            >
              Open {created.user.name}
            </Button>
          </div>
        </>
      ) : (
        <Form
          onSubmit={submit}
          error={action.error}
          fields={["name", "kind", "display_name", "email", "password"]}
          label="New user"
        >
          <fieldset class="segmented">
            <legend>Kind</legend>
            <label>
              <input
                type="radio"
                name="kind"
                value="local"
                checked={kind === "local"}
                onChange={() => setKind("local")}
              />
              Person (password)
            </label>
            <label>
              <input
                type="radio"
                name="kind"
                value="service"
                checked={kind === "service"}
                onChange={() => setKind("service")}
              />
              Service (automation)
            </label>
          </fieldset>
          <Field label="User name" name="name" error={action.error} hint="Lower-case letters, digits and dashes.">
            {(a) => <input {...a} autoCapitalize="none" spellcheck={false} autoComplete="off" autoFocus />}
          </Field>
          <Field label="Display name (optional)" name="display_name" error={action.error}>
            {(a) => <input {...a} autoComplete="off" />}
          </Field>
          <Field label="Email (optional)" name="email" error={action.error}>
            {(a) => <input {...a} type="email" autoComplete="off" />}
          </Field>
          {kind === "local" && (
            <>
              <Field label="Initial password" name="password" error={action.error} hint="At least 12 characters.">
                {(a) => (
                  <div class="input-row">
                    <input
                      {...a}
                      type="text"
                      value={password}
                      onInput={(e) => setPassword(e.currentTarget.value)}
                      autoComplete="new-password"
                      spellcheck={false}
                    />
                    <Button onClick={() => setPassword(generatePassword())}>Generate</Button>
                  </div>
                )}
              </Field>
              <label class="check">
                <input type="checkbox" name="must_change_password" defaultChecked />
                Must choose a new password at first sign-in
              </label>
            </>
          )}
          <div class="form-actions">
            <Button onClick={close}>Cancel</Button>
            <Button type="submit" variant="primary" busy={action.busy}>
              Create user
            </Button>
          </div>
        </Form>
      )}
    </Dialog>
  );
}

export function Users() {
  const { caps } = useSession();
  const [open, setOpen] = useState(false);
  const users = useLoad(() => all<User>("/users"), []);
  const create = caps.orgWrite && (
    <Button variant="primary" onClick={() => setOpen(true)}>
      <Icon name="plus" /> New user
    </Button>
  );
  return (
    <>
      <PageHeader
        title="Users"
        subtitle="People sign in with a password; service users are for automation and use API tokens."
        actions={create}
      />
      <Loader state={users} what="Loading users">
        {(list) =>
          list.length === 0 ? (
            <Empty title="No users" action={create} />
          ) : (
            <TableWrap label="Users">
              <thead>
                <tr>
                  <th>Name</th>
                  <th>Kind</th>
                  <th>Status</th>
                  <th>Created</th>
                </tr>
              </thead>
              <tbody>
                {list.map((u) => (
                  <tr key={u.id}>
                    <td>
                      <Link href={`/users/${seg(u.name)}`} class="strong">
                        {u.name}
                      </Link>
                      {(u.display_name || u.email) && (
                        <div class="muted small">{[u.display_name, u.email].filter(Boolean).join(" · ")}</div>
                      )}
                    </td>
                    <td>{u.kind === "service" ? <Badge tone="info">service</Badge> : u.kind}</td>
                    <td>
                      <UserStatus user={u} />
                    </td>
                    <td>
                      <Time value={u.created_at} />
                    </td>
                  </tr>
                ))}
              </tbody>
            </TableWrap>
          )
        }
      </Loader>
      <CreateUser open={open} onClose={() => setOpen(false)} onDone={users.reload} />
    </>
  );
}

function EditProfile({
  user,
  open,
  onClose,
  onDone,
}: {
  user: User;
  open: boolean;
  onClose: () => void;
  onDone: () => void;
}) {
  const action = useAction();
  const submit = (data: FormData) =>
    action.run(async () => {
      await api.patch(`/users/${seg(user.name)}`, {
        display_name: String(data.get("display_name") ?? ""),
        email: String(data.get("email") ?? "").trim(),
      });
      notify("Profile saved.");
      onDone();
      onClose();
    });
  return (
    <Dialog open={open} title={`Edit ${user.name}`} onClose={onClose}>
      <Form onSubmit={submit} error={action.error} fields={["display_name", "email"]} label="Edit profile">
        <Field label="Display name" name="display_name" error={action.error}>
          {(a) => <input {...a} value={user.display_name} autoFocus />}
        </Field>
        <Field label="Email" name="email" error={action.error}>
          {(a) => <input {...a} type="email" value={user.email} />}
        </Field>
        <div class="form-actions">
          <Button onClick={onClose}>Cancel</Button>
          <Button type="submit" variant="primary" busy={action.busy}>
            Save
          </Button>
        </div>
      </Form>
    </Dialog>
  );
}

function ResetPassword({
  user,
  open,
  onClose,
  onDone,
}: {
  user: User;
  open: boolean;
  onClose: () => void;
  onDone: () => void;
}) {
  const action = useAction();
  const [mode, setMode] = useState<"generate" | "set">("generate");
  const [result, setResult] = useState<string | null>(null);
  const close = () => {
    setResult(null);
    action.clear();
    onClose();
  };
  const submit = (data: FormData) =>
    action.run(async () => {
      const body = mode === "set" ? { password: String(data.get("password") ?? "") } : {};
      const res = await api.post<{ password?: string }>(`/users/${seg(user.name)}/password`, body);
      notify(`Password of ${user.name} reset.`);
      onDone();
      setResult(res.password ?? (body as { password?: string }).password ?? "");
    });
  return (
    <Dialog open={open} title={`Reset the password of ${user.name}`} onClose={close}>
      {result !== null ? (
        <>
          <p>
            Give <strong>{user.name}</strong> this temporary password. They must choose their own at their next sign-in;
            their sessions, kubeconfigs and API tokens issued so far stop working.
          </p>
          <Code text={result} label="Temporary password" />
          <div class="form-actions">
            <Button variant="primary" onClick={close}>
              Done
            </Button>
          </div>
        </>
      ) : (
        <Form onSubmit={submit} error={action.error} fields={["password"]} label="Reset password">
          <p class="muted">Resetting signs {user.name} out everywhere and voids their kubeconfigs and API tokens.</p>
          <fieldset class="segmented">
            <legend>New password</legend>
            <label>
              <input type="radio" name="mode" checked={mode === "generate"} onChange={() => setMode("generate")} />
              Generate one
            </label>
            <label>
              <input type="radio" name="mode" checked={mode === "set"} onChange={() => setMode("set")} />
              Type one
            </label>
          </fieldset>
          {mode === "set" && (
            <Field label="Temporary password" name="password" error={action.error} hint="At least 12 characters.">
              {(a) => <input {...a} type="text" autoComplete="new-password" spellcheck={false} autoFocus />}
            </Field>
          )}
          <div class="form-actions">
            <Button onClick={close}>Cancel</Button>
            <Button type="submit" variant="danger" busy={action.busy}>
              Reset password
            </Button>
          </div>
        </Form>
      )}
    </Dialog>
  );
}

async function groupsOf(userName: string): Promise<string[]> {
  const groups = await all<Group>("/groups");
  const members = await Promise.all(
    groups.map((g) =>
      api
        .get<Page<User>>(`/groups/${seg(g.name)}/members`)
        .then((p) => (p.items.some((u) => u.name === userName) ? g.name : null)),
    ),
  );
  return members.filter((g): g is string => g !== null);
}

export function UserPage({ name }: { name: string }) {
  const { caps, me } = useSession();
  const user = useLoad(() => api.get<User>(`/users/${seg(name)}`), [name]);
  const grants = useLoad(
    () => all<Grant>("/grants").then((l) => l.filter((g) => g.subject.kind === "user" && g.subject.name === name)),
    [name],
  );
  const groups = useLoad(() => groupsOf(name), [name]);
  const [dialog, setDialog] = useState<"" | "edit" | "reset" | "grant">("");
  const [confirm, ask] = useConfirm();
  const self = me.user.name === name;

  const act = async (fn: () => Promise<unknown>, done: string) => {
    await attempt(fn, done);
    user.reload();
  };
  const toggle = (u: User) =>
    act(
      () => api.patch(`/users/${seg(u.name)}`, { disabled: !u.disabled }),
      u.disabled ? `${u.name} can sign in again.` : `${u.name} is disabled.`,
    );
  const revoke = async (u: User) => {
    const ok = await ask({
      title: `Revoke every credential of ${u.name}?`,
      body: (
        <p>
          Kubeconfigs, sessions and API tokens issued to {u.name} until now stop working at once, and open kubectl
          streams are closed. They can sign in and download a new kubeconfig.
        </p>
      ),
      confirm: "Revoke",
      danger: true,
    });
    if (ok) await act(() => api.post(`/users/${seg(u.name)}/kubeconfig/revoke`), `Credentials of ${u.name} revoked.`);
  };
  const remove = async (u: User) => {
    const ok = await ask({
      title: `Delete user ${u.name}?`,
      body: <p>The user, their grants, group memberships and API tokens are removed. This cannot be undone.</p>,
      confirm: "Delete user",
      danger: true,
    });
    if (!ok) return;
    if (await attempt(() => api.del(`/users/${seg(u.name)}`), `User ${u.name} deleted.`)) navigate("/users");
  };

  return (
    <Loader state={user} what="Loading the user">
      {(u) => (
        <>
          {confirm}
          <PageHeader
            back={<Link href="/users">Users</Link>}
            title={
              <>
                {u.name} <UserStatus user={u} />
              </>
            }
            subtitle={[u.display_name, u.email].filter(Boolean).join(" · ") || `${u.kind} user`}
            actions={
              caps.orgWrite && (
                <>
                  <Button onClick={() => setDialog("edit")}>Edit</Button>
                  {!self && (
                    <Button onClick={() => toggle(u)} variant={u.disabled ? "primary" : "plain"}>
                      {u.disabled ? "Enable" : "Disable"}
                    </Button>
                  )}
                  {u.kind === "local" && <Button onClick={() => setDialog("reset")}>Reset password</Button>}
                  <Button onClick={() => revoke(u)}>Revoke kubeconfig</Button>
                  {!self && (
                    <Button variant="danger" onClick={() => remove(u)}>
                      Delete
                    </Button>
                  )}
                </>
              )
            }
          />
          <div class="grid two">
            <Card title="Details">
              <dl class="facts">
                <dt>Kind</dt>
                <dd>{u.kind}</dd>
                <dt>Groups</dt>
                <dd>
                  {groups.data === undefined ? (
                    <span class="muted">…</span>
                  ) : groups.data.length === 0 ? (
                    <span class="muted">none</span>
                  ) : (
                    groups.data.map((g, i) => (
                      <>
                        {i > 0 && ", "}
                        <Link href={`/groups/${seg(g)}`}>{g}</Link>
                      </>
                    ))
                  )}
                </dd>
                <dt>Created</dt>
                <dd>
                  <Time value={u.created_at} />
                </dd>
                <dt>Updated</dt>
                <dd>
                  <Time value={u.updated_at} />
                </dd>
              </dl>
            </Card>
            <Card
              title="Direct grants"
              actions={
                caps.orgWrite && (
                  <Button onClick={() => setDialog("grant")}>
                    <Icon name="plus" /> Grant access
                  </Button>
                )
              }
            >
              <Loader state={grants} what="Loading grants">
                {(list) =>
                  list.length === 0 ? (
                    <p class="muted">No direct grants. Roles given to the user's groups apply too.</p>
                  ) : (
                    <GrantsTable grants={list} onChanged={grants.reload} hide={["subject"]} />
                  )
                }
              </Loader>
            </Card>
          </div>
          {caps.orgRead && (
            <Certificates
              base={`/users/${seg(u.name)}/kubeconfig/certificates`}
              owner={u.name}
              canRevoke={caps.orgWrite}
            />
          )}
          <EditProfile user={u} open={dialog === "edit"} onClose={() => setDialog("")} onDone={user.reload} />
          <ResetPassword user={u} open={dialog === "reset"} onClose={() => setDialog("")} onDone={user.reload} />
          <GrantDialog
            open={dialog === "grant"}
            onClose={() => setDialog("")}
            onDone={grants.reload}
            preset={{ user: u.name }}
          />
        </>
      )}
    </Loader>
  );
}
