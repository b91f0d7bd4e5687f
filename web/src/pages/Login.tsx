import { api, type LoginResponse } from "../api";
import { Icon } from "../icons";
import { Button, Field, Form, useAction } from "../ui";

export function Login({ message, onSignedIn }: { message?: string; onSignedIn: (csrf: string) => Promise<void> }) {
  const action = useAction();
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
        {message && !action.error && (
          <div class="alert info" role="status">
            {message}
          </div>
        )}
        <Form onSubmit={submit} error={action.error} fields={["username", "password"]} label="Sign in">
          <Field label="User name" name="username" error={action.error}>
            {(a) => <input {...a} autoComplete="username" autoCapitalize="none" spellcheck={false} autoFocus />}
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
