//! The runtime end to end: the real binary on 127.0.0.1 port 0 with 2 shards prints its listening line,
//! carries a publish between clients homed on different shards, and exits 0 on SIGTERM after telling a v5
//! client the server is shutting down.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use shardmq::broker::home_shard;

const SHARDS: usize = 2;
const WAIT: Duration = Duration::from_secs(10);

struct Broker {
    child: Child,
    port: u16,
}

impl Broker {
    fn start() -> Broker {
        let mut child = Command::new(env!("CARGO_BIN_EXE_shardmq"))
            .args(["--listen", "127.0.0.1:0", "--shards", "2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start shardmq");
        let stdout = child.stdout.take().expect("stdout piped");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read listening line");
        let port = line
            .trim()
            .strip_prefix("shardmq listening on 127.0.0.1:")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .expect("port number");
        Broker { child, port }
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on the child we started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for shardmq") {
                return status;
            }
            assert!(Instant::now() < deadline, "shardmq did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client_id_on(shard: usize, prefix: &str) -> String {
    (0..).map(|n| format!("{prefix}-{}-{n}", std::process::id())).find(|id| home_shard(id, SHARDS) == shard).unwrap()
}

fn v4_client(port: u16, client_id: &str) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    AsyncClient::new(options, 16)
}

/// Polls until `wanted` matches an incoming packet.
async fn wait_for(events: &mut EventLoop, mut wanted: impl FnMut(&Packet) -> bool) -> Packet {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Event::Incoming(packet) = events.poll().await.expect("connection to shardmq") {
                if wanted(&packet) {
                    return packet;
                }
            }
        }
    })
    .await
    .expect("expected packet in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_crosses_shards_and_sigterm_exits_cleanly() {
    let mut broker = Broker::start();
    let (subscriber, mut sub_events) = v4_client(broker.port, &client_id_on(0, "smoke-sub"));
    let (publisher, mut pub_events) = v4_client(broker.port, &client_id_on(1, "smoke-pub"));
    wait_for(&mut sub_events, |packet| matches!(packet, Packet::ConnAck(_))).await;
    subscriber.subscribe("smoke/cross", QoS::AtLeastOnce).await.unwrap();
    wait_for(&mut sub_events, |packet| matches!(packet, Packet::SubAck(_))).await;

    wait_for(&mut pub_events, |packet| matches!(packet, Packet::ConnAck(_))).await;
    publisher.publish("smoke/cross", QoS::AtLeastOnce, false, "across shards").await.unwrap();
    let publisher_task = tokio::spawn(async move {
        wait_for(&mut pub_events, |packet| matches!(packet, Packet::PubAck(_))).await;
        pub_events
    });
    let delivered = wait_for(&mut sub_events, |packet| matches!(packet, Packet::Publish(_))).await;
    let Packet::Publish(publish) = delivered else { unreachable!() };
    assert_eq!(publish.topic, "smoke/cross");
    assert_eq!(&publish.payload[..], b"across shards");
    publisher_task.await.unwrap();

    let v5_id = client_id_on(1, "smoke-v5");
    let mut options = rumqttc::v5::MqttOptions::new(v5_id, "127.0.0.1", broker.port);
    options.set_keep_alive(Duration::from_secs(30));
    let (_v5_client, mut v5_events) = rumqttc::v5::AsyncClient::new(options, 16);
    let connack = tokio::time::timeout(WAIT, v5_events.poll()).await.unwrap().unwrap();
    assert!(matches!(connack, rumqttc::v5::Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::ConnAck(_))));

    let status = tokio::task::spawn_blocking(move || broker.terminate()).await.unwrap();
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");

    // rumqttc reports a server DISCONNECT as an error carrying its reason code.
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            if let Err(err) = v5_events.poll().await {
                return err;
            }
        }
    })
    .await
    .expect("v5 client sees the end of the connection");
    let rumqttc::v5::ConnectionError::MqttState(rumqttc::v5::StateError::ServerDisconnect { reason_code, .. }) = ended
    else {
        panic!("expected DISCONNECT before the socket closed, got {ended:?}");
    };
    assert_eq!(reason_code, rumqttc::v5::mqttbytes::v5::DisconnectReasonCode::ServerShuttingDown);
}
