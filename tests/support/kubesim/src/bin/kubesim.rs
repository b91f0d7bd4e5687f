//! Starts a simulator and prints how to reach it; runs until interrupted.
//!
//! kubesim [--listen 127.0.0.1:0] [--latency-ms N] [--token ADMIN_TOKEN]

use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut opts = kubesim::Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let value = args.next().ok_or_else(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--listen" => opts.listen = Some(value.parse()?),
            "--latency-ms" => opts.latency = Duration::from_millis(value.parse()?),
            "--token" => opts.admin_token = Some(value),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let sim = kubesim::KubeSim::start(opts).await?;
    println!("url: {}", sim.url());
    println!("kubeconfig: {}", sim.kubeconfig_path().display());
    println!("token: {}", sim.admin_token());
    println!(
        "try: KUBECONFIG={} kubectl get ns",
        sim.kubeconfig_path().display()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    // Dropping the simulator removes its temporary directory.
    sim.stop();
    Ok(())
}
