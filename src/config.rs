//! Typed configuration. Precedence: built-in defaults → TOML file (`--config`) → environment
//! (`ZTKA_*`) → command-line flags. Clap already folds each flag with its environment twin, so
//! the merge here is defaults ← file ← (env | flag).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::audit::{AuditOptions, DEFAULT_RETENTION_DAYS};
use crate::cli::{LogFormat, ServeArgs};

pub const DEFAULT_DATA_DIR: &str = "./ztka-data";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";
pub const DEFAULT_EXTERNAL_URL: &str = "https://localhost:8443";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value for {key}: {message}")]
    Invalid { key: &'static str, message: String },
    #[error("cannot read {key} from {path}: {source}")]
    SecretFile {
        key: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A secret value: never printed by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The TOML file. Unknown keys are rejected with their name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    #[serde(default)]
    pub server: FileServer,
    #[serde(default)]
    pub log: FileLog,
    #[serde(default)]
    pub audit: FileAudit,
    #[serde(default)]
    pub agents: FileAgents,
}

/// `[agents]`: what cluster imports hand out.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAgents {
    /// Container image the install manifest runs (default: this release's own image).
    pub image: Option<String>,
    /// Hours a bootstrap token stays usable (default 24).
    pub bootstrap_token_ttl_hours: Option<u64>,
    /// Days an agent certificate is valid; agents renew it when a third is left (default 30).
    pub certificate_validity_days: Option<u64>,
}

/// The agent image of this release.
pub fn default_agent_image() -> String {
    format!("ghcr.io/ztka-dev/ztka:{}", env!("CARGO_PKG_VERSION"))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentOptions {
    pub image: String,
    pub bootstrap_token_ttl: Duration,
    pub certificate_validity: Duration,
}

impl Default for AgentOptions {
    fn default() -> Self {
        // The defaults always validate.
        FileAgents::default()
            .options(None)
            .unwrap_or_else(|_| AgentOptions {
                image: default_agent_image(),
                bootstrap_token_ttl: Duration::from_secs(24 * 3600),
                certificate_validity: Duration::from_secs(30 * 86_400),
            })
    }
}

impl FileAgents {
    fn options(&self, image_flag: Option<&str>) -> Result<AgentOptions, ConfigError> {
        let image = image_flag
            .map(str::to_owned)
            .or_else(|| self.image.clone())
            .unwrap_or_else(default_agent_image);
        if image.trim().is_empty() || image.chars().any(char::is_whitespace) {
            return Err(ConfigError::Invalid {
                key: "agents.image",
                message: format!("{image:?} is not a container image reference"),
            });
        }
        let hours = self.bootstrap_token_ttl_hours.unwrap_or(24);
        let days = self.certificate_validity_days.unwrap_or(30);
        if hours == 0 || hours > 24 * 30 {
            return Err(ConfigError::Invalid {
                key: "agents.bootstrap_token_ttl_hours",
                message: format!("{hours} is not between 1 and 720"),
            });
        }
        if days == 0 || days > 365 {
            return Err(ConfigError::Invalid {
                key: "agents.certificate_validity_days",
                message: format!("{days} is not between 1 and 365"),
            });
        }
        Ok(AgentOptions {
            image,
            bootstrap_token_ttl: Duration::from_secs(hours * 3600),
            certificate_validity: Duration::from_secs(days * 86_400),
        })
    }
}

/// `[audit]`: retention. Events beyond either limit are removed oldest first by a periodic
/// sweep that keeps the chain verifiable. `0` disables a limit.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAudit {
    /// Keep events for this many days (default 365; 0 keeps them forever).
    pub retention_days: Option<u64>,
    /// Keep at most this many events (default no limit).
    pub retention_max_events: Option<u64>,
}

