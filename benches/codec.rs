//! Codec benchmarks: decode and encode of a 64-byte QoS 0 PUBLISH, a QoS 1 PUBLISH with MQTT 5 properties
//! and a CONNECT, and the encode-once fan-out path. Decoding runs over a read buffer holding many packets
//! back to back, as a connection's buffer does, so per-packet figures include splitting the packet off.
//!
//! Every benchmark runs twice: `wall/...` measures elapsed time (criterion's default) and `cpu/...` the
//! thread's CPU time, which stays meaningful when other processes share the cores.
//!
//! Run: `cargo bench --bench codec -- --warm-up-time 1 --measurement-time 3`

use bytes::{Bytes, BytesMut};
use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use shardmq::protocol::{
    decode_packet, encode_packet, Connect, Delivery, EncodedPublish, Packet, Properties, ProtocolVersion, Publish, QoS,
    Will,
};

const PACKETS_PER_BUFFER: usize = 1000;
const FAN_OUT_RECEIVERS: usize = 100;
const MAX_PACKET_SIZE_BYTES: u32 = 1 << 20;

/// A QoS 0 PUBLISH whose whole frame is 64 bytes (2 fixed header + 2 + 14 topic + 46 payload).
fn publish_qos0_64_bytes() -> Packet {
    Packet::Publish(Publish {
        topic: "sensors/42/tmp".into(),
        payload: Bytes::from(vec![b'x'; 46]),
        ..Publish::default()
    })
}

fn publish_qos1_with_properties() -> Packet {
    Packet::Publish(Publish {
        qos: QoS::AtLeastOnce,
        packet_id: 4242,
        topic: "factory/line-3/press/7/state".into(),
        properties: Properties {
            payload_format_indicator: Some(1),
            message_expiry_interval_secs: Some(3600),
            content_type: Some("application/json".into()),
            response_topic: Some("factory/line-3/replies".into()),
            correlation_data: Some(Bytes::from_static(b"req-000123")),
            user_properties: vec![("trace".into(), "a1b2c3d4".into())],
            ..Properties::default()
        },
        payload: Bytes::from(vec![b'{'; 128]),
        ..Publish::default()
    })
}

