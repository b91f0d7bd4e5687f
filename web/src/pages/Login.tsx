import { useEffect, useState } from "preact/hooks";
import { api, type LoginResponse, type SignInOption } from "../api";
import { Icon } from "../icons";
import { useLocation } from "../router";
import { Button, Field, Form, useAction } from "../ui";

/** Why a single sign-on attempt failed: the server keeps it for the sign-in page to read once. */
function useSsoError(id: string | null): string | null {
  const [message, setMessage] = useState<string | null>(null);
  useEffect(() => {
    if (!id) return;
    api
      .get<{ code: string; message: string }>(`/auth/sso/errors/${encodeURIComponent(id)}`)
      .then((e) => setMessage(`Single sign-on failed: ${e.message}.`))
      .catch(() =>
        setMessage("Single sign-on failed. Try again, or ask an administrator to check the server's audit log."),
      );
    // Drop the id from the address bar so a reload does not ask for it again.
    const q = new URLSearchParams(location.search);
    q.delete("sso_error");
    history.replaceState(null, "", location.pathname + (q.toString() ? `?${q}` : ""));
  }, [id]);
  return message;
}

export function Login({ message, onSignedIn }: { message?: string; onSignedIn: (csrf: string) => Promise<void> }) {
  const action = useAction();
  const loc = useLocation();
  const [providers, setProviders] = useState<SignInOption[]>([]);
  useEffect(() => {
    api
      .get<{ items: SignInOption[] }>("/auth/sso")
      .then((r) => setProviders(r.items))
      .catch(() => setProviders([]));
  }, []);
  const ssoError = useSsoError(loc.query.get("sso_error"));
  const next = loc.query.get("next");
  const submit = (data: FormData) =>
    action.run(async () => {
      const res = await api.post<LoginResponse>("/auth/login", {
        username: String(data.get("username") ?? ""),
        password: String(data.get("password") ?? ""),
      });
      await onSignedIn(res.csrf_token);
    });
  return (
    <div class="center-screen">
      <div class="auth-card">
        <div class="auth-brand">
          <Icon name="logo" />
          <span>ztka</span>
        </div>
        <h1>Sign in</h1>
        <p class="muted">Zero-trust access to your Kubernetes clusters.</p>
        {ssoError && (
          <div class="alert error sso-error" role="alert">
            {ssoError}
          </div>
        )}
        {message && !action.error && !ssoError && (
          <div class="alert info" role="status">
            {message}
          </div>
        )}
        {providers.length > 0 && (
          <div class="sso-buttons">
            {providers.map((p) => (
              <a
                key={p.name}
                class="btn block"
                href={next ? `${p.login_url}?next=${encodeURIComponent(next)}` : p.login_url}
              >
                <Icon name="key" /> Sign in with {p.display_name}
              </a>
            ))}
            <div class="divider" role="separator">
              <span>or with a ztka password</span>
            </div>
          </div>
        )}
        <Form onSubmit={submit} error={action.error} fields={["username", "password"]} label="Sign in">
          <Field label="User name" name="username" error={action.error}>
            {(a) => (
              <input
                {...a}
                autoComplete="username"
                autoCapitalize="none"
                spellcheck={false}
                autoFocus={providers.length === 0}
              />
            )}
          </Field>
          <Field label="Password" name="password" error={action.error}>
            {(a) => <input {...a} type="password" autoComplete="current-password" />}
          </Field>
          <div class="form-actions">
            <Button type="submit" variant="primary" busy={action.busy}>
              Sign in
            </Button>
          </div>
        </Form>
      </div>
    </div>
  );
}
