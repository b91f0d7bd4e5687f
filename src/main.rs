//! The `ztka` binary: parse the command line, install the crypto provider, start tracing,
//! dispatch. Exit codes: 0 success, 1 runtime failure, 2 bad usage or configuration.

use std::process::ExitCode;

use clap::Parser;
use ztka::cli::{AdminCommand, AuditCommand, Cli, Command, ConfigCommand, UserCommand};
use ztka::config::{FileConfig, LogConfig, ServeConfig};

/// The relay allocates and frees many small buffers per request on every worker thread;
/// mimalloc's per-thread heaps keep that cheaper than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    ztka::install_crypto_provider();
    let file = match FileConfig::load(cli.config.as_deref()) {
        Ok(f) => f,
        Err(e) => return usage(e),
    };
    ztka::telemetry::init(&LogConfig::resolve(
        &file.log,
        cli.log_format,
        cli.log_level.clone(),
    ));
    let threads = match &cli.command {
        Command::Serve(args) => ztka::config::serve_threads(&file, args),
        Command::Agent(args) => Ok(Some(args.threads.unwrap_or(1))),
        _ => Ok(None),
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    match threads {
        Ok(Some(n)) => {
            builder.worker_threads(n.into());
        }
        Ok(None) => {}
        Err(e) => return usage(e),
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return failure(format!("cannot start the async runtime: {e}")),
    };
    runtime.block_on(dispatch(cli.command, file))
}

async fn agent(args: &ztka::cli::AgentArgs) -> ExitCode {
    let config = match ztka::agent::AgentConfig::resolve(args) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    let shutdown = ztka::shutdown::Shutdown::new();
    if let Err(e) = shutdown.listen_for_signals() {
        return failure(format!("cannot install signal handlers: {e}"));
    }
    // On the runtime's workers, not the main thread: the tunnel connection then runs beside
    // the request handlers it spawns instead of every request crossing threads twice.
    match tokio::spawn(ztka::agent::run(config, shutdown.token())).await {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) if e.is_usage() => usage(e),
        Ok(Err(e)) => failure(e),
        Err(e) => failure(format!("the agent stopped unexpectedly: {e}")),
    }
}

