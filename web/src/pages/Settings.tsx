import { api, type Settings } from "../api";
import { DURATION_UNITS, duration } from "../format";
import { useSession } from "../session";
import { Button, Card, Field, Form, Loader, PageHeader, notify, useAction, useLoad, type FieldAttrs } from "../ui";

const FIELDS: [keyof Settings, string, string][] = [
  [
    "kubeconfig_validity_secs",
    "Kubeconfig validity",
    "How long the client certificate in a downloaded kubeconfig is valid.",
  ],
  ["session_idle_timeout_secs", "Session idle timeout", "A console session ends after this long without activity."],
  [
    "session_absolute_timeout_secs",
    "Session lifetime",
    "A console session ends this long after sign-in, active or not.",
  ],
  [
    "service_account_ttl_secs",
    "Service-account TTL",
    "Just-in-time service accounts in clusters are removed after this long unused.",
  ],
  ["api_token_max_validity_secs", "Longest API token lifetime", "New API tokens may not live longer than this."],
];

/** The largest unit that divides the value evenly, so 604800 shows as 7 days. */
function split(secs: number): [number, number] {
  for (const [, size] of DURATION_UNITS) {
    if (secs % size === 0) return [secs / size, size];
  }
  return [secs / 60, 60];
}

function DurationInput({ a, secs, disabled }: { a: FieldAttrs; secs: number; disabled: boolean }) {
  const [n, unit] = split(secs);
  return (
    <div class="input-row">
      <input {...a} type="number" min="1" step="any" value={n} disabled={disabled} inputMode="numeric" />
      <select name={`${a.name}_unit`} aria-label="Unit" value={String(unit)} disabled={disabled}>
        {DURATION_UNITS.map(([label, size]) => (
          <option key={size} value={String(size)}>
            {label}
          </option>
        ))}
      </select>
    </div>
  );
}

export function SettingsPage() {
  const { caps } = useSession();
  const settings = useLoad(() => api.get<Settings>("/settings"), []);
  const action = useAction();
  const submit = (data: FormData) =>
    action.run(async () => {
      const body: Partial<Settings> = {};
      for (const [k] of FIELDS) {
        const n = Number(data.get(k));
        const unit = Number(data.get(`${k}_unit`));
        body[k] = Math.round(n * unit);
      }
      await api.patch<Settings>("/settings", body);
      notify("Settings saved.");
      settings.reload();
    });
  return (
    <>
      <PageHeader title="Settings" subtitle="Organization-wide lifetimes of credentials and sessions." />
      <Loader state={settings} what="Loading settings">
        {(s) => (
          <Card>
            <Form
              key={JSON.stringify(s)}
              onSubmit={submit}
              error={action.error}
              fields={FIELDS.map(([k]) => k)}
              label="Settings"
            >
              {FIELDS.map(([k, label, hint]) => (
                <Field key={k} label={label} name={k} error={action.error} hint={`${hint} Now ${duration(s[k])}.`}>
                  {(a) => <DurationInput a={a} secs={s[k]} disabled={!caps.orgWrite} />}
                </Field>
              ))}
              {caps.orgWrite ? (
                <div class="form-actions">
                  <Button type="submit" variant="primary" busy={action.busy}>
                    Save settings
                  </Button>
                </div>
              ) : (
                <p class="muted">Only administrators change settings.</p>
              )}
            </Form>
          </Card>
        )}
      </Loader>
    </>
  );
}
