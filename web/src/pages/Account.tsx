import { useState } from "preact/hooks";
import { api } from "../api";
import { Icon } from "../icons";
import { useSession } from "../session";
import { Badge, Button, Card, Field, Form, PageHeader, notify, useAction } from "../ui";
import { GrantScope, GrantExpiry } from "./Access";

const MIN_PASSWORD = 12;

function PasswordForm({ onDone }: { onDone: () => Promise<void> | void }) {
  const action = useAction();
  const [mismatch, setMismatch] = useState<string | undefined>();
  const [tooShort, setTooShort] = useState<string | undefined>();
  const submit = (data: FormData, form: HTMLFormElement) => {
    const current_password = String(data.get("current_password") ?? "");
    const new_password = String(data.get("new_password") ?? "");
    const confirm = String(data.get("confirm") ?? "");
    setTooShort(
      new_password.length > 0 && [...new_password].length < MIN_PASSWORD
        ? `Use at least ${MIN_PASSWORD} characters.`
        : undefined,
    );
    setMismatch(confirm !== new_password ? "The two new passwords differ." : undefined);
    if (confirm !== new_password) {
      form.querySelector<HTMLInputElement>('[name="confirm"]')?.focus();
      return;
    }
    action.run(async () => {
      await api.post("/auth/password", { current_password, new_password });
      form.reset();
      notify("Password changed.");
      await onDone();
    });
  };
  return (
    <Form
      onSubmit={submit}
      error={action.error}
      fields={["current_password", "new_password", "confirm"]}
      label="Change password"
    >
      <Field label="Current password" name="current_password" error={action.error}>
        {(a) => <input {...a} type="password" autoComplete="current-password" autoFocus />}
      </Field>
      <Field
        label="New password"
        name="new_password"
        error={action.error}
        message={tooShort}
        hint={`At least ${MIN_PASSWORD} characters. A few unrelated words are easy to type and hard to guess.`}
      >
        {(a) => <input {...a} type="password" autoComplete="new-password" />}
      </Field>
      <Field label="New password again" name="confirm" message={mismatch}>
        {(a) => <input {...a} type="password" autoComplete="new-password" />}
      </Field>
      <div class="form-actions">
        <Button type="submit" variant="primary" busy={action.busy}>
          Change password
        </Button>
      </div>
    </Form>
  );
}

/** Shown instead of the console until a user with a temporary password picks their own. */
export function ForcedPasswordChange() {
  const s = useSession();
  return (
    <div class="center-screen">
      <div class="auth-card">
        <div class="auth-brand">
          <Icon name="logo" />
          <span>ztka</span>
        </div>
        <h1>Choose your password</h1>
        <p class="muted">
          Signed in as <strong>{s.me.user.name}</strong> with a temporary password. Choose your own password to
          continue.
        </p>
        <PasswordForm onDone={s.refresh} />
        <div class="form-actions left">
          <button type="button" class="btn ghost small" onClick={s.signOut}>
            Sign out instead
          </button>
        </div>
      </div>
    </div>
  );
}

export function Account() {
  const { me, refresh } = useSession();
  const u = me.user;
  return (
    <>
      <PageHeader title="Your account" subtitle="Who you are to ztka and what you may reach." />
      <div class="grid two">
        <Card title="Profile">
          <dl class="facts">
            <dt>User name</dt>
            <dd>{u.name}</dd>
            <dt>Display name</dt>
            <dd>{u.display_name || <span class="muted">not set</span>}</dd>
            <dt>Email</dt>
            <dd>{u.email || <span class="muted">not set</span>}</dd>
            <dt>Kind</dt>
            <dd>{u.kind}</dd>
            <dt>Groups</dt>
            <dd>{me.groups.length ? me.groups.join(", ") : <span class="muted">none</span>}</dd>
          </dl>
        </Card>
        {u.kind === "local" && (
          <Card title="Change password">
            <PasswordForm onDone={refresh} />
          </Card>
        )}
      </div>
      <Card title="Your access">
        {me.grants.length === 0 ? (
          <p class="muted">
            You hold no grants yet. Ask an administrator to grant you a role on a project or on namespaces.
          </p>
        ) : (
          <ul class="plain-list">
            {me.grants.map((g) => (
              <li key={g.id}>
                <Badge tone={g.active ? "info" : "neutral"}>{g.role}</Badge> <GrantScope grant={g} />{" "}
                {g.subject.kind === "group" && <span class="muted">via group {g.subject.name}</span>}{" "}
                <GrantExpiry grant={g} />
              </li>
            ))}
          </ul>
        )}
      </Card>
    </>
  );
}
