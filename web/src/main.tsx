import { render } from "preact";
import { useCallback, useEffect, useMemo, useRef, useState } from "preact/hooks";
import "./styles.css";
import { api, csrfToken, onSessionProblem, setCsrfToken, type Me } from "./api";
import { Link, match, navigate, useLocation } from "./router";
import { capabilities, SessionContext, useSession, type SessionValue } from "./session";
import { Loading, Notices } from "./ui";
import { Icon, type IconName } from "./icons";
import { Login } from "./pages/Login";
import { ForcedPasswordChange, Account } from "./pages/Account";
import { Overview } from "./pages/Overview";
import { Projects } from "./pages/Projects";
import { ProjectPage } from "./pages/Project";
import { ClusterPage } from "./pages/Cluster";
import { Users, UserPage } from "./pages/Users";
import { Groups, GroupPage } from "./pages/Groups";
import { Access } from "./pages/Access";
import { Kubeconfig } from "./pages/Kubeconfig";
import { Tokens } from "./pages/Tokens";
import { Audit } from "./pages/Audit";
import { SettingsPage } from "./pages/Settings";
import { SsoPage } from "./pages/Sso";

type Auth = { state: "booting" } | { state: "signed-out"; message?: string } | { state: "signed-in"; me: Me };

function App() {
  const [auth, setAuth] = useState<Auth>({ state: "booting" });
  const loc = useLocation();

  const loadMe = useCallback(async () => {
    try {
      const me = await api.get<Me>("/auth/me");
      setAuth({ state: "signed-in", me });
    } catch {
      setCsrfToken(null);
      setAuth({ state: "signed-out" });
    }
  }, []);

  useEffect(() => {
    // Single sign-on ends with the CSRF token in the fragment, which never reaches a server.
    const sso = location.hash.match(/^#sso=([A-Za-z0-9_-]+)$/);
    if (sso) {
      setCsrfToken(sso[1]);
      history.replaceState(null, "", location.pathname + location.search);
    }
    // Without the CSRF token from sign-in nothing can be changed, so start from sign-in.
    if (csrfToken()) loadMe();
    else setAuth({ state: "signed-out" });
    onSessionProblem((code) => {
      if (code === "password_change_required") {
        loadMe();
      } else {
        setCsrfToken(null);
        setAuth({ state: "signed-out", message: "Your session has ended. Sign in again to continue." });
      }
    });
  }, [loadMe]);

  // Signed-out visitors land on /login, remembering where they were going.
  useEffect(() => {
    if (auth.state === "signed-out" && loc.path !== "/login") {
      const next = loc.path + (loc.query.toString() ? `?${loc.query}` : "");
      navigate(next === "/" ? "/login" : `/login?next=${encodeURIComponent(next)}`, { replace: true });
    }
    if (auth.state === "signed-in" && loc.path === "/login") {
      const next = loc.query.get("next");
      navigate(next && next.startsWith("/") && !next.startsWith("//") ? next : "/", { replace: true });
    }
  }, [auth.state, loc.path]);

  const session = useMemo<SessionValue | null>(() => {
    if (auth.state !== "signed-in") return null;
    return {
      me: auth.me,
      caps: capabilities(auth.me),
      refresh: loadMe,
      signOut: async () => {
        try {
          await api.post("/auth/logout");
        } catch {
          // The session may already be gone; signing out locally is what matters.
        }
        setCsrfToken(null);
        // A deliberate sign-out starts afresh instead of returning to this page.
        navigate("/login", { replace: true });
        setAuth({ state: "signed-out", message: "You are signed out." });
      },
    };
  }, [auth, loadMe]);

  if (auth.state === "booting") {
    return (
      <div class="center-screen">
        <Loading what="Starting the console" />
      </div>
    );
  }
  if (auth.state === "signed-out" || !session) {
    return (
      <Login
        message={auth.state === "signed-out" ? auth.message : undefined}
        onSignedIn={(csrf) => {
          setCsrfToken(csrf);
          return loadMe();
        }}
      />
    );
  }
  return (
    <SessionContext.Provider value={session}>
      {session.me.user.must_change_password ? <ForcedPasswordChange /> : <Shell path={loc.path} />}
      <Notices />
    </SessionContext.Provider>
  );
}

interface NavItem {
  href: string;
  label: string;
  icon: IconName;
  show: boolean;
}

function Shell({ path }: { path: string }) {
  const [menuOpen, setMenuOpen] = useState(false);
  const mainRef = useRef<HTMLElement>(null);
  const first = useRef(true);
  useEffect(() => {
    setMenuOpen(false);
    // Move focus to the new page so keyboard and screen-reader users start at its top.
    if (first.current) first.current = false;
    else mainRef.current?.focus({ preventScroll: true });
  }, [path]);

  const s = useSession();
  const caps = s.caps;
  const items: NavItem[] = [
    { href: "/", label: "Overview", icon: "home", show: true },
    { href: "/projects", label: "Projects", icon: "folder", show: true },
    { href: "/users", label: "Users", icon: "user", show: caps.orgRead },
    { href: "/groups", label: "Groups", icon: "users", show: caps.orgRead },
    { href: "/access", label: "Access", icon: "key", show: caps.readGrants },
    { href: "/kubeconfig", label: "My kubeconfig", icon: "download", show: true },
    { href: "/tokens", label: "API tokens", icon: "token", show: true },
    { href: "/audit", label: "Audit log", icon: "list", show: caps.readAudit },
    { href: "/settings", label: "Settings", icon: "gear", show: caps.orgRead },
    { href: "/sso", label: "Single sign-on", icon: "key", show: caps.orgRead },
  ];
  const active = (href: string) => (href === "/" ? path === "/" : path === href || path.startsWith(`${href}/`));
  return (
    <div class={menuOpen ? "shell menu-open" : "shell"}>
      <a class="skip" href="#main">
        Skip to content
      </a>
      <header class="topbar">
        <button
          type="button"
          class="btn ghost icon menu-button"
          aria-label="Menu"
          aria-expanded={menuOpen}
          aria-controls="nav"
          onClick={() => setMenuOpen(!menuOpen)}
        >
          <Icon name="menu" />
        </button>
        <Link href="/" class="brand">
          <Icon name="logo" />
          <span>ztka</span>
        </Link>
        <div class="topbar-right">
          <Link href="/account" class="whoami" title="Your account" aria-label={`Your account: ${s.me.user.name}`}>
            <Icon name="user" />
            <span>{s.me.user.display_name || s.me.user.name}</span>
          </Link>
          <button type="button" class="btn ghost small" onClick={s.signOut}>
            Sign out
          </button>
        </div>
      </header>
      <nav id="nav" class="sidebar" aria-label="Main">
        <ul>
          {items
            .filter((i) => i.show)
            .map((i) => (
              <li key={i.href}>
                <Link href={i.href} aria-current={active(i.href) ? "page" : undefined}>
                  <Icon name={i.icon} />
                  {i.label}
                </Link>
              </li>
            ))}
        </ul>
      </nav>
      <div class="scrim" onClick={() => setMenuOpen(false)} />
      <main id="main" ref={mainRef} tabIndex={-1}>
        <Routes path={path} />
      </main>
    </div>
  );
}

function Routes({ path }: { path: string }) {
  let m: Record<string, string> | null;
  if (path === "/") return <Overview />;
  if (path === "/projects") return <Projects />;
  if ((m = match("/projects/:project", path))) return <ProjectPage key={m.project} name={m.project} />;
  if ((m = match("/projects/:project/clusters/:cluster", path)))
    return <ClusterPage key={`${m.project}/${m.cluster}`} project={m.project} name={m.cluster} />;
  if (path === "/users") return <Users />;
  if ((m = match("/users/:name", path))) return <UserPage key={m.name} name={m.name} />;
  if (path === "/groups") return <Groups />;
  if ((m = match("/groups/:name", path))) return <GroupPage key={m.name} name={m.name} />;
  if (path === "/access") return <Access />;
  if (path === "/kubeconfig") return <Kubeconfig />;
  if (path === "/tokens") return <Tokens />;
  if (path === "/audit") return <Audit />;
  if (path === "/settings") return <SettingsPage />;
  if (path === "/sso") return <SsoPage />;
  if (path === "/account") return <Account />;
  return (
    <div class="empty">
      <h1>Page not found</h1>
      <p class="muted">There is nothing at {path}.</p>
      <Link href="/" class="btn primary">
        Go to the overview
      </Link>
    </div>
  );
}

render(<App />, document.getElementById("app")!);
