import { useState } from "preact/hooks";
import { all, api, seg, type Grant, type Group, type Page, type User } from "../api";
import { plural } from "../format";
import { Icon } from "../icons";
import { Link, navigate } from "../router";
import { useSession } from "../session";
import {
  Button,
  Card,
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
import { EditDescription } from "./Project";
import { CreateNamed } from "./Projects";

export function Groups() {
  const { caps } = useSession();
  const [open, setOpen] = useState(false);
  const groups = useLoad(() => all<Group>("/groups"), []);
  const create = caps.orgWrite && (
    <Button variant="primary" onClick={() => setOpen(true)}>
      <Icon name="plus" /> New group
    </Button>
  );
  return (
    <>
      <PageHeader title="Groups" subtitle="Grant roles to groups and manage people by membership." actions={create} />
      <Loader state={groups} what="Loading groups">
        {(list) =>
          list.length === 0 ? (
            <Empty title="No groups yet" action={create}>
              Groups such as <code>developers</code> or <code>sre</code> keep access tidy: grant a role to the group
              once, then add and remove members.
            </Empty>
          ) : (
            <TableWrap label="Groups">
              <thead>
                <tr>
                  <th>Name</th>
                  <th>Description</th>
                  <th>Members</th>
                  <th>Created</th>
                </tr>
              </thead>
              <tbody>
                {list.map((g) => (
                  <tr key={g.id}>
                    <td>
                      <Link href={`/groups/${seg(g.name)}`} class="strong">
                        {g.name}
                      </Link>
                    </td>
                    <td>{g.description || <span class="muted">—</span>}</td>
                    <td>{plural(g.member_count, "member")}</td>
                    <td>
                      <Time value={g.created_at} />
                    </td>
                  </tr>
                ))}
              </tbody>
            </TableWrap>
          )
        }
      </Loader>
      <CreateNamed what="group" open={open} onClose={() => setOpen(false)} />
    </>
  );
}

function AddMember({ group, members, onDone }: { group: string; members: User[]; onDone: () => void }) {
  const action = useAction();
  const users = useLoad(() => all<User>("/users"), []);
  const candidates = (users.data ?? []).filter((u) => !members.some((m) => m.id === u.id));
  const submit = (data: FormData, form: HTMLFormElement) =>
    action.run(async () => {
      const user = String(data.get("user") ?? "").trim();
      await api.post(`/groups/${seg(group)}/members`, { user });
      notify(`${user} added to ${group}.`);
      form.reset();
      onDone();
    });
  return (
    <Form onSubmit={submit} error={action.error} fields={["user"]} class="form inline" label="Add a member">
      <Field label="User name" name="user" error={action.error}>
        {(a) => (
          <>
            <input
              {...a}
              list="member-candidates"
              autoComplete="off"
              autoCapitalize="none"
              spellcheck={false}
              placeholder="user name"
            />
            <datalist id="member-candidates">
              {candidates.map((u) => (
                <option key={u.id} value={u.name} />
              ))}
            </datalist>
          </>
        )}
      </Field>
      <Button type="submit" variant="primary" busy={action.busy}>
        Add
      </Button>
    </Form>
  );
}

export function GroupPage({ name }: { name: string }) {
  const { caps } = useSession();
  const group = useLoad(() => api.get<Group>(`/groups/${seg(name)}`), [name]);
  const members = useLoad(() => api.get<Page<User>>(`/groups/${seg(name)}/members`).then((p) => p.items), [name]);
  const grants = useLoad(
    () => all<Grant>("/grants").then((l) => l.filter((g) => g.subject.kind === "group" && g.subject.name === name)),
    [name],
  );
  const [dialog, setDialog] = useState<"" | "edit" | "grant">("");
  const [confirm, ask] = useConfirm();
  const changed = () => {
    members.reload();
    group.reload();
  };
  const removeMember = async (u: User) => {
    const ok = await ask({
      title: `Remove ${u.name} from ${name}?`,
      body: (
        <p>
          {u.name} loses the roles granted to {name} at once; their open kubectl streams are closed.
        </p>
      ),
      confirm: "Remove member",
      danger: true,
    });
    if (!ok) return;
    await attempt(() => api.del(`/groups/${seg(name)}/members/${seg(u.name)}`), `${u.name} removed from ${name}.`);
    changed();
  };
  const remove = async () => {
    const ok = await ask({
      title: `Delete group ${name}?`,
      body: <p>The group and its grants are removed; its members keep their other access.</p>,
      confirm: "Delete group",
      danger: true,
    });
    if (!ok) return;
    if (await attempt(() => api.del(`/groups/${seg(name)}`), `Group ${name} deleted.`)) navigate("/groups");
  };
  return (
    <Loader state={group} what="Loading the group">
      {(g) => (
        <>
          {confirm}
          <PageHeader
            back={<Link href="/groups">Groups</Link>}
            title={g.name}
            subtitle={g.description || "No description."}
            actions={
              caps.orgWrite && (
                <>
                  <Button onClick={() => setDialog("edit")}>Edit description</Button>
                  <Button variant="danger" onClick={remove}>
                    Delete
                  </Button>
                </>
              )
            }
          />
          <div class="grid two">
            <Card title={`Members (${g.member_count})`}>
              {caps.orgWrite && <AddMember group={g.name} members={members.data ?? []} onDone={changed} />}
              <Loader state={members} what="Loading members">
                {(list) =>
                  list.length === 0 ? (
                    <p class="muted">No members yet. Add users by name.</p>
                  ) : (
                    <ul class="member-list">
                      {list.map((u) => (
                        <li key={u.id}>
                          <span class="subject">
                            <Icon name="user" />
                            <Link href={`/users/${seg(u.name)}`}>{u.name}</Link>
                            {u.display_name && <span class="muted small">{u.display_name}</span>}
                          </span>
                          {caps.orgWrite && (
                            <Button
                              small
                              variant="ghost"
                              onClick={() => removeMember(u)}
                              aria-label={`Remove ${u.name}`}
                            >
                              Remove
                            </Button>
                          )}
                        </li>
                      ))}
                    </ul>
                  )
                }
              </Loader>
            </Card>
            <Card
              title="Grants"
              actions={
                caps.orgWrite && (
                  <Button onClick={() => setDialog("grant")}>
                    <Icon name="plus" /> Grant access
                  </Button>
                )
              }
            >
              <Loader state={grants} what="Loading grants">
                {(list) =>
                  list.length === 0 ? (
                    <p class="muted">This group holds no role yet; its members gain nothing from it.</p>
                  ) : (
                    <GrantsTable grants={list} onChanged={grants.reload} hide={["subject"]} />
                  )
                }
              </Loader>
            </Card>
          </div>
          <EditDescription
            open={dialog === "edit"}
            onClose={() => setDialog("")}
            value={g.description}
            save={(description) => api.patch(`/groups/${seg(g.name)}`, { description }).then(group.reload)}
          />
          <GrantDialog
            open={dialog === "grant"}
            onClose={() => setDialog("")}
            onDone={grants.reload}
            preset={{ group: g.name }}
          />
        </>
      )}
    </Loader>
  );
}
