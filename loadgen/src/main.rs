//! loadgen: an open-loop MQTT load generator. Scenarios drive any broker and record delivery latency from
//! the intended send time in HdrHistograms; `compare` and `plot` turn run summaries into a table and SVG.

mod broker_usage;
mod churn;
mod cli;
mod client_shape;
mod clock;
mod coordinator;
mod engine;
mod histogram;
mod packets;
mod plan;
mod plot;
mod progress;
mod run;
mod sequence;
mod stamp;
mod summary;
mod timer;
mod transport;

use clap::Parser;

use cli::{Cli, Command};
use plan::Scenario;

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::FanIn(args) => coordinator::execute(Scenario::FanIn, &args),
        Command::FanOut(args) => coordinator::execute(Scenario::FanOut, &args),
        Command::P2p(args) => coordinator::execute(Scenario::P2p, &args),
        Command::Shared(args) => coordinator::execute(Scenario::Shared, &args),
        Command::ConnStorm(args) => coordinator::execute(Scenario::ConnStorm, &args),
        Command::Idle(args) => coordinator::execute(Scenario::Idle, &args),
        Command::Churn(args) => churn::execute(&args),
        Command::Compare { files, svg } => plot::compare(&files, svg),
        Command::Plot { file, svg } => plot::plot(&file, svg),
        Command::Worker => run::worker_main(),
    };
    if let Err(error) = result {
        eprintln!("loadgen: {error}");
        std::process::exit(1);
    }
}
