//! The shardmq broker binary: `shardmq [--config FILE] [--shards N] [--listen ADDR:PORT]`.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use shardmq::config::{CliArgs, Config, USAGE};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = match CliArgs::parse(std::env::args().skip(1)) {
        Ok(cli) => cli,
        Err(err) => return fail(&err),
    };
    if cli.help {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let config = match Config::load(&cli) {
        Ok(config) => config,
        Err(err) => return fail(&err),
    };
    init_logging(&config.log_level);
    let result = shardmq::shard::run(config, |bound| {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "shardmq listening on {bound}");
        let _ = stdout.flush();
        tracing::info!(%bound, "all shards accepting");
    });
    match result {
        Ok(()) => {
            tracing::info!("shut down");
            ExitCode::SUCCESS
        }
        Err(err) => fail(&err),
    }
}

fn fail(err: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("shardmq: {err}");
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
