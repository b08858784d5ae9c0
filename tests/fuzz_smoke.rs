//! A short fuzz run under `cargo test`, on the stable toolchain: every fuzz target's check
//! (`shardmq::fuzz_checks`, the same function the cargo-fuzz target in `fuzz/` wraps) over its committed
//! seeds (`fuzz/corpus/<target>/seed-*`) and a fixed number of mutations of them: bit flips, byte
//! overwrites, truncations, insertions, deletions and splices of two seeds, drawn from a seeded splitmix64
//! generator, so every run tries the same inputs. No coverage guidance: this catches a check broken by a
//! change near the seeds in seconds; the libFuzzer runs (fuzz/README.md) search for hours.
//!
//! `FUZZ_SMOKE_MUTATIONS=N` changes the number of mutations per target and `FUZZ_SMOKE_SEED=S` the
//! generator's seed (for a longer local run). An input that fails is written to the temporary directory
//! and its path printed, so `cargo +nightly fuzz run <target> <path>` replays it.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use shardmq::fuzz_checks::{Check, TARGETS};

/// Mutations per target: core_sequence, the slowest in CPU, takes ~0.13 ms per input in the dev profile.
const MUTATIONS_DEFAULT: usize = 10_000;
/// `config` validates what parses, and validation resolves listener host names: a mutated name may go to
/// the DNS resolver (~1 in 70 inputs, 1-100 ms each), so it gets fewer.
const MUTATIONS_CONFIG: usize = 2_000;
/// Mutated inputs stay below this (the seeds are far smaller), so no single input runs long.
const INPUT_BYTES_MAX: usize = 4096;

/// splitmix64: small, seedable, and the same sequence on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform-enough in `0..bound` (`bound` > 0).
    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }

    /// A position in `0..=len`.
    fn position(&mut self, len: usize) -> usize {
        self.below(len + 1)
    }
}

/// Bytes that often sit on a boundary of a length, flag or variable-length integer.
const INTERESTING_BYTES: [u8; 10] = [0x00, 0x01, 0x02, 0x7f, 0x80, 0xff, 0xfe, 0x30, b'/', b'#'];

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target)
}

/// The committed seeds only (`seed-*`): what the fuzzer added locally is left out, so the run is the same
/// on every checkout.
fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let entries = std::fs::read_dir(&dir).unwrap_or_else(|err| panic!("{}: {err}", dir.display()));
    let mut seeds: Vec<(String, Vec<u8>)> = entries
        .map(|entry| entry.expect("a corpus entry").path())
        .filter(|path| path.file_name().and_then(|name| name.to_str()).is_some_and(|name| name.starts_with("seed-")))
        .map(|path| {
            let name = path.file_name().and_then(|name| name.to_str()).unwrap_or_default().to_string();
            (name, std::fs::read(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display())))
        })
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "{} holds no seed-* file", dir.display());
    seeds
}

/// One to four edits of a random seed.
fn mutate(rng: &mut Rng, seeds: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut input = seeds[rng.below(seeds.len())].1.clone();
    for _ in 0..=rng.below(4) {
        match rng.below(7) {
            0 | 1 if !input.is_empty() => {
                let at = rng.below(input.len());
                input[at] ^= 1 << rng.below(8);
            }
            2 if !input.is_empty() => {
                let at = rng.below(input.len());
                input[at] = if rng.below(2) == 0 { INTERESTING_BYTES[rng.below(10)] } else { rng.next() as u8 };
            }
            3 => input.truncate(rng.position(input.len())),
            4 => {
                let at = rng.position(input.len());
                let inserted: Vec<u8> = (0..=rng.below(16)).map(|_| rng.next() as u8).collect();
                input.splice(at..at, inserted);
            }
            5 if !input.is_empty() => {
                let from = rng.below(input.len());
                let to = from + rng.position((input.len() - from).min(32));
                input.drain(from..to);
            }
            _ => {
                // Splice: this input's head, another seed's tail.
                let other = &seeds[rng.below(seeds.len())].1;
                input.truncate(rng.position(input.len()));
                input.extend_from_slice(&other[rng.position(other.len())..]);
            }
        }
    }
    input.truncate(INPUT_BYTES_MAX);
    input
}

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    Some(text.parse().unwrap_or_else(|_| panic!("{name}={text} is not a number")))
}

