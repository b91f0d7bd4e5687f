import { useState } from "preact/hooks";
import { all, api, seg, type Group, type GroupMapping, type SsoProvider } from "../api";
import { Icon } from "../icons";
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
  attempt,
  notify,
  useAction,
  useConfirm,
  useLoad,
} from "../ui";

const FIELDS = [
  "name",
  "display_name",
  "issuer",
  "client_id",
  "client_secret",
  "scopes",
  "username_claim",
  "groups_claim",
  "allowed_domains",
  "group_mapping",
  "ca_pem",
  "require_verified_email",
  "enabled",
];

const words = (s: string) =>
  s
    .split(/[\s,]+/)
    .map((w) => w.trim())
    .filter(Boolean);

/** One mapping per line: `idp-group = ztka-group`. */
function parseMapping(text: string): GroupMapping[] {
  return text
    .split("\n")
    .map((l) => l.trim())
    .filter(Boolean)
    .map((l) => {
      const at = l.lastIndexOf("=");
      return at < 0 ? { idp_group: l, group: "" } : { idp_group: l.slice(0, at).trim(), group: l.slice(at + 1).trim() };
    });
}

const showMapping = (m: GroupMapping[]) => m.map((x) => `${x.idp_group} = ${x.group}`).join("\n");

function ProviderForm({ provider, onDone }: { provider?: SsoProvider; onDone: () => void }) {
  const action = useAction();
  const groups = useLoad(() => all<Group>("/groups"), []);
  const submit = (data: FormData) =>
    action.run(async () => {
      const text = (k: string) => String(data.get(k) ?? "").trim();
      const body: Record<string, unknown> = {
        display_name: text("display_name") || undefined,
        issuer: text("issuer"),
        client_id: text("client_id"),
        scopes: words(text("scopes")),
        username_claim: text("username_claim"),
        groups_claim: text("groups_claim"),
        allowed_domains: words(text("allowed_domains")),
        group_mapping: parseMapping(String(data.get("group_mapping") ?? "")),
        ca_pem: text("ca_pem"),
        require_verified_email: data.get("require_verified_email") === "on",
        enabled: data.get("enabled") === "on",
      };
      const secret = String(data.get("client_secret") ?? "");
      if (provider) {
        if (secret) body.client_secret = secret;
        await api.patch(`/sso/providers/${seg(provider.name)}`, body);
        notify(`${provider.display_name} saved.`);
      } else {
        body.name = text("name");
        body.client_secret = secret;
        if (!body.ca_pem) delete body.ca_pem;
        await api.post("/sso/providers", body);
        notify(`${text("display_name") || text("name")} added. Register its redirect URI with the provider.`);
      }
      onDone();
    });
  const p = provider;
  return (
    <Form onSubmit={submit} error={action.error} fields={FIELDS} label={p ? "Edit provider" : "Add provider"}>
      {!p && (
        <Field label="Name" name="name" error={action.error} hint="Lower case; part of the sign-in URL, e.g. google.">
          {(a) => <input {...a} autoCapitalize="none" spellcheck={false} required autoFocus />}
        </Field>
      )}
      <Field label="Button text" name="display_name" error={action.error} hint="Shown as “Sign in with …”.">
        {(a) => <input {...a} defaultValue={p?.display_name} placeholder="Google Workspace" />}
      </Field>
      <Field
        label="Issuer URL"
        name="issuer"
        error={action.error}
        hint="The provider's issuer; ztka reads /.well-known/openid-configuration under it."
      >
        {(a) => (
          <input
            {...a}
            type="url"
            defaultValue={p?.issuer}
            placeholder="https://accounts.google.com"
            spellcheck={false}
            required
          />
        )}
      </Field>
      <div class="field-row">
        <Field label="Client ID" name="client_id" error={action.error}>
          {(a) => <input {...a} defaultValue={p?.client_id} spellcheck={false} autoComplete="off" required />}
        </Field>
        <Field
          label="Client secret"
          name="client_secret"
          error={action.error}
          hint={p ? "Stored sealed and never shown. Leave empty to keep it." : "Stored sealed and never shown."}
        >
          {(a) => <input {...a} type="password" autoComplete="new-password" required={!p} />}
        </Field>
      </div>
      <div class="field-row">
        <Field label="Scopes" name="scopes" error={action.error} hint="openid is always requested.">
          {(a) => (
            <input {...a} defaultValue={(p?.scopes ?? ["openid", "email", "profile"]).join(" ")} spellcheck={false} />
          )}
        </Field>
        <Field label="Allowed email domains" name="allowed_domains" error={action.error} hint="Empty allows any.">
          {(a) => (
            <input {...a} defaultValue={p?.allowed_domains.join(" ")} placeholder="example.com" spellcheck={false} />
          )}
        </Field>
      </div>
      <div class="field-row">
        <Field label="User name claim" name="username_claim" error={action.error}>
          {(a) => <input {...a} defaultValue={p?.username_claim ?? "email"} spellcheck={false} />}
        </Field>
        <Field label="Groups claim" name="groups_claim" error={action.error}>
          {(a) => <input {...a} defaultValue={p?.groups_claim ?? "groups"} spellcheck={false} />}
        </Field>
      </div>
      <Field
        label="Group mapping"
        name="group_mapping"
        error={action.error}
        hint={
          <>
            One per line: <code>provider group = ztka group</code>. Membership of mapped ztka groups follows the
            provider at each sign-in, so removing someone there removes them here.
            {groups.data && groups.data.length > 0 && <> Groups: {groups.data.map((g) => g.name).join(", ")}.</>}
          </>
        }
      >
        {(a) => (
          <textarea
            {...a}
            rows={3}
            defaultValue={p ? showMapping(p.group_mapping) : ""}
            placeholder="platform-team = sre"
            spellcheck={false}
          />
        )}
      </Field>
      <Field
        label="Provider CA (PEM)"
        name="ca_pem"
        error={action.error}
        hint="Only for a provider behind a private CA."
      >
        {(a) => <textarea {...a} rows={2} defaultValue={p?.ca_pem ?? ""} spellcheck={false} class="mono" />}
      </Field>
      <label class="check">
        <input type="checkbox" name="require_verified_email" defaultChecked={p?.require_verified_email ?? true} />{" "}
        Require the provider to mark email addresses verified
      </label>
      <label class="check">
        <input type="checkbox" name="enabled" defaultChecked={p?.enabled ?? true} /> Offer on the sign-in page
      </label>
      <div class="form-actions">
        <Button type="submit" variant="primary" busy={action.busy}>
          {p ? "Save provider" : "Add provider"}
        </Button>
      </div>
    </Form>
  );
}

