// Who is signed in, and what the console may offer them. The server decides every request;
// these capabilities only hide what would be refused anyway.
import { createContext } from "preact";
import { useContext } from "preact/hooks";
import type { Grant, Me, RoleName } from "./api";

export interface Caps {
  /** Organization admin: may change everything. */
  orgWrite: boolean;
  /** May read organization-wide objects (users, groups, settings, all grants and audit). */
  orgRead: boolean;
  /** May create projects. */
  createProjects: boolean;
  /** Reads grants somewhere (organization or some project). */
  readGrants: boolean;
  /** Reads the audit log somewhere. */
  readAudit: boolean;
  manageClusters(project: string): boolean;
  updateClusters(project: string): boolean;
  manageGrants(project: string): boolean;
  readGrantsIn(project: string): boolean;
  updateProject(project: string): boolean;
}

function rolesIn(grants: Grant[], project: string | null): Set<RoleName> {
  return new Set(
    grants.filter((g) => g.active && (g.scope === "organization" || g.project === project)).map((g) => g.role),
  );
}

export function capabilities(me: Me): Caps {
  const org = rolesIn(me.grants, null);
  const orgWrite = org.has("admin");
  const orgRead = orgWrite || org.has("admin-read-only");
  const has = (project: string, ...roles: RoleName[]) => {
    const r = rolesIn(me.grants, project);
    return r.has("admin") || roles.some((x) => r.has(x));
  };
  const projectRoles = new Set(me.grants.filter((g) => g.active && g.project).map((g) => g.role));
  return {
    orgWrite,
    orgRead,
    createProjects: orgWrite,
    readGrants: orgRead || projectRoles.has("project-admin") || projectRoles.has("project-read-only"),
    readAudit:
      orgRead ||
      projectRoles.has("project-admin") ||
      projectRoles.has("project-read-only") ||
      projectRoles.has("cluster-admin"),
    manageClusters: (p) => has(p, "project-admin"),
    updateClusters: (p) => has(p, "project-admin", "cluster-admin"),
    manageGrants: (p) => has(p, "project-admin"),
    readGrantsIn: (p) => orgRead || has(p, "project-admin", "project-read-only"),
    updateProject: (p) => has(p, "project-admin"),
  };
}

export interface SessionValue {
  me: Me;
  caps: Caps;
  refresh(): Promise<void>;
  signOut(): Promise<void>;
}

export const SessionContext = createContext<SessionValue | null>(null);

export function useSession(): SessionValue {
  const s = useContext(SessionContext);
  if (!s) throw new Error("useSession outside a signed-in console");
  return s;
}