fn connect_v5() -> Packet {
    Packet::Connect(Box::new(Connect {
        version: ProtocolVersion::V5,
        clean_start: true,
        keep_alive_secs: 60,
        client_id: "bench-client-000001".into(),
        will: Some(Will {
            topic: "clients/bench-client-000001/status".into(),
            payload: Bytes::from_static(b"offline"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: Properties { will_delay_interval_secs: Some(5), ..Properties::default() },
        }),
        username: Some("bench".into()),
        password: Some(Bytes::from_static(b"secret-password")),
        properties: Properties {
            session_expiry_interval_secs: Some(300),
            receive_maximum: Some(100),
            topic_alias_maximum: Some(16),
            ..Properties::default()
        },
    }))
}

fn encoded(packet: &Packet, version: ProtocolVersion) -> BytesMut {
    let mut out = BytesMut::new();
    encode_packet(packet, version, &mut out).expect("encodes");
    out
}

/// Decodes every packet in `buf`, looking at each where it was returned (moving a large `Packet` out is the
/// caller's cost, not the decoder's).
fn decode_all(buf: &mut BytesMut, version: ProtocolVersion) {
    loop {
        let decoded = decode_packet(buf, version, MAX_PACKET_SIZE_BYTES);
        match &decoded {
            Ok(Some(_)) => {
                black_box(&decoded);
            }
            Ok(None) => return,
            Err(err) => panic!("decode failed: {err}"),
        }
    }
}

/// The calling thread's CPU time in nanoseconds (`CLOCK_THREAD_CPUTIME_ID`).
struct ThreadCpuTime;

fn thread_cpu_nanos() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid, writable timespec; the clock id is a constant the kernel supports.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

impl Measurement for ThreadCpuTime {
    type Intermediate = u64;
    type Value = u64;

    fn start(&self) -> u64 {
        thread_cpu_nanos()
    }
    fn end(&self, start: u64) -> u64 {
        thread_cpu_nanos() - start
    }
    fn add(&self, v1: &u64, v2: &u64) -> u64 {
        v1 + v2
    }
    fn zero(&self) -> u64 {
        0
    }
    fn to_f64(&self, value: &u64) -> f64 {
        *value as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        // Values are nanoseconds, as for wall time, so its formatter applies.
        WallTime.formatter()
    }
}

fn bench_packet<M: Measurement>(
    c: &mut Criterion<M>,
    clock: &str,
    name: &str,
    packet: &Packet,
    version: ProtocolVersion,
) {
    let frame = encoded(packet, version);
    let mut buffer = BytesMut::with_capacity(frame.len() * PACKETS_PER_BUFFER);
    for _ in 0..PACKETS_PER_BUFFER {
        buffer.extend_from_slice(&frame);
    }
    let mut group = c.benchmark_group(format!("{clock}/decode/{name}"));
    group.throughput(Throughput::Elements(PACKETS_PER_BUFFER as u64));
    group.bench_function("packets", |b| {
        b.iter_batched_ref(|| buffer.clone(), |buf| decode_all(buf, version), BatchSize::SmallInput)
    });
    group.throughput(Throughput::Bytes(buffer.len() as u64));
    group.bench_function("bytes", |b| {
        b.iter_batched_ref(|| buffer.clone(), |buf| decode_all(buf, version), BatchSize::SmallInput)
    });
    group.finish();

    let mut group = c.benchmark_group(format!("{clock}/encode/{name}"));
    let mut out = BytesMut::with_capacity(frame.len() * 2);
    group.throughput(Throughput::Elements(1));
    group.bench_function("packets", |b| {
        b.iter(|| {
            out.clear();
            encode_packet(black_box(packet), version, &mut out).expect("encodes");
        })
    });
    group.throughput(Throughput::Bytes(frame.len() as u64));
    group.bench_function("bytes", |b| {
        b.iter(|| {
            out.clear();
            encode_packet(black_box(packet), version, &mut out).expect("encodes");
        })
    });
    group.finish();
}

fn codec<M: Measurement>(c: &mut Criterion<M>, clock: &str) {
    let publish = publish_qos0_64_bytes();
    assert_eq!(encoded(&publish, ProtocolVersion::V3_1_1).len(), 64);
    bench_packet(c, clock, "publish_qos0_64B_v3.1.1", &publish, ProtocolVersion::V3_1_1);
    bench_packet(c, clock, "publish_qos1_props_v5", &publish_qos1_with_properties(), ProtocolVersion::V5);
    bench_packet(c, clock, "connect_v5", &connect_v5(), ProtocolVersion::V5);
}

/// One message to many receivers: each gets its own packet id and subscription identifier; the payload is
/// shared. Measured per receiver (header written into a reused scratch buffer, frame split off).
fn fan_out<M: Measurement>(c: &mut Criterion<M>, clock: &str) {
    let Packet::Publish(publish) = publish_qos1_with_properties() else { unreachable!("a PUBLISH") };
    let mut group = c.benchmark_group(format!("{clock}/fan_out/publish_qos1_props_v5"));
    group.throughput(Throughput::Elements(FAN_OUT_RECEIVERS as u64));
    let mut scratch = BytesMut::with_capacity(64 * 1024);
    group.bench_function("encode_once_per_receiver", |b| {
        b.iter(|| {
            let message = EncodedPublish::from_publish(black_box(&publish)).expect("prepares");
            for receiver in 0..FAN_OUT_RECEIVERS {
                let ids = [receiver as u32 + 1];
                let delivery = Delivery {
                    qos: QoS::AtLeastOnce,
                    packet_id: receiver as u16 + 1,
                    subscription_identifiers: &ids,
                    ..Delivery::default()
                };
                black_box(message.frame(ProtocolVersion::V5, &delivery, &mut scratch).expect("encodes"));
            }
        })
    });
    let mut out = BytesMut::with_capacity(64 * 1024);
    group.bench_function("full_encode_per_receiver", |b| {
        b.iter(|| {
            for receiver in 0..FAN_OUT_RECEIVERS {
                let mut copy = publish.clone();
                copy.packet_id = receiver as u16 + 1;
                copy.properties.subscription_identifiers.push(receiver as u32 + 1);
                out.clear();
                encode_packet(&Packet::Publish(copy), ProtocolVersion::V5, &mut out).expect("encodes");
                black_box(&out);
            }
        })
    });
    group.finish();
}

fn wall(c: &mut Criterion) {
    codec(c, "wall");
    fan_out(c, "wall");
}

fn cpu(c: &mut Criterion<ThreadCpuTime>) {
    codec(c, "cpu");
    fan_out(c, "cpu");
}

criterion_group!(wall_time, wall);
criterion_group! {
    name = cpu_time;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = cpu
}
criterion_main!(wall_time, cpu_time);
