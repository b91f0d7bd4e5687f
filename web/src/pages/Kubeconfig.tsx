import { useState } from "preact/hooks";
import { kubeconfigUrl, seg } from "../api";
import { Certificates } from "../certificates";
import { ClusterState, clustersByProject, isMissingRoute } from "../clusters";
import { Icon } from "../icons";
import { Link } from "../router";
import { useSession } from "../session";
import { Card, Empty, Loader, PageHeader, TableWrap, Time, useLoad } from "../ui";

export function Kubeconfig() {
  const { me } = useSession();
  const data = useLoad(clustersByProject, [], 10000);
  // Each download issues a certificate, which the list below then shows.
  const [downloads, setDownloads] = useState(0);
  const downloaded = () => setDownloads((n) => n + 1);
  return (
    <>
      <PageHeader
        title="My kubeconfig"
        subtitle="A kubeconfig with your own client certificate, for kubectl, Helm, k9s and anything else that reads one."
        actions={
          <a class="btn primary" href={kubeconfigUrl()} download onClick={downloaded}>
            <Icon name="download" /> Download for all clusters
          </a>
        }
      />
      <Card title="Use it">
        <pre class="snippet">{`export KUBECONFIG=~/Downloads/ztka.yaml\nkubectl config get-contexts\nkubectl get namespaces`}</pre>
        <p class="muted small">
          Every request goes through ztka as you: it is checked against your grants at that moment and written to the
          audit log. If a file leaks or a laptop is lost, revoke that download below and download a new one.
        </p>
      </Card>
      <Loader state={data} what="Loading your clusters">
        {(groups) => {
          const missing = groups.some((g) => g.error && isMissingRoute(g.error));
          const rows = groups.flatMap((g) => g.clusters.map((c) => ({ project: g.project.name, c })));
          if (missing) {
            return (
              <Empty title="Per-cluster downloads are not available on this server">
                This version of ztka does not list clusters yet. The download above holds every cluster you can reach.
              </Empty>
            );
          }
          if (rows.length === 0) {
            return (
              <Empty title="No clusters you can reach yet">
                {groups.length === 0
                  ? "You hold no role on any project. Ask an administrator for access."
                  : "Clusters appear here once they are imported into your projects."}
              </Empty>
            );
          }
          return (
            <TableWrap label="Clusters you can reach">
              <thead>
                <tr>
                  <th>Cluster</th>
                  <th>Project</th>
                  <th>Status</th>
                  <th>Last seen</th>
                  <th class="actions-col">
                    <span class="sr-only">Download</span>
                  </th>
                </tr>
              </thead>
              <tbody>
                {rows.map(({ project, c }) => (
                  <tr key={c.id}>
                    <td class="strong">{c.name}</td>
                    <td>
                      <Link href={`/projects/${seg(project)}`}>{project}</Link>
                    </td>
                    <td>
                      <ClusterState cluster={c} />
                    </td>
                    <td>
                      <Time value={c.status.last_heartbeat} empty="never" />
                    </td>
                    <td class="actions-col">
                      <a
                        class="btn small"
                        href={kubeconfigUrl(c.name)}
                        download
                        onClick={downloaded}
                        aria-label={`Download kubeconfig for ${c.name}`}
                      >
                        <Icon name="download" /> Download
                      </a>
                    </td>
                  </tr>
                ))}
              </tbody>
            </TableWrap>
          );
        }}
      </Loader>
      <Certificates base="/kubeconfig/certificates" owner={me.user.name} canRevoke downloads={downloads} />
    </>
  );
}
