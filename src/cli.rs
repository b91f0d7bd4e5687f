//! Command line: every flag has a `ZTKA_*` environment twin.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "ztka",
    version,
    about = "Zero-trust access to Kubernetes clusters for small teams",
    long_about = "ztka serves a browser console, a REST API and a kubectl relay on one HTTPS port. \
                  Agents in your clusters dial out to it; every kubectl request is authorized, runs \
                  as the user's just-in-time service account and lands in a tamper-evident audit log."
)]
pub struct Cli {
    /// TOML configuration file; its values sit between the defaults and the environment.
    #[arg(long, global = true, env = "ZTKA_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log output format.
    #[arg(long, global = true, env = "ZTKA_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

    /// Log filter, e.g. `info` or `ztka=debug,tower_http=info`.
    #[arg(long, global = true, env = "ZTKA_LOG", value_name = "FILTER")]
    pub log_level: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane: console, REST API, kubectl relay and agent tunnel endpoint.
    Serve(ServeArgs),
    /// Run the agent that connects a cluster to the server (usually inside the cluster).
    Agent(AgentArgs),
    /// Operations on a data directory (the server must be stopped, except for backup).
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Probe a running server's /healthz; exit 0 when healthy, 1 otherwise.
    Healthcheck(HealthcheckArgs),
    /// Print the version.
    Version,
    /// Inspect configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
}

/// Flags shared by everything that works on a data directory.
#[derive(Debug, Clone, Default, Args)]
pub struct DataDirArgs {
    /// Data directory holding the database, keys and certificates.
    #[arg(long, env = "ZTKA_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub data: DataDirArgs,

    /// Address of the HTTPS listener.
    #[arg(long, env = "ZTKA_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// URL users and agents reach the server at; its host goes into the server certificate.
    #[arg(long, env = "ZTKA_EXTERNAL_URL", value_name = "URL")]
    pub external_url: Option<String>,

    /// PEM certificate chain to serve instead of the one ztka issues itself.
    #[arg(long, env = "ZTKA_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, env = "ZTKA_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// File holding the first admin's password (used only when the database is created).
    /// `ZTKA_INITIAL_ADMIN_PASSWORD` may hold the password itself.
    #[arg(long, env = "ZTKA_INITIAL_ADMIN_PASSWORD_FILE", value_name = "FILE")]
    pub initial_admin_password_file: Option<PathBuf>,

    /// Seconds to let open requests finish after SIGINT/SIGTERM.
    #[arg(long, env = "ZTKA_SHUTDOWN_GRACE", value_name = "SECONDS")]
    pub shutdown_grace: Option<u64>,

    /// Container image that cluster install manifests run as the agent.
    #[arg(long, env = "ZTKA_AGENT_IMAGE", value_name = "IMAGE")]
    pub agent_image: Option<String>,

    /// Runtime worker threads (default: one per CPU core).
    #[arg(long, env = "ZTKA_THREADS", value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,

    /// Microseconds a runtime worker stays busy after each relayed request and answer,
    /// while at most four requests await answers (default 300, at most 10000; 0 turns it
    /// off; off by default under a CPU quota). Spends CPU time to spare each request the
    /// wake-ups of idle (virtual) CPUs.
    #[arg(long, env = "ZTKA_BUSY_POLL_US", value_name = "MICROSECONDS", value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub busy_poll_us: Option<u64>,
}

#[derive(Debug, Clone, Default, Args)]
pub struct AgentArgs {
    /// URL of the ztka server, e.g. https://ztka.example.com.
    #[arg(long, env = "ZTKA_SERVER", value_name = "URL")]
    pub server: String,

    /// PEM file of the CA that signs the server's certificate (default: public web roots).
    #[arg(long, env = "ZTKA_SERVER_CA", value_name = "FILE")]
    pub server_ca: Option<PathBuf>,

