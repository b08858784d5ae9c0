//! The control seam (`shardmq::shard::Control`) of a broker running in this process: a job reaches each
//! shard's core on its own thread, its answers come back in shard order, a job's actions are carried
//! out (a client's session is seen from outside), and a stopped broker refuses jobs instead of hanging.

use std::io::{Read, Write};
use std::time::Duration;

use shardmq::config::Config;
use shardmq::shard::ControlError;

const TIMEOUT: Duration = Duration::from_secs(10);

fn start(shards: usize) -> shardmq::shard::RunningBroker {
    let config = Config {
        listen: Some("127.0.0.1:0".into()),
        shards: Some(shards),
        log_level: "warn".into(),
        ..Config::default()
    };
    shardmq::shard::start(config).expect("broker starts")
}

#[test]
fn a_job_runs_on_every_shard_and_answers_in_shard_order() {
    let broker = start(2);
    let control = broker.control().clone();
    assert_eq!(control.shard_count(), 2);
    let shards = control.call_all(TIMEOUT, |core, _| (core.shard(), std::thread::current().name().map(String::from)));
    let shards = shards.expect("every shard answers");
    assert_eq!(
        shards,
        vec![(0, Some("shard-0".to_string())), (1, Some("shard-1".to_string()))],
        "each job ran on its own shard's thread"
    );
    broker.stop();
    broker.join();
}

#[test]
fn a_connected_client_is_seen_by_a_job_on_its_shard() {
    let broker = start(1);
    let mut client = std::net::TcpStream::connect(broker.bound()).expect("connect");
    // 3.1.1 CONNECT, clean session, keep-alive 60 s, client id "seen".
    client.write_all(b"\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x04seen").expect("send CONNECT");
    let mut connack = [0u8; 4];
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    client.read_exact(&mut connack).expect("CONNACK");
    assert_eq!(connack, [0x20, 0x02, 0x00, 0x00]);
    let gauges = broker.control().call(0, TIMEOUT, |core, _| core.gauges()).expect("shard answers");
    assert_eq!((gauges.connections, gauges.sessions), (1, 1), "{gauges:?}");
    broker.stop();
    broker.join();
}

#[test]
fn a_stopped_broker_refuses_jobs() {
    let broker = start(1);
    let control = broker.control().clone();
    broker.stop();
    broker.join();
    assert_eq!(control.call(0, TIMEOUT, |core, _| core.shard()), Err(ControlError::Stopped(0)));
    assert_eq!(control.run_on(3, |_, _| {}), Err(ControlError::NoSuchShard(3)));
}
