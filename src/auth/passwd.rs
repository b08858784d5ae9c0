//! `shardmq passwd`: manages a Mosquitto password file the way `mosquitto_passwd` does, so one file
//! serves both brokers.
//!
//! ```text
//! shardmq passwd [-H sha512-pbkdf2|sha512] [-c | -D] FILE USER        prompts for the password twice
//! shardmq passwd [-H sha512-pbkdf2|sha512] [-c] -b FILE USER PASSWORD
//! shardmq passwd -U FILE                                              hashes a user:plaintext file
//! ```
//!
//! `-c` creates (or overwrites) the file, `-D` deletes the user (exit 1 when not found), `-b` takes the
//! password from the command line. Without `-b` the password is read twice from the terminal with echo
//! off, or, when stdin is not a terminal, from two lines of stdin. One difference: `-U` keeps entries that
//! already hold a valid hash (`mosquitto_passwd -U` hashes them again, locking those users out).

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, ValueEnum};

use super::password_file::{PasswordFile, PasswordHash, SALT_BYTES};

#[derive(Parser, Debug)]
#[command(name = "shardmq passwd", about = "Manage a Mosquitto password file (like mosquitto_passwd)")]
struct Args {
    /// Create a new password file; overwrites an existing one.
    #[arg(short = 'c', conflicts_with_all = ["delete", "upgrade"])]
    create: bool,
    /// Batch mode: the password is the last argument.
    #[arg(short = 'b', conflicts_with_all = ["delete", "upgrade"])]
    batch: bool,
    /// Delete the user rather than adding or updating it.
    #[arg(short = 'D', conflicts_with = "upgrade")]
    delete: bool,
    /// Convert a file of user:plaintext lines to hashed passwords.
    #[arg(short = 'U')]
    upgrade: bool,
    /// Hash for new passwords: sha512-pbkdf2 ($7$, default) or sha512 ($6$, Mosquitto 1.6 and earlier).
    #[arg(short = 'H', value_enum, default_value_t = HashKind::Sha512Pbkdf2)]
    hash: HashKind,
    file: PathBuf,
    user: Option<String>,
    password: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum HashKind {
    #[value(name = "sha512-pbkdf2")]
    Sha512Pbkdf2,
    #[value(name = "sha512")]
    Sha512,
}

/// Runs `shardmq passwd`; `args` are the arguments after `passwd`.
pub fn main(args: Vec<String>) -> ExitCode {
    let args = match Args::try_parse_from(std::iter::once("shardmq passwd".to_string()).chain(args)) {
        Ok(args) => args,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("Error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    if args.upgrade {
        if args.user.is_some() {
            return Err("-U takes only the password file".into());
        }
        return upgrade(&args.file);
    }
    let user = args.user.as_deref().ok_or("a user name is needed")?;
    if user.is_empty() || user.contains(':') {
        return Err("user name must not be empty or contain the ':' character".into());
    }
    if args.password.is_some() && !args.batch {
        return Err("a password on the command line needs -b".into());
    }
    if args.delete {
        let mut file = load(&args.file)?;
        if !file.remove(user) {
            return Err(format!("user {user} not found in password file {}", args.file.display()));
        }
        return file.write(&args.file).map_err(|err| err.to_string());
    }
    let mut file = if args.create { PasswordFile::default() } else { load(&args.file)? };
    let password = match (&args.password, args.batch) {
        (Some(password), _) => password.clone(),
        (None, true) => return Err("-b needs the password as the last argument".into()),
        (None, false) => prompt_password()?,
    };
    let hash = match args.hash {
        HashKind::Sha512Pbkdf2 => PasswordHash::new_pbkdf2(password.as_bytes()),
        HashKind::Sha512 => {
            let mut salt = vec![0u8; SALT_BYTES];
            getrandom::fill(&mut salt).map_err(|err| format!("no random source: {err}"))?;
            PasswordHash::sha512_with(password.as_bytes(), salt)
        }
    };
    file.set(user, hash);
    file.write(&args.file).map_err(|err| err.to_string())
}

fn load(path: &Path) -> Result<PasswordFile, String> {
    PasswordFile::load(path).map_err(|err| err.to_string())
}

fn upgrade(path: &Path) -> Result<(), String> {
    let text =
        std::fs::read_to_string(path).map_err(|err| format!("cannot read password file {}: {err}", path.display()))?;
    let (file, already_hashed) = PasswordFile::parse_plaintext(&text, path).map_err(|err| err.to_string())?;
    for user in already_hashed {
        eprintln!("Warning: user {user} already has a hashed password; left as it is.");
    }
    file.write(path).map_err(|err| err.to_string())
}

/// The password, asked twice: from the terminal with echo off, else two lines of stdin.
fn prompt_password() -> Result<String, String> {
    let stdin = std::io::stdin();
    let terminal = stdin.is_terminal();
    let mut lines = stdin.lock();
    let mut ask = |prompt: &str| -> Result<String, String> {
        let mut stderr = std::io::stderr();
        let _ = write!(stderr, "{prompt}");
        let _ = stderr.flush();
        let _echo_off = terminal.then(EchoOff::new).flatten();
        let mut line = String::new();
        let read = lines.read_line(&mut line).map_err(|err| format!("cannot read the password: {err}"))?;
        if terminal {
            let _ = writeln!(stderr);
        }
        if read == 0 {
            return Err("no password given (end of input)".into());
        }
        Ok(line.trim_end_matches(['\n', '\r']).to_string())
    };
    let first = ask("Password: ")?;
    let second = ask("Reenter password: ")?;
    if first != second {
        return Err("Passwords do not match.".into());
    }
    Ok(first)
}

/// Turns terminal echo off on stdin while alive.
struct EchoOff {
    saved: libc::termios,
}

impl EchoOff {
    fn new() -> Option<EchoOff> {
        // SAFETY: tcgetattr/tcsetattr on stdin with a termios we own; failure leaves the terminal as it was.
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut saved) != 0 {
                return None;
            }
            let mut quiet = saved;
            quiet.c_lflag &= !libc::ECHO;
            (libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &quiet) == 0).then_some(EchoOff { saved })
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `new`.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved);
        }
    }
}