impl FileAudit {
    pub fn options(&self) -> AuditOptions {
        let days = self.retention_days.unwrap_or(DEFAULT_RETENTION_DAYS);
        AuditOptions {
            retention_max_age: (days > 0).then(|| Duration::from_secs(days.saturating_mul(86_400))),
            retention_max_events: self.retention_max_events.filter(|n| *n > 0),
            ..AuditOptions::default()
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileServer {
    pub listen: Option<String>,
    pub external_url: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub initial_admin_password: Option<String>,
    pub initial_admin_password_file: Option<PathBuf>,
    pub shutdown_grace_secs: Option<u64>,
    pub handshake_timeout_secs: Option<u64>,
    /// Runtime worker threads; read before the runtime starts (see `main`).
    pub threads: Option<u16>,
    /// Microseconds of busy polling after relayed traffic (see `busy_poll`).
    pub busy_poll_us: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLog {
    pub format: Option<LogFormat>,
    pub level: Option<String>,
}

impl FileConfig {
    /// Reads the file named by `--config`, or an empty configuration when there is none.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: one_line(&e.to_string()),
        })
    }
}

/// toml's messages span several lines with a source excerpt; keep them to one.
fn one_line(message: &str) -> String {
    let mut parts: Vec<&str> = message
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with('|') && !l.chars().all(|c| c == '^' || c == ' ')
        })
        .collect();
    parts.dedup();
    parts.join("; ")
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub format: LogFormat,
    pub filter: String,
}

impl LogConfig {
    pub fn resolve(file: &FileLog, format: Option<LogFormat>, filter: Option<String>) -> Self {
        Self {
            format: format.or(file.format).unwrap_or(LogFormat::Pretty),
            filter: filter
                .or_else(|| file.level.clone())
                .unwrap_or_else(|| "info".to_owned()),
        }
    }
}

/// Where the server can be reached from outside, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalUrl {
    pub url: String,
    pub host: String,
    pub port: u16,
}

impl ExternalUrl {
    pub fn parse(raw: &str) -> Result<Self, ConfigError> {
        let invalid = |message: &str| ConfigError::Invalid {
            key: "external_url",
            message: format!("{raw:?}: {message}"),
        };
        let url = url::Url::parse(raw).map_err(|e| invalid(&e.to_string()))?;
        if url.scheme() != "https" {
            return Err(invalid("must start with https://"));
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            None => return Err(invalid("has no host")),
        };
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("must not have a path, query or fragment"));
        }
        let port = url.port_or_known_default().unwrap_or(443);
        let mut text = url.to_string();
        if text.ends_with('/') {
            text.pop();
        }
        Ok(Self {
            url: text,
            host,
            port,
        })
    }
}

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub external_url: ExternalUrl,
    /// Operator-supplied certificate chain and key, instead of ztka's own.
    pub tls_files: Option<(PathBuf, PathBuf)>,
    pub initial_admin_password: Option<Secret>,
    pub shutdown_grace: Duration,
    pub handshake_timeout: Duration,
    pub audit: AuditOptions,
    pub agents: AgentOptions,
    /// Busy polling after relayed traffic, in microseconds; `None` for the default.
    pub busy_poll_us: Option<u64>,
}

