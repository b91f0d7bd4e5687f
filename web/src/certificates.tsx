import { useEffect } from "preact/hooks";
import { api, seg, type KubeconfigCertificate, type Page } from "./api";
import { absolute } from "./format";
import { Badge, Button, Card, Loader, TableWrap, Time, attempt, useConfirm, useLoad } from "./ui";

/**
 * The unexpired certificates of a user's kubeconfig downloads, each revocable on its own (a
 * lost laptop) without touching the others. `base` is the API path of the list; revoking
 * posts to `base/{serial}/revoke` when `canRevoke`. A change of `downloads` (a download
 * started on the page) reads the list again once the server has had a moment to issue the
 * certificate; the list is also read again every 15 s while the page is visible.
 */
export function Certificates({
  base,
  owner,
  canRevoke,
  downloads = 0,
}: {
  base: string;
  owner: string;
  canRevoke: boolean;
  downloads?: number;
}) {
  const certs = useLoad(() => api.get<Page<KubeconfigCertificate>>(base).then((p) => p.items), [base], 15000);
  const { reload } = certs;
  useEffect(() => {
    if (downloads === 0) return;
    const id = window.setTimeout(reload, 1000);
    return () => window.clearTimeout(id);
  }, [downloads, reload]);
  const [confirm, ask] = useConfirm();
  const revoke = async (c: KubeconfigCertificate) => {
    const ok = await ask({
      title: "Revoke this kubeconfig?",
      body: (
        <p>
          The kubeconfig downloaded <Time value={c.issued_at} /> stops working at once and kubectl streams opened with
          it are closed. {owner}'s other kubeconfigs keep working.
        </p>
      ),
      confirm: "Revoke",
      danger: true,
    });
    if (!ok) return;
    await attempt(() => api.post(`${base}/${seg(c.serial)}/revoke`), "Kubeconfig revoked.");
    certs.reload();
  };
  return (
    <Card title="Kubeconfig certificates">
      {confirm}
      <Loader state={certs} what="Loading kubeconfig certificates">
        {(list) =>
          list.length === 0 ? (
            <p class="muted">No kubeconfig downloaded that is still valid.</p>
          ) : (
            <TableWrap label="Kubeconfig certificates">
              <thead>
                <tr>
                  <th>Downloaded</th>
                  <th>Clusters</th>
                  <th>Expires</th>
                  <th>Status</th>
                  {canRevoke && (
                    <th class="actions-col">
                      <span class="sr-only">Actions</span>
                    </th>
                  )}
                </tr>
              </thead>
              <tbody>
                {list.map((c) => (
                  <tr key={c.serial}>
                    <td>
                      <Time value={c.issued_at} />
                      <div class="muted small">
                        <code title="Certificate serial number">{c.serial.slice(0, 16)}</code>
                      </div>
                    </td>
                    <td>{c.clusters.length === 0 ? <span class="muted">none</span> : c.clusters.join(", ")}</td>
                    <td>
                      <Time value={c.expires_at} />
                    </td>
                    <td>{c.active ? <Badge tone="ok">active</Badge> : <Badge tone="bad">revoked</Badge>}</td>
                    {canRevoke && (
                      <td class="actions-col">
                        {c.active && (
                          <Button
                            small
                            variant="ghost"
                            onClick={() => revoke(c)}
                            aria-label={`Revoke the kubeconfig downloaded ${absolute(c.issued_at)}`}
                          >
                            Revoke
                          </Button>
                        )}
                      </td>
                    )}
                  </tr>
                ))}
              </tbody>
            </TableWrap>
          )
        }
      </Loader>
    </Card>
  );
}
