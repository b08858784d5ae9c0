//! The command line (clap): run the broker with flags that override the config file, or a subcommand
//! (`config default`, `passwd`). `shardmq --help` is the user's reference for each flag.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// `shardmq [--config FILE | --mosquitto-config FILE] [--shards N] [--listen ADDR:PORT] [COMMAND]`
#[derive(Parser, Debug, PartialEq, Eq)]
#[command(
    name = "shardmq",
    version,
    about = "A thread-per-core MQTT 3.1 / 3.1.1 / 5.0 broker",
    long_about = "A thread-per-core MQTT 3.1 / 3.1.1 / 5.0 broker.\n\n\
        With no flags it listens for MQTT on 0.0.0.0:1883 and MQTT over WebSocket on 0.0.0.0:8083 \
        (path /mqtt), with one shard per CPU, and accepts anonymous clients (a warning says so at start). \
        Once every shard accepts it prints `shardmq listening on ADDR:PORT` on stdout; logs go to stderr \
        (RUST_LOG overrides `log_level`). SIGINT or SIGTERM shuts it down cleanly.",
    args_conflicts_with_subcommands = true,
    subcommand_value_name = "COMMAND"
)]
pub struct Cli {
    #[command(flatten)]
    pub run: RunArgs,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Flags of a broker run; each one overrides the file.
#[derive(Args, Debug, Default, Clone, PartialEq, Eq)]
pub struct RunArgs {
    /// Native TOML config file
    #[arg(
        short = 'c',
        long,
        value_name = "FILE",
        long_help = "Read the native TOML config file FILE. Every field is optional; \
            `shardmq config default` prints them all with their defaults. Without this flag (and without \
            --mosquitto-config) the built-in defaults apply."
    )]
    pub config: Option<PathBuf>,
    /// Mosquitto 2 mosquitto.conf to run from
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "config",
        long_help = "Read a Mosquitto 2.x mosquitto.conf (and the *.conf files of its include_dir) \
            instead of a native config: listeners, TLS files, allow_anonymous, password_file, acl_file, \
            per_listener_settings and the limits map to shardmq's settings, with Mosquitto 2's defaults \
            (no listener configured: localhost:1883 only). A directive shardmq does not support is named \
            with file:line at start: a warning when ignoring it is harmless, an error (no start) when \
            ignoring it would weaken security."
    )]
    pub mosquitto_config: Option<PathBuf>,
    /// Number of shards [default: CPUs in the affinity mask]
    #[arg(
        short = 's',
        long,
        value_name = "N",
        long_help = "Run N shards, each an executor pinned to one CPU of the process affinity mask \
            (more shards than CPUs share them). Default: one per CPU in the mask, so `taskset -c 0 shardmq` \
            runs one shard. Overrides `shards` in the file."
    )]
    pub shards: Option<usize>,
    /// Serve exactly one plain MQTT listener on ADDR:PORT
    #[arg(
        short = 'l',
        long,
        value_name = "ADDR:PORT",
        long_help = "Serve exactly one plain MQTT/TCP listener on ADDR:PORT, replacing `listen` and every \
            `[[listeners]]` entry of the file (its [auth] still applies). Port 0 picks a free port, \
            printed at start."
    )]
    pub listen: Option<String>,
}

#[derive(Subcommand, Debug, PartialEq, Eq)]
pub enum Command {
    /// Print configuration (`shardmq config default`)
    Config {
        #[command(subcommand)]
        action: ConfigCommand,
    },
    /// Create or edit a password file (Mosquitto format), like mosquitto_passwd
    #[command(disable_help_flag = true)]
    Passwd {
        /// Arguments for `shardmq passwd` (see `shardmq passwd --help`)
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "ARGS")]
        args: Vec<String>,
    },
}

#[derive(Subcommand, Debug, PartialEq, Eq)]
pub enum ConfigCommand {
    /// Print the full default TOML config, every field commented with its meaning, unit and default
    Default,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(list: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("shardmq").chain(list.iter().copied()))
    }

    #[test]
    fn cli_parses_every_flag_in_both_spellings() {
        let cli = parse(&["--listen", "127.0.0.1:0", "-s", "2", "--config=x.toml"]).unwrap();
        let expected = RunArgs {
            config: Some(PathBuf::from("x.toml")),
            mosquitto_config: None,
            shards: Some(2),
            listen: Some("127.0.0.1:0".into()),
        };
        assert_eq!(cli, Cli { run: expected, command: None });
        let cli = parse(&["--mosquitto-config", "m.conf", "--shards=3", "-l", "[::1]:1883"]).unwrap();
        assert_eq!(cli.run.mosquitto_config, Some(PathBuf::from("m.conf")));
        assert_eq!(cli.run.shards, Some(3));
        assert_eq!(cli.run.listen.as_deref(), Some("[::1]:1883"));
    }

    #[test]
    fn cli_rejects_unknown_flags_and_missing_or_bad_values() {
        assert!(parse(&["--bogus"]).unwrap_err().to_string().contains("--bogus"));
        assert!(parse(&["--shards"]).unwrap_err().to_string().contains("--shards"));
        assert!(parse(&["--shards", "x"]).unwrap_err().to_string().contains("--shards"));
    }

    #[test]
    fn config_and_mosquitto_config_exclude_each_other() {
        let err = parse(&["--config", "a.toml", "--mosquitto-config", "b.conf"]).unwrap_err().to_string();
        assert!(err.contains("--mosquitto-config") && err.contains("--config"), "{err}");
    }

    #[test]
    fn config_default_is_a_subcommand() {
        let cli = parse(&["config", "default"]).unwrap();
        assert_eq!(cli.command, Some(Command::Config { action: ConfigCommand::Default }));
    }

    #[test]
    fn passwd_gets_every_argument_after_it_untouched() {
        let cli = parse(&["passwd", "-c", "--help", "pwfile", "alice"]).unwrap();
        let args = ["-c", "--help", "pwfile", "alice"].map(String::from).to_vec();
        assert_eq!(cli.command, Some(Command::Passwd { args }));
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