    /// Bootstrap token for the first registration (prefer --token-file).
    #[arg(long, env = "ZTKA_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// File holding the bootstrap token.
    #[arg(
        long,
        env = "ZTKA_TOKEN_FILE",
        value_name = "FILE",
        conflicts_with = "token"
    )]
    pub token_file: Option<PathBuf>,

    /// Directory for the agent's key and certificate (0600 file). Inside a cluster the
    /// default is the `ztka-agent-identity` Secret.
    #[arg(long, env = "ZTKA_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// kubeconfig of the cluster to serve (default: in-cluster configuration, then KUBECONFIG).
    #[arg(long, env = "ZTKA_KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,

    /// Address for plain-HTTP /healthz and /readyz probes (off by default).
    #[arg(long, env = "ZTKA_HEALTH_LISTEN", value_name = "ADDR")]
    pub health_listen: Option<SocketAddr>,

    /// Runtime worker threads (default 1). The tunnel is one connection, whose framing runs
    /// on one thread whatever the count; a single worker spares every relayed request the
    /// wake-ups between threads. Raise it for many busy exec or port-forward streams.
    #[arg(long, env = "ZTKA_THREADS", value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,

    /// Microseconds a runtime worker stays busy after each relayed request and answer,
    /// while at most four requests await answers (default 300, at most 10000; 0 turns it
    /// off; off by default under a CPU quota). Spends CPU time to spare each request the
    /// wake-ups of idle (virtual) CPUs.
    #[arg(long, env = "ZTKA_BUSY_POLL_US", value_name = "MICROSECONDS", value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub busy_poll_us: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Set a new password for a local user and require a change at next sign-in.
    ResetPassword(ResetPasswordArgs),
    /// Create, list or disable users.
    #[command(subcommand)]
    User(UserCommand),
    /// Grant a role to a user or group.
    Grant(GrantArgs),
    /// Verify or export the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Write a consistent copy of the database, CA and server certificate to DEST (a new or
    /// empty directory). Works on a stopped server and, through the server, on a running one.
    Backup(BackupArgs),
    /// Restore a backup made by `admin backup` into a fresh data directory (server stopped).
    Restore(RestoreArgs),
    /// Create the data directory, CA, server certificate and first admin (its password goes
    /// to <data-dir>/initial-admin-password), then exit. Does nothing already done.
    Init(Box<ServeArgs>),
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub data: DataDirArgs,
    /// Directory to write the backup to; must not exist or be empty.
    pub dest: PathBuf,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub data: DataDirArgs,
    /// Directory written by `ztka admin backup`.
    pub src: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a local user (password generated unless --password-file) or a service user.
    Create(UserCreateArgs),
    /// List users.
    List(DataDirOnly),
    /// Disable a user: sign-in, sessions, API tokens and kubeconfigs stop working.
    Disable(UserNameArgs),
    /// Enable a disabled user.
    Enable(UserNameArgs),
}

#[derive(Debug, Args)]
pub struct DataDirOnly {
    #[command(flatten)]
    pub data: DataDirArgs,
}

#[derive(Debug, Args)]
pub struct UserNameArgs {
    #[command(flatten)]
    pub data: DataDirArgs,
    /// Name of the user.
    pub user: String,
}

#[derive(Debug, Args)]
pub struct UserCreateArgs {
    #[command(flatten)]
    pub data: DataDirArgs,
    /// Name of the new user (a DNS-1123 label).
    pub user: String,
    /// Create a service user (no password; for automation with API tokens).
    #[arg(long, env = "ZTKA_USER_SERVICE")]
    pub service: bool,
    /// Read the password from this file instead of generating one.
    #[arg(
        long,
        env = "ZTKA_USER_PASSWORD_FILE",
        value_name = "FILE",
        conflicts_with = "service"
    )]
    pub password_file: Option<PathBuf>,
    /// Display name.
    #[arg(long, env = "ZTKA_USER_DISPLAY_NAME", default_value = "")]
    pub display_name: String,
}

#[derive(Debug, Args)]
pub struct GrantArgs {
    #[command(flatten)]
    pub data: DataDirArgs,
    /// User to grant the role to.
    #[arg(
        long,
        env = "ZTKA_GRANT_USER",
        conflicts_with = "group",
        required_unless_present = "group"
    )]
    pub user: Option<String>,
    /// Group to grant the role to.
    #[arg(long, env = "ZTKA_GRANT_GROUP")]
    pub group: Option<String>,
    /// Role name: admin, admin-read-only, project-admin, project-read-only, cluster-admin,
    /// namespace-admin, namespace-read-only.
    #[arg(long, env = "ZTKA_GRANT_ROLE")]
    pub role: String,
    /// Project, for project and namespace roles.
    #[arg(long, env = "ZTKA_GRANT_PROJECT")]
    pub project: Option<String>,
    /// Comma-separated namespaces, for namespace roles.
    #[arg(long, env = "ZTKA_GRANT_NAMESPACES", value_delimiter = ',')]
    pub namespaces: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Walk the hash chain: print OK with the event count and head, or the first broken
    /// link (exit 1).
    Verify(DataDirArgs),
    /// Write the events matching the filters as JSON Lines, oldest first.
    Export(Box<AuditExportArgs>),
    /// Append events durably in a loop, printing each acknowledged seq (crash tests).
    #[command(hide = true)]
    StressAppend(StressAppendArgs),
}

