//! The shardmq broker binary: `shardmq [--config FILE | --mosquitto-config FILE] [--shards N]
//! [--listen ADDR:PORT]`, `shardmq config default`, `shardmq passwd ...` (see `shardmq --help`).

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use shardmq::config::{Cli, Command, Config, ConfigCommand, LoadedConfig, DEFAULT_CONFIG_TOML};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    shardmq::shard::idle_trim::set_allocator_hook(collect_free_pages);
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Config { action: ConfigCommand::Default }) => {
            print!("{DEFAULT_CONFIG_TOML}");
            ExitCode::SUCCESS
        }
        Some(Command::Passwd { args }) => passwd(args),
        None => run(&cli.run),
    }
}

/// A quiet shard's allocator hook: mimalloc frees the calling thread's empty pages and purges what it
/// freed (without `force`: it does not wait for other threads' deferred frees).
fn collect_free_pages() {
    // SAFETY: mi_collect takes no pointer; it works on the calling thread's own heap.
    unsafe { libmimalloc_sys::mi_collect(false) }
}

/// Transparent huge pages off for this process (`PR_SET_THP_DISABLE`), unless `MIMALLOC_ALLOW_THP` is
/// set. mimalloc asks for huge pages on its arenas (`MADV_HUGEPAGE`), and then one small long-lived
/// allocation pins 2 MiB: measured with 5,000 idle connections on one shard, 4.2 KB of RSS per connection
/// with them and ~1 KB without, and 7 MiB more at start (perf/SCALE.md, "Where an idle connection's bytes
/// go"). A broker's heap is many small objects; the TLB saving does not pay for that. It runs as an ELF
/// constructor ahead of mimalloc's own (priority 101), so no page is faulted in before it; in `main` the
/// first allocations of the runtime would already have taken two huge pages. Allocates nothing.
extern "C" fn disable_transparent_huge_pages() {
    // SAFETY: getenv with a NUL-terminated name, before any thread exists; prctl(PR_SET_THP_DISABLE) only
    // sets a flag of this process.
    unsafe {
        if libc::getenv(c"MIMALLOC_ALLOW_THP".as_ptr()).is_null() {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
}

#[used]
#[link_section = ".init_array.00100"]
static DISABLE_THP_AT_LOAD: extern "C" fn() = disable_transparent_huge_pages;

/// `shardmq passwd ARGS...`: Mosquitto password files (`shardmq::auth::passwd`).
fn passwd(args: Vec<String>) -> ExitCode {
    shardmq::auth::passwd::main(args)
}

fn run(args: &shardmq::config::RunArgs) -> ExitCode {
    let LoadedConfig { config, warnings } = match Config::load(args) {
        Ok(loaded) => loaded,
        Err(err) => return fail(&err),
    };
    init_logging(&config.log_level);
    for warning in &warnings {
        tracing::warn!("{warning}");
    }
    warn_if_open_to_anonymous_clients(&config, args.mosquitto_config.is_some());
    let http = config.http.clone();
    let tokens = config.mqtt.access.tokens().cloned();
    let sys_interval = std::time::Duration::from_secs(config.sys_interval_secs);
    let metrics_bind = config.metrics.bind.clone();
    let result = shardmq::shard::run(config, |listeners, control| {
        let mut stdout = std::io::stdout().lock();
        // The first line is the first listener as it always was (scripts read its port); others say
        // what they serve.
        for (index, listener) in listeners.iter().enumerate() {
            let _ = match index {
                0 => writeln!(stdout, "shardmq listening on {}", listener.addr),
                _ => writeln!(stdout, "shardmq listening on {} ({})", listener.addr, listener.transport.as_str()),
            };
            tracing::info!(addr = %listener.addr, transport = listener.transport.as_str(), "listening");
        }
        match shardmq::http::start(&http, tokens, control) {
            Ok(addrs) => {
                for (addr, scheme) in addrs {
                    let _ = writeln!(stdout, "shardmq listening on {addr} ({scheme})");
                    tracing::info!(%addr, scheme, "HTTP API listening");
                }
            }
            Err(err) => {
                tracing::error!("cannot start the HTTP API: {err}; stopping");
                control.stop_all();
            }
        }
        let started = shardmq::metrics::start(control, sys_interval, metrics_bind.as_deref());
        if let Some(addr) = started.metrics_addr {
            let _ = writeln!(stdout, "shardmq metrics on http://{addr}/metrics, dashboard on http://{addr}/");
            tracing::info!(%addr, "serving /metrics and the dashboard");
        }
        // Last line of the start: every listener above (MQTT, HTTP API, metrics) is bound and serving.
        let _ = writeln!(stdout, "shardmq ready");
        let _ = stdout.flush();
        tracing::info!("all shards accepting");
    });
    match result {
        Ok(()) => {
            tracing::info!("shut down");
            ExitCode::SUCCESS
        }
        Err(err) => fail(&err),
    }
}

/// One line at start when clients on other machines may connect without credentials, saying how to
/// require passwords in the kind of file in use.
fn warn_if_open_to_anonymous_clients(config: &Config, from_mosquitto_conf: bool) {
    let Ok(open) = config.anonymous_remote_listeners() else {
        return;
    };
    if open.is_empty() {
        return;
    }
    let binds: Vec<&str> = open.iter().map(|listener| listener.bind.as_str()).collect();
    let fix = if from_mosquitto_conf {
        "name it with `password_file` and set `allow_anonymous false` in mosquitto.conf"
    } else {
        "name it in `[auth] password_file` and set `[auth] allow_anonymous = false`"
    };
    tracing::warn!(
        "anonymous clients may connect from other machines on {}: create a password file with `shardmq passwd`, {fix}",
        binds.join(", ")
    );
}

/// Prints each line of the error on its own `shardmq:` line (a mosquitto.conf error lists every
/// directive, one line each).
fn fail(err: &dyn std::fmt::Display) -> ExitCode {
    for line in err.to_string().lines() {
        eprintln!("shardmq: {line}");
    }
    ExitCode::FAILURE
}

/// Logs to stderr; `RUST_LOG` wins over the config's `log_level`. Colour only on a terminal, and never
/// with `NO_COLOR` set (https://no-color.org), so log files and pipes get plain text.
fn init_logging(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    let ansi = std::io::stderr().is_terminal() && !no_color;
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
}
