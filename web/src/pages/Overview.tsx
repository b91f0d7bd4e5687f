import type { ComponentChildren } from "preact";
import { all, api, seg, type AuditList, type Group, type User } from "../api";
import { ClusterState, clustersByProject, clustersPath, countStates, isMissingRoute } from "../clusters";
import { Icon } from "../icons";
import { Link } from "../router";
import { useSession } from "../session";
import { Card, Loader, PageHeader, TableWrap, Time, useLoad } from "../ui";
import { describeTarget, OutcomeBadge } from "./Audit";

function Stat({
  label,
  value,
  href,
  children,
}: {
  label: string;
  value: number | string;
  href: string;
  children?: ComponentChildren;
}) {
  return (
    <Link href={href} class="stat">
      <span class="stat-value">{value}</span>
      <span class="stat-label">{label}</span>
      {children && <span class="stat-extra">{children}</span>}
    </Link>
  );
}

function Activity() {
  // Reading the log is itself recorded; leave those reads out of "recent activity".
  const events = useLoad(
    () =>
      api
        .get<AuditList>("/audit", { limit: 40 })
        .then((l) => l.items.filter((e) => !e.action.startsWith("audit.")).slice(0, 8)),
    [],
  );
  return (
    <Card title="Recent activity" actions={<Link href="/audit">Audit log →</Link>}>
      <Loader state={events} what="Loading activity">
        {(list) =>
          list.length === 0 ? (
            <p class="muted">Nothing has happened yet.</p>
          ) : (
            <TableWrap label="Recent activity">
              <thead class="sr-only">
                <tr>
                  <th>Time</th>
                  <th>Who</th>
                  <th>Action</th>
                  <th>Outcome</th>
                </tr>
              </thead>
              <tbody>
                {list.map((e) => (
                  <tr key={e.seq}>
                    <td class="nowrap">
                      <Time value={e.time} />
                    </td>
                    <td>{e.actor.user_name ?? <span class="muted">anonymous</span>}</td>
                    <td>
                      <code>{e.action}</code> <span class="muted">{describeTarget(e)}</span>
                    </td>
                    <td>
                      <OutcomeBadge e={e} brief />
                    </td>
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

export function Overview() {
  const { me, caps } = useSession();
  const clusters = useLoad(clustersByProject, [], 10000);
  const people = useLoad(
    () => (caps.orgRead ? Promise.all([all<User>("/users"), all<Group>("/groups")]) : Promise.resolve(null)),
    [],
  );
  const groups = clusters.data ?? [];
  const counts = countStates(groups);
  const clustersMissing = groups.some((g) => g.error && isMissingRoute(g.error));
  const attention = groups.flatMap((g) => g.clusters.filter((c) => c.status.state !== "online"));
  const steps = caps.orgWrite
    ? [
        { done: groups.length > 0, text: "Create a project", href: "/projects" },
        {
          done: counts.total > 0,
          text: "Import a cluster into it",
          href: groups[0] ? `/projects/${seg(groups[0].project.name)}` : "/projects",
        },
        { done: (people.data?.[0].length ?? 0) > 1, text: "Add the people of your team", href: "/users" },
        { done: (people.data?.[1].length ?? 0) > 0, text: "Put them in groups", href: "/groups" },
        { done: false, text: "Grant the groups roles on projects", href: "/access" },
      ]
    : [];
  const showSteps = caps.orgWrite && clusters.data && (groups.length === 0 || counts.total === 0);
  return (
    <>
      <PageHeader title="Overview" subtitle={`Signed in as ${me.user.display_name || me.user.name}.`} />
      <Loader state={clusters} what="Loading clusters">
        {() => (
          <div class="stats">
            <Stat
              label="Clusters online"
              value={clustersMissing ? "—" : `${counts.online}/${counts.total}`}
              href="/projects"
            >
              {counts.offline > 0 && <span class="badge bad">{counts.offline} offline</span>}
              {counts.pending > 0 && <span class="badge warn">{counts.pending} waiting</span>}
            </Stat>
            <Stat label={groups.length === 1 ? "Project" : "Projects"} value={groups.length} href="/projects" />
            {people.data && <Stat label="Users" value={people.data[0].length} href="/users" />}
            {people.data && <Stat label="Groups" value={people.data[1].length} href="/groups" />}
          </div>
        )}
      </Loader>
      {showSteps && (
        <Card title="Get started">
          <ol class="checklist">
            {steps.map((s) => (
              <li key={s.text} class={s.done ? "done" : ""}>
                <span class="check-mark" aria-hidden="true">
                  {s.done ? "✓" : ""}
                </span>
                <Link href={s.href}>{s.text}</Link>
                {s.done && <span class="sr-only"> (done)</span>}
              </li>
            ))}
          </ol>
        </Card>
      )}
      <div class="grid two wide-second">
        <Card title="Clusters needing attention">
          {clustersMissing ? (
            <p class="muted">This server does not report clusters yet.</p>
          ) : attention.length === 0 ? (
            <p class="muted">{counts.total === 0 ? "No clusters yet." : "All clusters are online."}</p>
          ) : (
            <ul class="plain-list">
              {attention.map((c) => (
                <li key={c.id}>
                  <Icon name="cluster" /> <Link href={clustersPath(c.project, c.name)}>{c.name}</Link>{" "}
                  <span class="muted small">in {c.project}</span> <ClusterState cluster={c} />
                </li>
              ))}
            </ul>
          )}
        </Card>
        {caps.readAudit ? (
          <Activity />
        ) : (
          <Card title="Get to work">
            <p>
              Download <Link href="/kubeconfig">your kubeconfig</Link> and use kubectl as usual.
            </p>
          </Card>
        )}
      </div>
    </>
  );
}