impl ServeConfig {
    pub fn resolve(file: &FileConfig, args: &ServeArgs) -> Result<Self, ConfigError> {
        // Used before the runtime starts (`main`); checked here too, for `config check`.
        serve_threads(file, args)?;
        let data_dir = resolve_data_dir(file, args.data.data_dir.as_ref());
        let listen_raw = args
            .listen
            .map(|a| a.to_string())
            .or_else(|| file.server.listen.clone())
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen = listen_raw.parse().map_err(|_| ConfigError::Invalid {
            key: "listen",
            message: format!("{listen_raw:?} is not an address like 127.0.0.1:8443"),
        })?;
        let external_url = ExternalUrl::parse(
            args.external_url
                .as_deref()
                .or(file.server.external_url.as_deref())
                .unwrap_or(DEFAULT_EXTERNAL_URL),
        )?;
        let cert = args
            .tls_cert
            .clone()
            .or_else(|| file.server.tls_cert.clone());
        let key = args.tls_key.clone().or_else(|| file.server.tls_key.clone());
        let tls_files = match (cert, key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::Invalid {
                    key: "tls_key",
                    message: "tls_cert is set but tls_key is not".into(),
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::Invalid {
                    key: "tls_cert",
                    message: "tls_key is set but tls_cert is not".into(),
                });
            }
        };
        let initial_admin_password = secret(
            "initial_admin_password",
            std::env::var("ZTKA_INITIAL_ADMIN_PASSWORD").ok(),
            args.initial_admin_password_file.as_deref(),
            file.server.initial_admin_password.as_deref(),
            file.server.initial_admin_password_file.as_deref(),
        )?;
        Ok(Self {
            data_dir,
            listen,
            external_url,
            tls_files,
            initial_admin_password,
            shutdown_grace: Duration::from_secs(
                args.shutdown_grace
                    .or(file.server.shutdown_grace_secs)
                    .unwrap_or(10),
            ),
            handshake_timeout: Duration::from_secs(
                file.server.handshake_timeout_secs.unwrap_or(10).max(1),
            ),
            audit: file.audit.options(),
            agents: file.agents.options(args.agent_image.as_deref())?,
            busy_poll_us: match args.busy_poll_us.or(file.server.busy_poll_us) {
                Some(us) if us > crate::busy_poll::MAX_WINDOW_US => {
                    return Err(ConfigError::Invalid {
                        key: "server.busy_poll_us",
                        message: format!(
                            "{us} is more than {} microseconds",
                            crate::busy_poll::MAX_WINDOW_US
                        ),
                    });
                }
                us => us,
            },
        })
    }
}

/// The server's runtime worker count: `--threads`/`ZTKA_THREADS` (checked by clap), else
/// `[server] threads`; `None` leaves one per core. Read before the runtime starts.
pub fn serve_threads(file: &FileConfig, args: &ServeArgs) -> Result<Option<u16>, ConfigError> {
    match args.threads.or(file.server.threads) {
        Some(0) => Err(ConfigError::Invalid {
            key: "server.threads",
            message: "must be at least 1".into(),
        }),
        n => Ok(n),
    }
}

