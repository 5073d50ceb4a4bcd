//! The top-level run of the harness: every selected scenario against each system, then the table, `report.json` and the charts.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;

use crate::bar::Bar;
use crate::cli::{Options, Peer};
use crate::outcome::Measured;
use crate::process::HermodLaunch;
use crate::report::{Report, ScenarioReport, SystemResult};
use crate::scenario::{ScenarioName, Spec};
use crate::{charts, font, hermod, nats};

/// Beyond the load's own limit (warm-up and duration, a backlog's fill),
/// how long one system's run of a scenario may take in all (start-up of a
/// cluster, waits for the subscription, draining).
const RUN_SLACK: Duration = Duration::from_secs(240);

/// Runs one scenario against one system, bounded in time.
async fn run_one<F>(spec: &Spec, run: F) -> SystemResult
where
    F: Future<Output = anyhow::Result<Measured>>,
{
    let limit = spec.load_limit() + RUN_SLACK;
    match tokio::time::timeout(limit, run).await {
        Ok(Ok(measured)) => SystemResult::Ran(Box::new(measured)),
        Ok(Err(error)) => SystemResult::Failed {
            error: format!("{error:#}"),
        },
        Err(_) => SystemResult::Failed {
            error: format!("did not finish within {limit:?}"),
        },
    }
}

/// Runs the selected scenarios, prints the table and writes the report and
/// charts; returns whether every run succeeded.
pub async fn run(options: Options) -> anyhow::Result<bool> {
    let names = options.selected()?;
    let settings = options.settings()?;
    let launch = HermodLaunch::detect(options.hermod_binary()?, settings.cache_mb).await;
    if !launch.cache_mb_passed
        && (names.contains(&ScenarioName::MemoryBacklog) || settings.cache_mb != launch.cache_mb)
    {
        eprintln!(
            "hermod-bench: `hermod serve` has no --cache-mb; Hermod runs with its own cache, assumed {} MiB",
            launch.cache_mb
        );
    }
    // Find the font before the runs, so a missing one fails in a second, not after minutes.
    let font = match &options.out {
        Some(_) => Some(font::load(options.font.as_deref())?),
        None => None,
    };
    let systems = if options.compare.is_some() { 2 } else { 1 };
    let bar = Bar::new((names.len() * systems) as u64);
    let mut scenarios = Vec::new();
    for name in names {
        let spec = Spec::new(name, &settings, &options);
        bar.start(name.as_str(), "hermod");
        let hermod = run_one(&spec, hermod::run(&spec, &launch)).await;
        bar.finish_one(name.as_str(), "hermod", &hermod);
        let peer = match options.compare {
            Some(Peer::Nats) => {
                bar.start(name.as_str(), "nats");
                let nats = run_one(&spec, nats::run(&spec, &options.nats_bin)).await;
                bar.finish_one(name.as_str(), "nats", &nats);
                Some(nats)
            }
            None => None,
        };
        scenarios.push(ScenarioReport::new(&spec, hermod, peer));
    }
    bar.clear();
    let report = Report::new(
        settings,
        options.compare,
        scenarios,
        &launch.binary,
        &options.nats_bin,
    )
    .await;
    println!("{}", report.table());
    if let (Some(dir), Some(font)) = (&options.out, font) {
        write_report(&report, dir)?;
        eprintln!("hermod-bench: wrote {}", dir.join("report.json").display());
        for chart in charts::draw_all(&report, dir, font)? {
            eprintln!("hermod-bench: wrote {}", chart.display());
        }
    }
    Ok(report.all_ran())
}

fn write_report(report: &Report, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("report.json");
    let json = serde_json::to_string_pretty(report)?;
    std::fs::write(&path, json + "\n").with_context(|| format!("writing {}", path.display()))
}
