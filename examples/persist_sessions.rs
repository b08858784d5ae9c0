//! Writes a data directory holding `COUNT` small persistent sessions (one QoS 1 subscription each,
//! expiry 1 day, offline since now), spread over `SHARDS` shards by the broker's own `home_shard`, so
//! `perf/restore_time.py` can measure start-up without connecting a million clients. The records are the
//! ones the broker journals (`SessionPut`, `Subscribe`, `SessionDetached`), written through the same log
//! code (`persist::open_shard_log`), so the broker reads them as its own.
//!
//!     cargo run --example persist_sessions -- DIR SHARDS COUNT

use std::time::{SystemTime, UNIX_EPOCH};

use shardmq::broker::home_shard;
use shardmq::persist::{append_frame, open_shard_log, LogDir, Record, StoredSubscription};
use shardmq::protocol::{ByteStr, QoS, SubscriptionOptions};

/// Frames handed to the log per append (the writer thread's batches are of this order too).
const BATCH_BYTES: usize = 1 << 20;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, shards, count] = args.as_slice() else {
        return Err("usage: persist_sessions DIR SHARDS COUNT".into());
    };
    let (shards, count): (usize, usize) = (shards.parse()?, count.parse()?);
    let root = LogDir::open(std::path::Path::new(dir), shards)?;
    let now_unix_ms = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as u64;
    let options = SubscriptionOptions { qos: QoS::AtLeastOnce, ..SubscriptionOptions::default() };
    for shard in 0..shards {
        let (mut log, state) = open_shard_log(&root, shard)?;
        if !state.sessions.is_empty() {
            return Err(format!("{dir}: shard {shard} already holds sessions").into());
        }
        let mut frames = Vec::with_capacity(BATCH_BYTES + 4096);
        let mut payload = Vec::new();
        let mut written = 0usize;
        for index in (0..count).filter(|index| home_shard(&format!("restore-{index}"), shards) == shard) {
            let client_id = ByteStr::from(format!("restore-{index}").as_str());
            let records = [
                Record::SessionPut {
                    client_id: client_id.clone(),
                    expiry_interval_secs: 86_400,
                    username: None,
                    listener: 0,
                    will: None,
                },
                Record::Subscribe {
                    client_id: client_id.clone(),
                    subscription: StoredSubscription {
                        filter: ByteStr::from(format!("restore/{index}/in").as_str()),
                        options,
                        subscription_id: 0,
                    },
                },
                Record::SessionDetached { client_id, at_unix_ms: now_unix_ms, will_kept: false },
            ];
            for record in records {
                payload.clear();
                record.encode(&mut payload);
                append_frame(&mut frames, &payload);
            }
            written += 1;
            if frames.len() >= BATCH_BYTES {
                log.append(&frames)?;
                frames.clear();
            }
        }
        log.append(&frames)?;
        log.sync()?;
        println!("shard {shard}: {written} sessions, {} log bytes", log.log_bytes());
    }
    Ok(())
}
