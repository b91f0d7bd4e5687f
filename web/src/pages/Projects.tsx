import { useState } from "preact/hooks";
import { api, seg } from "../api";
import { clustersByProject } from "../clusters";
import { plural } from "../format";
import { Icon } from "../icons";
import { Link, navigate } from "../router";
import { useSession } from "../session";
import {
  Badge,
  Button,
  Dialog,
  Empty,
  Field,
  Form,
  Loader,
  PageHeader,
  TableWrap,
  Time,
  notify,
  useAction,
  useLoad,
} from "../ui";

export function NameAndDescriptionFields({
  error,
  what,
}: {
  error: ReturnType<typeof useAction>["error"];
  what: string;
}) {
  return (
    <>
      <Field
        label="Name"
        name="name"
        error={error}
        hint="Lower-case letters, digits and dashes; it cannot be changed later."
      >
        {(a) => <input {...a} autoCapitalize="none" spellcheck={false} autoComplete="off" autoFocus />}
      </Field>
      <Field label="Description (optional)" name="description" error={error}>
        {(a) => <input {...a} placeholder={`What this ${what} is for`} />}
      </Field>
    </>
  );
}

/** Creating a project or group: name and description, then its page. */
export function CreateNamed({
  what,
  open,
  onClose,
}: {
  what: "project" | "group";
  open: boolean;
  onClose: () => void;
}) {
  const action = useAction();
  const path = `/${what}s`;
  const submit = (data: FormData) =>
    action.run(async () => {
      const created = await api.post<{ name: string }>(path, {
        name: String(data.get("name") ?? "").trim(),
        description: String(data.get("description") ?? ""),
      });
      notify(`${what === "project" ? "Project" : "Group"} ${created.name} created.`);
      onClose();
      navigate(`${path}/${seg(created.name)}`);
    });
  return (
    <Dialog open={open} title={`New ${what}`} onClose={onClose}>
      <Form onSubmit={submit} error={action.error} fields={["name", "description"]} label={`New ${what}`}>
        <NameAndDescriptionFields error={action.error} what={what} />
        <div class="form-actions">
          <Button onClick={onClose}>Cancel</Button>
          <Button type="submit" variant="primary" busy={action.busy}>
            Create {what}
          </Button>
        </div>
      </Form>
    </Dialog>
  );
}

export function Projects() {
  const { caps } = useSession();
  const [open, setOpen] = useState(false);
  const data = useLoad(clustersByProject, [], 10000);
  const create = caps.createProjects && (
    <Button variant="primary" onClick={() => setOpen(true)}>
      <Icon name="plus" /> New project
    </Button>
  );
  return (
    <>
      <PageHeader
        title="Projects"
        subtitle="A project holds clusters; most access is granted per project."
        actions={create}
      />
      <Loader state={data} what="Loading projects">
        {(groups) =>
          groups.length === 0 ? (
            <Empty title="No projects yet" action={create}>
              {caps.createProjects
                ? "Create a project, then import clusters into it and grant your team access."
                : "You have no access to any project yet. Ask an administrator for a grant."}
            </Empty>
          ) : (
            <TableWrap label="Projects">
              <thead>
                <tr>
                  <th>Name</th>
                  <th>Description</th>
                  <th>Clusters</th>
                  <th>Created</th>
                </tr>
              </thead>
              <tbody>
                {groups.map(({ project, clusters, error }) => {
                  const online = clusters.filter((c) => c.status.state === "online").length;
                  return (
                    <tr key={project.id}>
                      <td>
                        <Link href={`/projects/${seg(project.name)}`} class="strong">
                          {project.name}
                        </Link>
                      </td>
                      <td>{project.description || <span class="muted">—</span>}</td>
                      <td>
                        {error ? (
                          <span class="muted">—</span>
                        ) : clusters.length === 0 ? (
                          <span class="muted">none</span>
                        ) : (
                          <>
                            {plural(clusters.length, "cluster")}{" "}
                            <Badge tone={online === clusters.length ? "ok" : "warn"}>{online} online</Badge>
                          </>
                        )}
                      </td>
                      <td>
                        <Time value={project.created_at} />
                      </td>
                    </tr>
                  );
                })}
              </tbody>
            </TableWrap>
          )
        }
      </Loader>
      <CreateNamed what="project" open={open} onClose={() => setOpen(false)} />
    </>
  );
}