/// Runs `check` on `input`; on a panic, saves the input and fails naming where it is.
fn run_one(target: &str, check: Check, what: &str, input: &[u8]) {
    if catch_unwind(AssertUnwindSafe(|| check(input))).is_ok() {
        return;
    }
    let saved = std::env::temp_dir().join(format!("fuzz-smoke-{target}-{}", what.replace(' ', "-")));
    let note = match std::fs::write(&saved, input) {
        Ok(()) => format!("saved as {}", saved.display()),
        Err(err) => format!("could not save it to {}: {err}", saved.display()),
    };
    panic!("fuzz target {target} failed on {what} ({} bytes, {note}): {input:02x?}", input.len());
}

fn smoke(target: &str) {
    let (_, check) = TARGETS.iter().find(|(name, _)| *name == target).expect("a known target");
    let seeds = seeds(target);
    for (name, data) in &seeds {
        run_one(target, *check, name, data);
    }
    let default = if target == "config" { MUTATIONS_CONFIG } else { MUTATIONS_DEFAULT };
    let mutations = env_number("FUZZ_SMOKE_MUTATIONS").map_or(default, |count| count as usize);
    // Each target draws its own sequence, so adding a seed to one target leaves the others' inputs alone.
    let target_salt = target.bytes().fold(0u64, |hash, byte| hash.wrapping_mul(31).wrapping_add(u64::from(byte)));
    let mut rng = Rng(env_number("FUZZ_SMOKE_SEED").unwrap_or(0x5eed) ^ target_salt);
    for mutation in 0..mutations {
        let input = mutate(&mut rng, &seeds);
        run_one(target, *check, &format!("mutation {mutation}"), &input);
    }
}

#[test]
fn every_fuzz_target_has_a_check_and_seeds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .expect("fuzz/fuzz_targets")
        .filter_map(|entry| entry.ok()?.path().file_stem()?.to_str().map(str::to_string))
        .collect();
    on_disk.sort();
    let checked: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
    assert_eq!(on_disk, checked, "fuzz/fuzz_targets/*.rs and shardmq::fuzz_checks::TARGETS differ");
    for target in checked {
        assert!(!seeds(target).is_empty());
    }
}

#[test]
fn mutations_are_the_same_every_run() {
    let seeds = vec![("seed-a".to_string(), b"hello world".to_vec()), ("seed-b".to_string(), vec![0x30, 0x02])];
    let draw = || {
        let mut rng = Rng(7);
        (0..50).map(|_| mutate(&mut rng, &seeds)).collect::<Vec<_>>()
    };
    let first = draw();
    assert_eq!(first, draw());
    assert!(
        first.iter().filter(|input| input.as_slice() != b"hello world" && input.as_slice() != [0x30, 0x02]).count()
            > 25
    );
}

/// Found by libFuzzer (core_sequence, 2026-12-03, 90 s in): a client connects at level 5 through raw bytes,
/// then sends a well-formed 3.1.1 CONNECT. The broker rightly answers the second CONNECT with a v5 DISCONNECT
/// ([MQTT-3.1.0-2]) and closes; the harness read that DISCONNECT at 3.1.1, because once the core had forgotten
/// the closed connection it fell back to the level of the client's well-formed CONNECTs. The harness now keeps
/// the level of the connection's first CONNECT.
#[test]
fn core_sequence_second_connect_after_a_raw_v5_connect() {
    shardmq::fuzz_checks::core_sequence::check(include_bytes!(
        "../fuzz/corpus/core_sequence/seed-regress-second-connect-after-raw-v5"
    ));
}

#[test]
fn acl_file() {
    smoke("acl_file");
}

#[test]
fn config() {
    smoke("config");
}

#[test]
fn core_sequence() {
    smoke("core_sequence");
}

#[test]
fn decode() {
    smoke("decode");
}

#[test]
fn dynsec() {
    smoke("dynsec");
}

#[test]
fn http_request() {
    smoke("http_request");
}

#[test]
fn password_file() {
    smoke("password_file");
}

#[test]
fn websocket() {
    smoke("websocket");
}
