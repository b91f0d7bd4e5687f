import { useState } from "preact/hooks";
import { all, api, seg, type Bootstrap, type Cluster, type Grant, type Project } from "../api";
import { ClusterState, InstallPanel, clustersPath, isMissingRoute } from "../clusters";
import { Icon } from "../icons";
import { Link, navigate } from "../router";
import { useSession } from "../session";
import {
  Alert,
  Button,
  Card,
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
import { NameAndDescriptionFields } from "./Projects";

export function EditDescription({
  open,
  onClose,
  value,
  save,
}: {
  open: boolean;
  onClose: () => void;
  value: string;
  save: (description: string) => Promise<unknown>;
}) {
  const action = useAction();
  const submit = (data: FormData) =>
    action.run(async () => {
      await save(String(data.get("description") ?? ""));
      notify("Description saved.");
      onClose();
    });
  return (
    <Dialog open={open} title="Edit description" onClose={onClose}>
      <Form onSubmit={submit} error={action.error} fields={["description"]} label="Edit description">
        <Field label="Description" name="description" error={action.error}>
          {(a) => <textarea {...a} rows={3} value={value} autoFocus />}
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

/** Creating a cluster, then showing how to install its agent and waiting for it. */
export function ImportCluster({
  project,
  open,
  onClose,
  onDone,
}: {
  project: string;
  open: boolean;
  onClose: () => void;
  onDone: () => void;
}) {
  const action = useAction();
  const [created, setCreated] = useState<{ name: string; bootstrap?: Bootstrap } | null>(null);
  const close = () => {
    setCreated(null);
    action.clear();
    onClose();
  };
  const bootstrap = (name: string) =>
    action.run(async () => {
      const b = await api.post<Bootstrap>(`${clustersPath(project, name)}/bootstrap`);
      setCreated({ name, bootstrap: b });
    });
  const submit = (data: FormData) =>
    action.run(async () => {
      const c = await api.post<Cluster>(clustersPath(project), {
        name: String(data.get("name") ?? "").trim(),
        description: String(data.get("description") ?? ""),
      });
      setCreated({ name: c.name });
      onDone();
      const b = await api.post<Bootstrap>(`${clustersPath(project, c.name)}/bootstrap`);
      setCreated({ name: c.name, bootstrap: b });
    });
  return (
    <Dialog
      open={open}
      title={created ? `Install the agent in ${created.name}` : `Import a cluster into ${project}`}
      onClose={close}
      wide
    >
      {!created ? (
        <Form onSubmit={submit} error={action.error} fields={["name", "description"]} label="Import a cluster">
          <p class="muted">
            ztka gives you a manifest for a small agent. The agent runs in the cluster and dials out to this server;
            kubectl requests reach the cluster only through it.
          </p>
          <NameAndDescriptionFields error={action.error} what="cluster" />
          <div class="form-actions">
            <Button onClick={close}>Cancel</Button>
            <Button type="submit" variant="primary" busy={action.busy}>
              Create and get the manifest
            </Button>
          </div>
        </Form>
      ) : created.bootstrap ? (
        <>
          <InstallPanel project={project} name={created.name} bootstrap={created.bootstrap} />
          <div class="form-actions">
            <Button
              variant="primary"
              onClick={() => {
                const name = created.name;
                close();
                navigate(clustersPath(project, name));
              }}
            >
              Done
            </Button>
          </div>
        </>
      ) : (
        <>
          {action.error && <Alert error={action.error} />}
          <div class="form-actions">
            <Button onClick={close}>Close</Button>
            <Button variant="primary" busy={action.busy} onClick={() => bootstrap(created.name)}>
              Get the manifest
            </Button>
          </div>
        </>
      )}
    </Dialog>
  );
}

function ClustersCard({ project }: { project: string }) {
  const { caps } = useSession();
  const [importing, setImporting] = useState(false);
  const clusters = useLoad(() => all<Cluster>(clustersPath(project)), [project], 5000);
  const canImport = caps.manageClusters(project);
  const importButton = canImport && (
    <Button variant="primary" onClick={() => setImporting(true)}>
      <Icon name="plus" /> Import cluster
    </Button>
  );
  return (
    <Card title="Clusters" actions={clusters.data && clusters.data.length > 0 && importButton}>
      {clusters.error && isMissingRoute(clusters.error) && !clusters.data ? (
        <Empty title="Clusters are not available on this server">
          This version of ztka does not manage clusters yet.
        </Empty>
      ) : (
        <Loader state={clusters} what="Loading clusters">
          {(list) =>
            list.length === 0 ? (
              <Empty title="No clusters in this project yet" action={importButton}>
                {canImport
                  ? "Import a cluster: ztka gives you a one-line install command for its agent, and shows here when it connects."
                  : "A project admin can import clusters into this project."}
              </Empty>
            ) : (
              <TableWrap label="Clusters">
                <thead>
                  <tr>
                    <th>Name</th>
                    <th>Status</th>
                    <th>Last seen</th>
                    <th>Kubernetes</th>
                    <th>Agent</th>
                  </tr>
                </thead>
                <tbody>
                  {list.map((c) => (
                    <tr key={c.id}>
                      <td>
                        <Link href={clustersPath(project, c.name)} class="strong">
                          {c.name}
                        </Link>
                        {c.description && <div class="muted small">{c.description}</div>}
                      </td>
                      <td>
                        <ClusterState cluster={c} />
                      </td>
                      <td>
                        <Time value={c.status.last_heartbeat} empty="never" />
                      </td>
                      <td>{c.status.kubernetes_version ?? <span class="muted">—</span>}</td>
                      <td>{c.status.agent_version ?? <span class="muted">—</span>}</td>
                    </tr>
                  ))}
                </tbody>
              </TableWrap>
            )
          }
        </Loader>
      )}
      <ImportCluster project={project} open={importing} onClose={() => setImporting(false)} onDone={clusters.reload} />
    </Card>
  );
}

function ProjectAccess({ project }: { project: string }) {
  const { caps } = useSession();
  const [open, setOpen] = useState(false);
  const grants = useLoad(() => all<Grant>("/grants", { project }), [project]);
  return (
    <Card
      title="Access"
      actions={
        caps.manageGrants(project) && (
          <Button onClick={() => setOpen(true)}>
            <Icon name="plus" /> Grant access
          </Button>
        )
      }
    >
      <Loader state={grants} what="Loading grants">
        {(list) =>
          list.length === 0 ? (
            <p class="muted">Nobody holds a role on this project yet (organization admins reach it anyway).</p>
          ) : (
            <GrantsTable grants={list} onChanged={grants.reload} hide={["scope"]} />
          )
        }
      </Loader>
      <GrantDialog open={open} onClose={() => setOpen(false)} onDone={grants.reload} preset={{ project }} />
    </Card>
  );
}

export function ProjectPage({ name }: { name: string }) {
  const { caps } = useSession();
  const project = useLoad(() => api.get<Project>(`/projects/${seg(name)}`), [name]);
  const [editing, setEditing] = useState(false);
  const [confirm, ask] = useConfirm();
  const remove = async () => {
    const ok = await ask({
      title: `Delete project ${name}?`,
      body: <p>The project and every grant on it are removed. This cannot be undone.</p>,
      confirm: "Delete project",
      danger: true,
    });
    if (!ok) return;
    if (await attempt(() => api.del(`/projects/${seg(name)}`), `Project ${name} deleted.`)) navigate("/projects");
  };
  return (
    <Loader state={project} what="Loading the project">
      {(p) => (
        <>
          {confirm}
          <PageHeader
            back={<Link href="/projects">Projects</Link>}
            title={p.name}
            subtitle={p.description || "No description."}
            actions={
              <>
                {caps.updateProject(p.name) && <Button onClick={() => setEditing(true)}>Edit description</Button>}
                {caps.orgWrite && (
                  <Button variant="danger" onClick={remove}>
                    Delete
                  </Button>
                )}
              </>
            }
          />
          <ClustersCard project={p.name} />
          {caps.readGrantsIn(p.name) && <ProjectAccess project={p.name} />}
          <p class="muted small">
            Created <Time value={p.created_at} />.
          </p>
          <EditDescription
            open={editing}
            onClose={() => setEditing(false)}
            value={p.description}
            save={(description) => api.patch(`/projects/${seg(p.name)}`, { description }).then(project.reload)}
          />
        </>
      )}
    </Loader>
  );
}
