import { useState } from "preact/hooks";
import { api, kubeconfigUrl, seg, type Bootstrap, type Cluster } from "../api";
import { ClusterState, InstallPanel, clustersPath } from "../clusters";
import { Icon } from "../icons";
import { Link, navigate } from "../router";
import { useSession } from "../session";
import { Alert, Button, Card, Dialog, Loader, PageHeader, Time, attempt, useAction, useConfirm, useLoad } from "../ui";
import { EditDescription } from "./Project";

export function ClusterPage({ project, name }: { project: string; name: string }) {
  const { caps } = useSession();
  const cluster = useLoad(() => api.get<Cluster>(clustersPath(project, name)), [project, name], 3000);
  const [editing, setEditing] = useState(false);
  const [bootstrap, setBootstrap] = useState<Bootstrap | null>(null);
  const token = useAction();
  const [confirm, ask] = useConfirm();

  const newToken = () =>
    token.run(async () => {
      setBootstrap(await api.post<Bootstrap>(`${clustersPath(project, name)}/bootstrap`));
    });
  const remove = async () => {
    const ok = await ask({
      title: `Delete cluster ${name}?`,
      body: (
        <p>
          ztka forgets the cluster and its agent can no longer connect. Remove the <code>ztka-system</code> namespace
          from the cluster yourself.
        </p>
      ),
      confirm: "Delete cluster",
      danger: true,
    });
    if (!ok) return;
    if (await attempt(() => api.del(clustersPath(project, name)), `Cluster ${name} deleted.`))
      navigate(`/projects/${seg(project)}`);
  };

  return (
    <Loader state={cluster} what="Loading the cluster">
      {(c) => (
        <>
          {confirm}
          <PageHeader
            back={
              <>
                <Link href="/projects">Projects</Link> / <Link href={`/projects/${seg(project)}`}>{project}</Link>
              </>
            }
            title={
              <>
                <Icon name="cluster" /> {c.name} <ClusterState cluster={c} />
              </>
            }
            subtitle={c.description || "No description."}
            actions={
              <>
                <a class="btn primary" href={kubeconfigUrl(c.name)} download>
                  <Icon name="download" /> Kubeconfig
                </a>
                {caps.updateClusters(project) && <Button onClick={() => setEditing(true)}>Edit description</Button>}
                {caps.manageClusters(project) && (
                  <Button variant="danger" onClick={remove}>
                    Delete
                  </Button>
                )}
              </>
            }
          />
          <div class="grid two">
            <Card title="Status">
              <dl class="facts" aria-live="polite">
                <dt>State</dt>
                <dd>
                  <ClusterState cluster={c} />
                </dd>
                <dt>Connected since</dt>
                <dd>
                  <Time value={c.status.connected_since} empty="not connected" />
                </dd>
                <dt>Last heartbeat</dt>
                <dd>
                  <Time value={c.status.last_heartbeat} empty="never" />
                </dd>
                <dt>Registered</dt>
                <dd>
                  <Time value={c.status.registered_at} empty="not yet" />
                </dd>
                <dt>Kubernetes</dt>
                <dd>{c.status.kubernetes_version ?? <span class="muted">unknown</span>}</dd>
                <dt>Agent</dt>
                <dd>{c.status.agent_version ?? <span class="muted">unknown</span>}</dd>
              </dl>
            </Card>
            <Card title="Use it">
              <p>
                Download a kubeconfig for this cluster and use plain kubectl. Requests go through ztka as you, are
                checked against your grants and recorded in the audit log.
              </p>
              <pre class="snippet">{`export KUBECONFIG=~/Downloads/ztka-${c.name}.yaml\nkubectl get namespaces`}</pre>
              {caps.manageClusters(project) && (
                <>
                  <h3>Reinstall the agent</h3>
                  <p class="muted">
                    {c.status.state === "pending"
                      ? "The agent has not registered yet. If its token expired, make a new one."
                      : "Make a new single-use token to re-register the agent, for example after rebuilding the cluster."}
                  </p>
                  <Button onClick={newToken} busy={token.busy}>
                    New install token
                  </Button>
                  {token.error && <Alert error={token.error} />}
                </>
              )}
            </Card>
          </div>
          <p class="muted small">
            Created <Time value={c.created_at} />. Cluster id <code>{c.id}</code>.
          </p>
          <Dialog open={!!bootstrap} title={`Install the agent in ${c.name}`} onClose={() => setBootstrap(null)} wide>
            {bootstrap && <InstallPanel project={project} name={c.name} bootstrap={bootstrap} />}
            <div class="form-actions">
              <Button variant="primary" onClick={() => setBootstrap(null)}>
                Done
              </Button>
            </div>
          </Dialog>
          <EditDescription
            open={editing}
            onClose={() => setEditing(false)}
            value={c.description}
            save={(description) => api.patch(clustersPath(project, c.name), { description }).then(cluster.reload)}
          />
        </>
      )}
    </Loader>
  );
}
