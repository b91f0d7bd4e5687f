import { useState } from "preact/hooks";
import { api, seg, type CreatedToken, type Page, type Token } from "../api";
import { Icon } from "../icons";
import {
  Badge,
  Button,
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
  useAction,
  useConfirm,
  useLoad,
} from "../ui";

const LIFETIMES: [string, number][] = [
  ["1 day", 86400],
  ["7 days", 7 * 86400],
  ["30 days", 30 * 86400],
  ["90 days", 90 * 86400],
  ["1 year", 365 * 86400],
];

function CreateToken({ open, onClose, onDone }: { open: boolean; onClose: () => void; onDone: () => void }) {
  const action = useAction();
  const [created, setCreated] = useState<CreatedToken | null>(null);
  const close = () => {
    setCreated(null);
    action.clear();
    onClose();
  };
  const submit = (data: FormData) =>
    action.run(async () => {
      const t = await api.post<CreatedToken>("/tokens", {
        name: String(data.get("name") ?? "").trim(),
        expires_in_secs: Number(data.get("expires_in_secs")),
      });
      onDone();
      setCreated(t);
    });
  return (
    <Dialog open={open} title={created ? "Copy your token now" : "New API token"} onClose={close}>
      {created ? (
        <>
          <p>
            This is the only time the token is shown; ztka keeps just its hash. It acts as you, with your access, until{" "}
            <Time value={created.expires_at} />.
          </p>
          <Code text={created.token} label="API token" />
          <pre class="snippet">{`curl -H "Authorization: Bearer $ZTKA_TOKEN" ${location.origin}/api/v1/auth/me`}</pre>
          <div class="form-actions">
            <Button variant="primary" onClick={close}>
              I have copied it
            </Button>
          </div>
        </>
      ) : (
        <Form onSubmit={submit} error={action.error} fields={["name", "expires_in_secs"]} label="New API token">
          <Field label="Name" name="name" error={action.error} hint="What it is for, e.g. “CI deploys”.">
            {(a) => <input {...a} maxLength={64} autoComplete="off" autoFocus />}
          </Field>
          <Field label="Expires after" name="expires_in_secs" error={action.error}>
            {(a) => (
              <select {...a} value={String(30 * 86400)}>
                {LIFETIMES.map(([label, secs]) => (
                  <option key={secs} value={String(secs)}>
                    {label}
                  </option>
                ))}
              </select>
            )}
          </Field>
          <div class="form-actions">
            <Button onClick={close}>Cancel</Button>
            <Button type="submit" variant="primary" busy={action.busy}>
              Create token
            </Button>
          </div>
        </Form>
      )}
    </Dialog>
  );
}

export function Tokens() {
  const [open, setOpen] = useState(false);
  const tokens = useLoad(() => api.get<Page<Token>>("/tokens").then((p) => p.items), []);
  const [confirm, ask] = useConfirm();
  const remove = async (t: Token) => {
    const ok = await ask({
      title: `Delete token ${t.name}?`,
      body: <p>Anything using it is refused from now on.</p>,
      confirm: "Delete token",
      danger: true,
    });
    if (!ok) return;
    await attempt(() => api.del(`/tokens/${seg(t.id)}`), `Token ${t.name} deleted.`);
    tokens.reload();
  };
  const create = (
    <Button variant="primary" onClick={() => setOpen(true)}>
      <Icon name="plus" /> New token
    </Button>
  );
  const now = Date.now();
  return (
    <>
      {confirm}
      <PageHeader
        title="API tokens"
        subtitle="Tokens let scripts and CI call the ztka API as you. Send one as Authorization: Bearer."
        actions={create}
      />
      <Loader state={tokens} what="Loading tokens">
        {(list) =>
          list.length === 0 ? (
            <Empty title="No API tokens" action={create}>
              Create a token for automation that talks to the ztka API. For kubectl, download a kubeconfig instead.
            </Empty>
          ) : (
            <TableWrap label="API tokens">
              <thead>
                <tr>
                  <th>Name</th>
                  <th>Token</th>
                  <th>Created</th>
                  <th>Expires</th>
                  <th>Last used</th>
                  <th class="actions-col">
                    <span class="sr-only">Actions</span>
                  </th>
                </tr>
              </thead>
              <tbody>
                {list.map((t) => (
                  <tr key={t.id}>
                    <td class="strong">{t.name}</td>
                    <td>
                      <code>{t.prefix}…</code>
                    </td>
                    <td>
                      <Time value={t.created_at} />
                    </td>
                    <td>
                      {new Date(t.expires_at).getTime() < now ? (
                        <Badge tone="warn">expired</Badge>
                      ) : (
                        <Time value={t.expires_at} />
                      )}
                    </td>
                    <td>
                      <Time value={t.last_used_at} empty="never" />
                    </td>
                    <td class="actions-col">
                      <Button small variant="ghost" onClick={() => remove(t)} aria-label={`Delete token ${t.name}`}>
                        Delete
                      </Button>
                    </td>
                  </tr>
                ))}
              </tbody>
            </TableWrap>
          )
        }
      </Loader>
      <CreateToken open={open} onClose={() => setOpen(false)} onDone={tokens.reload} />
    </>
  );
}