#[derive(Debug, Args)]
pub struct AuditExportArgs {
    #[command(flatten)]
    pub data: DataDirArgs,

    /// Write to this file instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Events at or after this time (RFC 3339, e.g. 2026-01-31T00:00:00Z).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub from: Option<time::OffsetDateTime>,

    /// Events before this time (RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub to: Option<time::OffsetDateTime>,

    /// User name or id.
    #[arg(long)]
    pub user: Option<String>,
    #[arg(long)]
    pub cluster: Option<String>,
    #[arg(long)]
    pub project: Option<String>,
    #[arg(long)]
    pub namespace: Option<String>,
    /// `system` or `kube`.
    #[arg(long, value_parser = parse_kind)]
    pub kind: Option<crate::domain::audit::EventKind>,
    /// e.g. `auth.login`, `user.create`, `kube.request`.
    #[arg(long)]
    pub action: Option<String>,
    /// `success`, `denied` or `error`.
    #[arg(long, value_parser = parse_outcome)]
    pub outcome: Option<crate::domain::audit::Outcome>,
    /// Kubernetes verb.
    #[arg(long)]
    pub verb: Option<String>,
    /// Kubernetes resource.
    #[arg(long)]
    pub resource: Option<String>,
    /// HTTP status code.
    #[arg(long)]
    pub status: Option<u16>,
}

#[derive(Debug, Args)]
pub struct StressAppendArgs {
    #[command(flatten)]
    pub data: DataDirArgs,
    /// Concurrent durable appenders.
    #[arg(long, default_value_t = 4)]
    pub writers: usize,
    /// Stop after this many acknowledged events (default: until killed).
    #[arg(long)]
    pub count: Option<u64>,
    /// Instead: append this many `Fast` events alone, print the last seq, then wait to be
    /// killed (crash tests of the fast events' sync).
    #[arg(long, conflicts_with = "count")]
    pub fast_only: Option<u64>,
}

fn parse_time(s: &str) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("not an RFC 3339 time: {e}"))
}

fn parse_kind(s: &str) -> Result<crate::domain::audit::EventKind, String> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|_| "expected system or kube".to_owned())
}

fn parse_outcome(s: &str) -> Result<crate::domain::audit::Outcome, String> {
    serde_json::from_value(serde_json::Value::String(s.to_owned()))
        .map_err(|_| "expected success, denied or error".to_owned())
}

#[derive(Debug, Args)]
pub struct ResetPasswordArgs {
    #[command(flatten)]
    pub data: DataDirArgs,

    /// Name of the user.
    pub user: String,

    /// Read the new password from this file instead of generating one.
    #[arg(long, env = "ZTKA_NEW_PASSWORD_FILE", value_name = "FILE")]
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    #[command(flatten)]
    pub data: DataDirArgs,

    /// URL to probe; defaults to /healthz on the configured listen address.
    #[arg(long, env = "ZTKA_HEALTHCHECK_URL", value_name = "URL")]
    pub url: Option<String>,

    /// Probe a local `ztka agent` instead: plain HTTP `/readyz` (tunnel open) on its
    /// `--health-listen` address (default 127.0.0.1:8081).
    #[arg(long, conflicts_with = "url")]
    pub agent: bool,

    /// The agent's health address, as given to `ztka agent --health-listen` (with `--agent`).
    #[arg(long, env = "ZTKA_HEALTH_LISTEN", value_name = "ADDR")]
    pub health_listen: Option<std::net::SocketAddr>,

    /// Extra CA certificate (PEM) to trust; `<data-dir>/ca.crt` is trusted when present.
    #[arg(long, env = "ZTKA_HEALTHCHECK_CA", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,

    /// Seconds to wait for an answer.
    #[arg(
        long,
        env = "ZTKA_HEALTHCHECK_TIMEOUT",
        default_value_t = 5,
        value_name = "SECONDS"
    )]
    pub timeout: u64,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Load the configuration (defaults, --config file, environment, flags), validate it and
    /// print the effective values with secrets redacted.
    Check(ServeArgs),
}