async fn dispatch(command: Command, file: FileConfig) -> ExitCode {
    match command {
        Command::Serve(args) => {
            let config = match ServeConfig::resolve(&file, &args) {
                Ok(c) => c,
                Err(e) => return usage(e),
            };
            match ztka::serve::run(config).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) if e.is_usage() => usage(e),
                Err(e) => failure(e),
            }
        }
        Command::Agent(args) => agent(&args).await,
        Command::Admin(AdminCommand::ResetPassword(args)) => {
            let data_dir = ztka::config::resolve_data_dir(&file, args.data.data_dir.as_ref());
            match ztka::admin::reset_password(&data_dir, &args.user, args.password_file.as_deref())
            {
                Ok(Some(pw)) => {
                    println!("new password for {}: {}", args.user, pw.expose());
                    println!("it must be changed at next sign-in");
                    ExitCode::SUCCESS
                }
                Ok(None) => {
                    println!(
                        "password for {} reset; it must be changed at next sign-in",
                        args.user
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => usage(e),
            }
        }
        Command::Admin(AdminCommand::User(cmd)) => admin_user(&file, cmd),
        Command::Admin(AdminCommand::Grant(args)) => {
            let data_dir = ztka::config::resolve_data_dir(&file, args.data.data_dir.as_ref());
            match ztka::admin::grant(&data_dir, &args) {
                Ok(g) => {
                    println!("granted {} (grant {})", g.role.name(), g.id);
                    ExitCode::SUCCESS
                }
                Err(e) => usage(e),
            }
        }
        Command::Admin(AdminCommand::Audit(cmd)) => audit(cmd, &file).await,
        Command::Admin(AdminCommand::Backup(args)) => {
            let data_dir = ztka::config::resolve_data_dir(&file, args.data.data_dir.as_ref());
            let (dest, dir) = (args.dest.clone(), data_dir.clone());
            match tokio::task::spawn_blocking(move || ztka::backup::backup(&dir, &dest)).await {
                Ok(Ok(m)) => {
                    println!(
                        "backed up {} to {} ({}): {} users, {} audit events, audit head seq {} hash {}",
                        data_dir.display(),
                        args.dest.display(),
                        if m.online {
                            "from the running server"
                        } else {
                            "offline"
                        },
                        m.snapshot.users,
                        m.snapshot.audit_events,
                        m.snapshot.audit_head_seq,
                        m.snapshot.audit_head_hash
                    );
                    ExitCode::SUCCESS
                }
                Ok(Err(e)) if e.is_usage() => usage(e),
                Ok(Err(e)) => failure(e),
                Err(e) => failure(e),
            }
        }
        Command::Admin(AdminCommand::Restore(args)) => {
            let data_dir = ztka::config::resolve_data_dir(&file, args.data.data_dir.as_ref());
            let (src, dir) = (args.src.clone(), data_dir.clone());
            match tokio::task::spawn_blocking(move || ztka::backup::restore(&src, &dir)).await {
                Ok(Ok(r)) => {
                    let made = r
                        .manifest
                        .created_at
                        .format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_default();
                    println!(
                        "restored the backup made {made} into {}: {} users; audit {}",
                        data_dir.display(),
                        r.manifest.snapshot.users,
                        r.audit
                    );
                    ExitCode::SUCCESS
                }
                Ok(Err(e)) if e.is_usage() => usage(e),
                Ok(Err(e)) => failure(e),
                Err(e) => failure(e),
            }
        }
        Command::Admin(AdminCommand::Init(args)) => {
            let config = match ServeConfig::resolve(&file, &args) {
                Ok(c) => c,
                Err(e) => return usage(e),
            };
            let dir = config.data_dir.clone();
            match tokio::task::spawn_blocking(move || ztka::serve::initialize(&config)).await {
                Ok(Ok(created)) => {
                    println!("data directory {} is ready", dir.display());
                    println!(
                        "CA certificate: {}",
                        dir.join(ztka::pki::CA_CERT_FILE).display()
                    );
                    if created {
                        println!(
                            "created user \"admin\"; its password is in {} and must be changed at first sign-in",
                            dir.join(ztka::serve::INITIAL_ADMIN_PASSWORD_FILE).display()
                        );
                    }
                    ExitCode::SUCCESS
                }
                Ok(Err(e)) if e.is_usage() => usage(e),
                Ok(Err(e)) => failure(e),
                Err(e) => failure(e),
            }
        }
        Command::Healthcheck(args) => match ztka::healthcheck::run(&file, &args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => failure(format!("unhealthy: {e}")),
        },
        Command::Version => {
            println!("ztka {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Config(ConfigCommand::Check(args)) => match ServeConfig::resolve(&file, &args) {
            Ok(config) => {
                println!("configuration OK");
                println!("data_dir = {:?}", config.data_dir.display().to_string());
                println!("listen = \"{}\"", config.listen);
                println!("external_url = \"{}\"", config.external_url.url);
                if let Some((cert, key)) = &config.tls_files {
                    println!("tls_cert = {:?}", cert.display().to_string());
                    println!("tls_key = {:?}", key.display().to_string());
                }
                if config.initial_admin_password.is_some() {
                    println!("initial_admin_password = <set>");
                }
                println!("shutdown_grace_secs = {}", config.shutdown_grace.as_secs());
                match ztka::config::serve_threads(&file, &args).ok().flatten() {
                    Some(n) => println!("threads = {n}"),
                    None => println!("threads = {} (one per core)", available_cores()),
                }
                match config.busy_poll_us {
                    Some(us) => println!("busy_poll_us = {us}"),
                    None => println!(
                        "busy_poll_us = {} (default; off when the server has a CPU quota)",
                        ztka::busy_poll::DEFAULT_WINDOW.as_micros()
                    ),
                }
                match config.audit.retention_max_age {
                    Some(age) => println!("audit.retention_days = {}", age.as_secs() / 86_400),
                    None => println!("audit.retention_days = 0 (keep forever)"),
                }
                if let Some(n) = config.audit.retention_max_events {
                    println!("audit.retention_max_events = {n}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => usage(e),
        },
    }
}

fn admin_user(file: &FileConfig, cmd: UserCommand) -> ExitCode {
    let dir =
        |d: &ztka::cli::DataDirArgs| ztka::config::resolve_data_dir(file, d.data_dir.as_ref());
    let result = match cmd {
        UserCommand::Create(a) => ztka::admin::create_user(
            &dir(&a.data),
            &a.user,
            a.service,
            a.password_file.as_deref(),
            &a.display_name,
        )
        .map(|pw| match pw {
            Some(pw) => {
                println!("created user {} with password: {}", a.user, pw.expose());
                println!("it must be changed at first sign-in");
            }
            None => println!("created user {}", a.user),
        }),
        UserCommand::List(a) => ztka::admin::list_users(&dir(&a.data)).map(|users| {
            println!("{:<32} {:<8} {:<9} display name", "NAME", "KIND", "STATUS");
            for u in users {
                let kind = serde_json::to_value(u.kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                let status = if u.disabled { "disabled" } else { "active" };
                println!(
                    "{:<32} {:<8} {:<9} {}",
                    u.name, kind, status, u.display_name
                );
            }
        }),
        UserCommand::Disable(a) => ztka::admin::set_disabled(&dir(&a.data), &a.user, true)
            .map(|()| println!("disabled user {}", a.user)),
        UserCommand::Enable(a) => ztka::admin::set_disabled(&dir(&a.data), &a.user, false)
            .map(|()| println!("enabled user {}", a.user)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => usage(e),
    }
}

async fn audit(command: AuditCommand, file: &FileConfig) -> ExitCode {
    let data_dir = |args: &ztka::cli::DataDirArgs| {
        ztka::config::resolve_data_dir(file, args.data_dir.as_ref())
    };
    let admin_error = |e: ztka::admin::AdminError| {
        if e.is_usage() { usage(e) } else { failure(e) }
    };
    match command {
        AuditCommand::Verify(args) => match ztka::admin::audit_verify(&data_dir(&args)) {
            Ok(report) if report.is_intact() => {
                println!("{report}");
                ExitCode::SUCCESS
            }
            Ok(report) => failure(report),
            Err(e) => admin_error(e),
        },
        AuditCommand::Export(args) => {
            let query = ztka::domain::audit::AuditQuery {
                from: args.from,
                to: args.to,
                user: args.user,
                cluster: args.cluster,
                project: args.project,
                namespace: args.namespace,
                kind: args.kind,
                action: args.action,
                outcome: args.outcome,
                verb: args.verb,
                resource: args.resource,
                status: args.status,
                ..Default::default()
            };
            match ztka::admin::audit_export(&data_dir(&args.data), &query, args.output.as_deref()) {
                Ok(n) => {
                    if let Some(path) = &args.output {
                        eprintln!("ztka: exported {n} events to {}", path.display());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => admin_error(e),
            }
        }
        AuditCommand::StressAppend(args) => {
            let dir = data_dir(&args.data);
            let run = match args.fast_only {
                Some(n) => ztka::admin::audit_stress_fast(&dir, n).await,
                None => ztka::admin::audit_stress_append(&dir, args.writers, args.count).await,
            };
            match run {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => admin_error(e),
            }
        }
    }
}

fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn usage(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("ztka: {message}");
    ExitCode::from(2)
}

fn failure(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("ztka: {message}");
    ExitCode::from(1)
}