pub fn resolve_data_dir(file: &FileConfig, flag: Option<&PathBuf>) -> PathBuf {
    flag.cloned()
        .or_else(|| file.data_dir.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
}

/// Resolves a secret that may be given inline or as a file, in the usual precedence order:
/// environment/flag over file config, and for each source the value over the `_FILE` twin.
pub fn secret(
    key: &'static str,
    env_value: Option<String>,
    flag_file: Option<&Path>,
    file_value: Option<&str>,
    file_file: Option<&Path>,
) -> Result<Option<Secret>, ConfigError> {
    if let Some(v) = env_value.filter(|v| !v.is_empty()) {
        return Ok(Some(Secret(v)));
    }
    if let Some(path) = flag_file {
        return read_secret_file(key, path).map(Some);
    }
    if let Some(v) = file_value {
        return Ok(Some(Secret(v.to_owned())));
    }
    if let Some(path) = file_file {
        return read_secret_file(key, path).map(Some);
    }
    Ok(None)
}

pub fn read_secret_file(key: &'static str, path: &Path) -> Result<Secret, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
        key,
        path: path.to_owned(),
        source,
    })?;
    // A trailing newline from `echo` or an editor is not part of the secret.
    Ok(Secret(text.trim_end_matches(['\n', '\r']).to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_named() {
        let err = toml::from_str::<FileConfig>("[server]\nlisten = \"127.0.0.1:1\"\nlistne = 1\n")
            .map(|_| ())
            .map_err(|e| one_line(&e.to_string()))
            .unwrap_err();
        assert!(err.contains("listne"), "{err}");
    }

    #[test]
    fn precedence_defaults_file_flags() {
        let file: FileConfig = toml::from_str(
            "data_dir = \"/from-file\"\n[server]\nlisten = \"127.0.0.1:9000\"\nexternal_url = \"https://a.example:9000\"\n",
        )
        .unwrap();
        let mut args = ServeArgs::default();
        let c = ServeConfig::resolve(&file, &args).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/from-file"));
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.external_url.host, "a.example");

        args.listen = Some("127.0.0.1:9100".parse().unwrap());
        args.data.data_dir = Some("/from-flag".into());
        let c = ServeConfig::resolve(&file, &args).unwrap();
        assert_eq!(c.listen.port(), 9100);
        assert_eq!(c.data_dir, PathBuf::from("/from-flag"));

        let c = ServeConfig::resolve(&FileConfig::default(), &ServeArgs::default()).unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.external_url.url, DEFAULT_EXTERNAL_URL);
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    }

    #[test]
    fn busy_polling_comes_from_the_flag_then_the_file_and_is_bounded() {
        let file: FileConfig = toml::from_str("[server]\nbusy_poll_us = 0\n").unwrap();
        let mut args = ServeArgs::default();
        assert_eq!(
            ServeConfig::resolve(&file, &args).unwrap().busy_poll_us,
            Some(0)
        );
        args.busy_poll_us = Some(500);
        assert_eq!(
            ServeConfig::resolve(&file, &args).unwrap().busy_poll_us,
            Some(500)
        );
        let default = ServeConfig::resolve(&FileConfig::default(), &ServeArgs::default());
        assert_eq!(default.unwrap().busy_poll_us, None);
        let long: FileConfig = toml::from_str("[server]\nbusy_poll_us = 20000\n").unwrap();
        let err = ServeConfig::resolve(&long, &ServeArgs::default()).unwrap_err();
        assert!(err.to_string().contains("server.busy_poll_us"), "{err}");
    }

    #[test]
    fn server_threads_come_from_the_flag_then_the_file_and_zero_is_refused() {
        let file: FileConfig = toml::from_str("[server]\nthreads = 3\n").unwrap();
        let mut args = ServeArgs::default();
        assert_eq!(serve_threads(&file, &args).unwrap(), Some(3));
        args.threads = Some(1);
        assert_eq!(serve_threads(&file, &args).unwrap(), Some(1));
        let zero: FileConfig = toml::from_str("[server]\nthreads = 0\n").unwrap();
        let err = ServeConfig::resolve(&zero, &ServeArgs::default()).unwrap_err();
        assert!(err.to_string().contains("server.threads"), "{err}");
        assert_eq!(
            serve_threads(&FileConfig::default(), &ServeArgs::default()).unwrap(),
            None
        );
    }

    #[test]
    fn audit_retention_defaults_and_overrides() {
        let o = FileConfig::default().audit.options();
        assert_eq!(o.retention_max_age, Some(Duration::from_secs(365 * 86_400)));
        assert_eq!(o.retention_max_events, None);
        let file: FileConfig =
            toml::from_str("[audit]\nretention_days = 0\nretention_max_events = 1000\n").unwrap();
        let o = ServeConfig::resolve(&file, &ServeArgs::default())
            .unwrap()
            .audit;
        assert_eq!(o.retention_max_age, None);
        assert_eq!(o.retention_max_events, Some(1000));
        assert!(toml::from_str::<FileConfig>("[audit]\nretention = 1\n").is_err());
    }

    #[test]
    fn external_url_validation() {
        assert!(ExternalUrl::parse("http://x").is_err());
        assert!(ExternalUrl::parse("https://x/path").is_err());
        let u = ExternalUrl::parse("https://ztka.example.com").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("ztka.example.com", 443));
        let u = ExternalUrl::parse("https://10.0.0.1:8443/").unwrap();
        assert_eq!(u.url, "https://10.0.0.1:8443");
    }

    #[test]
    fn secret_file_and_redaction() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret-value\n").unwrap();
        let s = secret("x", None, Some(&p), None, None).unwrap().unwrap();
        assert_eq!(s.expose(), "s3cret-value");
        assert!(!format!("{s:?}").contains("s3cret"));
        let s = secret("x", Some("env".into()), Some(&p), None, None)
            .unwrap()
            .unwrap();
        assert_eq!(s.expose(), "env");
    }
}