function ProviderCard({ p, canWrite, onChange }: { p: SsoProvider; canWrite: boolean; onChange: () => void }) {
  const [editing, setEditing] = useState(false);
  const [confirm, ask] = useConfirm();
  const test = useAction();
  const [tested, setTested] = useState<string | null>(null);
  const runTest = () =>
    test.run(async () => {
      setTested(null);
      const r = await api.post<{ signing_keys: number }>(`/sso/providers/${seg(p.name)}/test`);
      setTested(`Discovery works; the provider publishes ${r.signing_keys} signing key(s).`);
    });
  const remove = async () => {
    const ok = await ask({
      title: `Remove ${p.display_name}?`,
      body: <p>Nobody can sign in with it any more. Its users stay in ztka until you delete them.</p>,
      confirm: "Remove provider",
      danger: true,
    });
    if (ok && (await attempt(() => api.del(`/sso/providers/${seg(p.name)}`), `${p.display_name} removed.`))) onChange();
  };
  return (
    <Card
      title={
        <>
          {p.display_name} {p.enabled ? <Badge tone="ok">enabled</Badge> : <Badge>disabled</Badge>}
        </>
      }
      actions={
        canWrite && (
          <>
            <Button small onClick={runTest} busy={test.busy}>
              Test
            </Button>
            <Button small onClick={() => setEditing(true)}>
              Edit
            </Button>
            <Button small variant="danger" onClick={remove}>
              Remove
            </Button>
          </>
        )
      }
    >
      <dl class="facts">
        <dt>Issuer</dt>
        <dd>
          <code>{p.issuer}</code>
        </dd>
        <dt>Client ID</dt>
        <dd>
          <code>{p.client_id}</code>
        </dd>
        <dt>Redirect URI</dt>
        <dd>
          <Code text={p.redirect_uri} label="Redirect URI" />
        </dd>
        <dt>Claims</dt>
        <dd>
          user name from <code>{p.username_claim}</code>, groups from <code>{p.groups_claim}</code>
        </dd>
        <dt>Email domains</dt>
        <dd>{p.allowed_domains.length ? p.allowed_domains.join(", ") : <span class="muted">any</span>}</dd>
        <dt>Group mapping</dt>
        <dd>
          {p.group_mapping.length ? (
            <ul class="plain-list compact">
              {p.group_mapping.map((m) => (
                <li key={`${m.idp_group}=${m.group}`}>
                  <code>{m.idp_group}</code> → {m.group}
                </li>
              ))}
            </ul>
          ) : (
            <span class="muted">none: sign-ins change no memberships</span>
          )}
        </dd>
      </dl>
      {tested && (
        <div class="alert info" role="status">
          {tested}
        </div>
      )}
      {test.error && (
        <div class="alert error" role="alert">
          {test.error.message}
        </div>
      )}
      <Dialog open={editing} title={`Edit ${p.display_name}`} onClose={() => setEditing(false)} wide>
        <ProviderForm
          provider={p}
          onDone={() => {
            setEditing(false);
            onChange();
          }}
        />
      </Dialog>
      {confirm}
    </Card>
  );
}

export function SsoPage() {
  const { caps } = useSession();
  const providers = useLoad(() => all<SsoProvider>("/sso/providers"), []);
  const [adding, setAdding] = useState(false);
  const add = caps.orgWrite && (
    <Button variant="primary" onClick={() => setAdding(true)}>
      <Icon name="plus" /> Add provider
    </Button>
  );
  return (
    <>
      <PageHeader
        title="Single sign-on"
        subtitle="Let people sign in with the OpenID Connect provider your team already uses."
        actions={add}
      />
      <Loader state={providers} what="Loading providers">
        {(list) =>
          list.length === 0 ? (
            <Empty title="No sign-in providers yet" action={add}>
              Add Google Workspace, Okta, Microsoft Entra ID, Keycloak, Dex or GitLab with its issuer URL and a client
              registered there. The sign-in page then offers “Sign in with …”, and each sign-in creates or updates the
              user and their mapped groups.
            </Empty>
          ) : (
            <div class="stack">
              {list.map((p) => (
                <ProviderCard key={p.id} p={p} canWrite={caps.orgWrite} onChange={providers.reload} />
              ))}
            </div>
          )
        }
      </Loader>
      <Dialog open={adding} title="Add a sign-in provider" onClose={() => setAdding(false)} wide>
        <ProviderForm
          onDone={() => {
            setAdding(false);
            providers.reload();
          }}
        />
      </Dialog>
    </>
  );
}
