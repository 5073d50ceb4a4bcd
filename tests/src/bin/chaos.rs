//! `hermod-chaos`: runs the chaos suite once against a containerised
//! cluster and exits 0 only when no guarantee was broken (1: violations,
//! 2: the run itself failed). Normally started by `tests/chaos.sh`.

use std::path::PathBuf;
use std::process::ExitCode;

use hermod_tests::chaos::docker::DockerCluster;
use hermod_tests::chaos::{Options, run};

const USAGE: &str =
    "usage: hermod-chaos --dir DIR [--minutes N] [--nodes 3|5] [--seed S] [--image IMAGE] [--run-id ID]";

fn parse() -> anyhow::Result<Options> {
    let mut options = Options {
        minutes: 2.0,
        nodes: 3,
        seed: 0,
        image: "hermod:local".to_string(),
        run_id: format!("{}", std::process::id()),
        dir: PathBuf::new(),
    };
    let mut seed = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{flag} needs a value\n{USAGE}"))
        };
        match flag.as_str() {
            "--minutes" => options.minutes = value()?.parse()?,
            "--nodes" => options.nodes = value()?.parse()?,
            "--seed" => seed = Some(value()?.parse()?),
            "--image" => options.image = value()?,
            "--run-id" => options.run_id = value()?,
            "--dir" => options.dir = PathBuf::from(value()?),
            "-h" | "--help" => anyhow::bail!("{USAGE}"),
            other => anyhow::bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    anyhow::ensure!(
        options.nodes == 3 || options.nodes == 5,
        "--nodes: 3 or 5, not {}",
        options.nodes
    );
    anyhow::ensure!(options.minutes > 0.0, "--minutes must be positive");
    anyhow::ensure!(!options.dir.as_os_str().is_empty(), "--dir is required\n{USAGE}");
    options.seed = seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    Ok(options)
}

/// Resolves on SIGINT or SIGTERM.
async fn interrupted() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() -> ExitCode {
    let options = match parse() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("{e:#}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = std::fs::create_dir_all(&options.dir) {
        eprintln!("chaos: ERROR cannot create {}: {e}", options.dir.display());
        return ExitCode::from(2);
    }
    eprintln!(
        "chaos: seed {} ({} nodes, {} minutes of faults, image {}, run {})",
        options.seed, options.nodes, options.minutes, options.image, options.run_id
    );
    let mut cluster = match DockerCluster::start(&options.run_id, &options.image, options.nodes).await {
        Ok(cluster) => cluster,
        Err(e) => {
            println!(
                "chaos: ERROR seed={} the cluster did not start: {e:#}",
                options.seed
            );
            return ExitCode::from(2);
        }
    };
    let outcome = tokio::select! {
        outcome = run::run(&options, &mut cluster) => outcome,
        _ = interrupted() => Err(anyhow::anyhow!("interrupted")),
    };
    let code = match outcome {
        Ok(report) => {
            if let Err(e) = report.write(&options.dir) {
                eprintln!("chaos: cannot write the report: {e:#}");
            }
            eprint!("{}", report.summary());
            println!("{}", report.one_line(&options.dir));
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            for index in 0..cluster.len() {
                if let Ok(text) = cluster.logs(index).await {
                    let _ = std::fs::write(options.dir.join(format!("n{}.log", index + 1)), text);
                }
            }
            println!(
                "chaos: ERROR seed={} nodes={} {e:#} (node logs in {})",
                options.seed,
                options.nodes,
                options.dir.display()
            );
            ExitCode::from(2)
        }
    };
    cluster.remove();
    code
}
