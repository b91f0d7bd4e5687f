//! Starts a simulator and prints how to reach it; runs until interrupted.

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sim = kubesim::KubeSim::start(kubesim::Options::default()).await?;
    println!("url: {}", sim.url());
    println!("kubeconfig: {}", sim.kubeconfig_path().display());
    println!("token: {}", sim.admin_token());
    println!(
        "try: KUBECONFIG={} kubectl get ns",
        sim.kubeconfig_path().display()
    );
    tokio::signal::ctrl_c().await?;
    sim.stop();
    Ok(())
}
