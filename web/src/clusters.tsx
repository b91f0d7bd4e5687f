// Clusters across pages: status badges, fetching every visible project's clusters, and the
// install panel shown after a bootstrap token is made.
import { useEffect, useRef, useState } from "preact/hooks";
import { all, api, ApiError, seg, type Bootstrap, type Cluster, type Project } from "./api";
import { absolute } from "./format";
import { Badge, Code, DownloadText, Spinner, Time } from "./ui";

export function clustersPath(project: string, name?: string): string {
  const base = `/projects/${seg(project)}/clusters`;
  return name ? `${base}/${seg(name)}` : base;
}

export function ClusterState({ cluster }: { cluster: Cluster }) {
  switch (cluster.status.state) {
    case "online":
      return <Badge tone="ok">online</Badge>;
    case "offline":
      return <Badge tone="bad">offline</Badge>;
    default:
      return <Badge tone="warn">{cluster.status.registered_at ? "registered" : "waiting for agent"}</Badge>;
  }
}

/** A 404 from a route the server does not have (as opposed to a missing cluster). */
export function isMissingRoute(e: unknown): boolean {
  return e instanceof ApiError && e.status === 404 && e.message.startsWith("no API route");
}

export interface ProjectClusters {
  project: Project;
  clusters: Cluster[];
  error?: ApiError;
}

/** Every visible project with its clusters; a project whose clusters fail to load carries the error. */
export async function clustersByProject(): Promise<ProjectClusters[]> {
  const projects = await all<Project>("/projects");
  return Promise.all(
    projects.map(async (project) => {
      try {
        return { project, clusters: await all<Cluster>(clustersPath(project.name)) };
      } catch (e) {
        return { project, clusters: [], error: e instanceof ApiError ? e : undefined };
      }
    }),
  );
}

export function countStates(groups: ProjectClusters[]): Record<"online" | "offline" | "pending" | "total", number> {
  const out = { online: 0, offline: 0, pending: 0, total: 0 };
  for (const g of groups) {
    for (const c of g.clusters) {
      out[c.status.state] += 1;
      out.total += 1;
    }
  }
  return out;
}

/** Polls one cluster until the page closes; tells the caller each new state. */
export function useClusterStatus(project: string, name: string, ms: number): Cluster | undefined {
  const [cluster, setCluster] = useState<Cluster | undefined>();
  const stopped = useRef(false);
  useEffect(() => {
    stopped.current = false;
    const tick = async () => {
      try {
        const c = await api.get<Cluster>(clustersPath(project, name));
        if (!stopped.current) setCluster(c);
      } catch {
        // Keep the last known status; the next poll tries again.
      }
    };
    tick();
    const id = window.setInterval(tick, ms);
    return () => {
      stopped.current = true;
      window.clearInterval(id);
    };
  }, [project, name, ms]);
  return cluster;
}

/** What to run in the cluster, and the live registration status underneath. */
export function InstallPanel({ project, name, bootstrap }: { project: string; name: string; bootstrap: Bootstrap }) {
  const cluster = useClusterStatus(project, name, 2000);
  const state = cluster?.status.state;
  return (
    <div class="install">
      <ol class="steps">
        <li>
          <h3>Run this where kubectl points at the cluster</h3>
          <Code text={bootstrap.install_command} label="Install command" />
          <p class="hint">
            The command applies the agent manifest below. Its token works once and expires{" "}
            <time dateTime={bootstrap.expires_at} title={absolute(bootstrap.expires_at)}>
              {absolute(bootstrap.expires_at)}
            </time>
            . The agent dials out to this server, so the cluster needs no inbound port.
          </p>
        </li>
        <li>
          <h3>Or apply the manifest yourself</h3>
          <details class="manifest">
            <summary>Show the manifest (Namespace, ServiceAccount, RBAC, Deployment)</summary>
            <Code text={bootstrap.manifest} label="Agent manifest" block />
          </details>
          <DownloadText text={bootstrap.manifest} filename={`ztka-agent-${name}.yaml`} label="Download manifest" />
        </li>
        <li>
          <h3>Wait for the agent</h3>
          <div
            class={`live-status ${state ?? "pending"}`}
            role="status"
            aria-live="polite"
            data-state={state ?? "pending"}
          >
            {state === "online" ? (
              <>
                <Badge tone="ok">online</Badge> The agent is connected
                {cluster?.status.kubernetes_version && <> to Kubernetes {cluster.status.kubernetes_version}</>}.
              </>
            ) : state === "offline" ? (
              <>
                <Badge tone="bad">offline</Badge> The agent registered but is not connected. Last seen{" "}
                <Time value={cluster?.status.last_heartbeat} empty="never" />.
              </>
            ) : cluster?.status.registered_at ? (
              <>
                <Spinner /> Registered; waiting for the tunnel…
              </>
            ) : (
              <>
                <Spinner /> Waiting for the agent to register…
              </>
            )}
          </div>
        </li>
      </ol>
    </div>
  );
}
