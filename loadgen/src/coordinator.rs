//! One scenario run from start to summary: build the plan, split it over workers and threads, sample the
//! broker at the phase boundaries, merge, summarize; and the `--max` search that repeats runs at rising rates.

use std::sync::Arc;
use std::thread::JoinHandle;

use crate::broker_usage::{self, Sample, Samples};
use crate::cli::RunArgs;
use crate::clock::{now_ns, sleep_until_ns};
use crate::engine::{ConnSpec, ThreadReport};
use crate::plan::{self, placement, Scenario};
use crate::progress::{Progress, ProgressPrinter};
use crate::run::{run_job, run_workers, Job};
use crate::summary::{MaxStep, RunSummary};

/// Runs the scenario (once, or as a `--max` search), prints the summary and writes the output files.
pub fn execute(scenario: Scenario, args: &RunArgs) -> Result<(), String> {
    args.validate(scenario)?;
    let (summary, report) = if args.max { max_search(scenario, args)? } else { run_once(scenario, args, args.rate)? };
    summary.print();
    if let Some(dir) = &args.out {
        let name = args.name.clone().unwrap_or_else(|| scenario.name().to_string());
        let path = summary.write(dir, &name, &report)?;
        println!("  wrote {}", path.display());
    }
    Ok(())
}

fn max_search(scenario: Scenario, args: &RunArgs) -> Result<(RunSummary, ThreadReport), String> {
    let mut rate = args.rate;
    let mut steps: Vec<MaxStep> = Vec::new();
    let mut best: Option<(RunSummary, ThreadReport)> = None;
    for _ in 0..args.max_steps.max(1) {
        let (summary, report) = run_once(scenario, args, rate)?;
        let passed = summary.lost == 0 && summary.latency_us.p99 <= args.max_p99_us && summary.latency_us.count > 0;
        eprintln!(
            "max search: {rate:.0} msgs/s -> delivered {:.0}/s, p99 {} µs, lost {} ({})",
            summary.delivered_per_sec,
            summary.latency_us.p99,
            summary.lost,
            if passed { "ok" } else { "over the bound" }
        );
        steps.push(MaxStep {
            rate_target_per_sec: rate,
            delivered_per_sec: summary.delivered_per_sec,
            p99_us: summary.latency_us.p99,
            lost: summary.lost,
            passed,
        });
        if !passed {
            break;
        }
        best = Some((summary, report));
        rate *= args.max_step.max(1.01);
    }
    let (mut summary, report) = match best {
        Some(best) => best,
        None => run_once(scenario, args, args.rate)?,
    };
    summary.max_sustainable_rate_per_sec =
        steps.iter().filter(|step| step.passed).map(|step| step.rate_target_per_sec).reduce(f64::max);
    summary.max_steps = steps;
    Ok((summary, report))
}

pub fn run_once(scenario: Scenario, args: &RunArgs, rate_per_sec: f64) -> Result<(RunSummary, ThreadReport), String> {
    let broker_addr = args.broker_addr()?;
    let plan = plan::build(&args.plan_options(scenario, rate_per_sec));
    let (warmup_secs, duration_secs) = args.phases_secs(scenario);
    let mut summary = RunSummary {
        label: args.label.clone(),
        scenario: scenario.name().to_string(),
        command: std::env::args().skip(1).collect::<Vec<_>>().join(" "),
        started_unix_secs: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        mqtt_version: if args.mqtt_version == 5 { 5 } else { 4 },
        qos: args.qos,
        payload_bytes: args.payload_bytes,
        publishers: plan.publishers,
        subscribers: plan.subscribers,
        connections: plan.specs.len(),
        rate_target_per_sec: rate_per_sec,
        warmup_secs,
        duration_secs,
        workers: args.workers,
        threads: args.threads,
        ..RunSummary::default()
    };
    let pid = args.broker_pid;
    let mut samples = Samples::default();
    if let Some(pid) = pid {
        samples.baseline = broker_usage::sample(pid).ok_or_else(|| format!("--broker-pid {pid}: no such process"))?;
    }
    let progress: Vec<Arc<Progress>> = (0..args.workers * args.threads).map(|_| Arc::default()).collect();
    let printer =
        (!args.quiet && duration_secs + warmup_secs >= 3.0).then(|| ProgressPrinter::start(progress.clone(), false));
    let (warmup_ns, duration_ns) = ((warmup_secs * 1e9) as u64, (duration_secs * 1e9) as u64);
    let mut sampler: Option<JoinHandle<Vec<Sample>>> = None;
    let engine_settings = args.engine_settings(scenario, broker_addr, 0);
    let start = |ready: Result<(), String>| -> Option<u64> {
        ready.ok()?;
        let t0_ns = now_ns() + 20_000_000;
        if let Some(pid) = pid {
            samples.connected = broker_usage::sample(pid).unwrap_or_default();
            let measure_end_ns = t0_ns + warmup_ns + duration_ns;
            let mut times = vec![t0_ns, t0_ns + warmup_ns, measure_end_ns];
            if engine_settings.reconnect && engine_settings.probe_ns > 0 {
                // The end of the post-storm probe (see Engine::reconnect_storm): everyone reconnected again.
                let storm_start_ns = measure_end_ns + engine_settings.drain_max_ns;
                times.push(storm_start_ns + engine_settings.reconnect_settle_ns + engine_settings.probe_ns);
            }
            sampler = Some(spawn_sampler(pid, times));
        }
        Some(t0_ns)
    };
    let mut jobs = split_jobs(plan.specs, args, scenario, broker_addr);
    let report =
        if args.workers == 1 { run_job(jobs.remove(0), &progress, start) } else { run_workers(jobs, &progress, start) };
    drop(printer);
    let report = report?;
    summary.absorb(&report, plan.deliveries_per_message);
    if let (Some(pid), Some(sampler)) = (pid, sampler) {
        let mut taken = sampler.join().map_err(|_| "broker sampler panicked")?.into_iter();
        samples.warmup_start = taken.next().unwrap_or_default();
        samples.measure_start = taken.next().unwrap_or_default();
        samples.measure_end = taken.next().unwrap_or_default();
        samples.after_reconnect = taken.next();
        summary.broker = Some(samples.usage(pid, &report.counters));
    }
    Ok((summary, report))
}

/// One job per worker process, its connections dealt round-robin over its threads.
fn split_jobs(specs: Vec<ConnSpec>, args: &RunArgs, scenario: Scenario, broker: std::net::SocketAddr) -> Vec<Job> {
    let mut jobs: Vec<Job> = (0..args.workers)
        .map(|worker| Job {
            settings: args.engine_settings(scenario, broker, worker),
            threads: vec![Vec::new(); args.threads],
        })
        .collect();
    for (index, spec) in specs.into_iter().enumerate() {
        let (worker, thread) = placement(index, args.workers, args.threads);
        jobs[worker].threads[thread].push(spec);
    }
    jobs
}

/// Samples the broker at each of `times_ns` (absolute, ascending).
fn spawn_sampler(pid: u32, times_ns: Vec<u64>) -> JoinHandle<Vec<Sample>> {
    std::thread::spawn(move || {
        times_ns
            .into_iter()
            .map(|at_ns| {
                sleep_until_ns(at_ns);
                broker_usage::sample(pid).unwrap_or_default()
            })
            .collect()
    })
}
