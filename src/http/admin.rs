//! The admin endpoints (admin token only): connected clients (all shards, or one client on its home
//! shard), kicking a client (v5 DISCONNECT 0x98), sessions, retained messages (every shard holds them
//! all, so shard 0 answers) and their deletion, and per-shard stats.

use base64::Engine;
use serde::Serialize;

use super::response::{ApiError, Response};
use super::router::{shard_error, Api, SHARD_TIMEOUT};
use super::server::Request;
use crate::broker::{home_shard, ClientSummary, RetainedSummary, SessionSummary};
use crate::protocol::ProtocolVersion;
use crate::transport::http::Status;

/// Most entries one listing returns (`?limit=` lowers it).
const LIST_LIMIT_MAX: usize = 10_000;

#[derive(Serialize)]
struct ClientView {
    client_id: String,
    listener: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    address: Option<String>,
    protocol_version: &'static str,
    keep_alive: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    subscriptions: Vec<String>,
    shard: usize,
}

#[derive(Serialize)]
struct SessionView {
    client_id: String,
    connected: bool,
    expiry_interval: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_in: Option<u64>,
    subscriptions: Vec<String>,
    queued_messages: usize,
    inflight_messages: usize,
    shard: usize,
}

#[derive(Serialize)]
struct RetainedView {
    topic: String,
    qos: u8,
    payload_base64: String,
    payload_bytes: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<String>,
}

#[derive(Serialize)]
struct ShardStatsView {
    shard: usize,
    connections: usize,
    sessions: usize,
    retained_messages: usize,
    subscription_trie_nodes: usize,
    dropped_too_large: u64,
    dropped_queue_full: u64,
    dropped_slow_consumer: u64,
    dropped_expired: u64,
    dropped_offline_qos0: u64,
    denied_publishes: u64,
    denied_deliveries: u64,
}

#[derive(Serialize)]
struct Stats {
    connections: usize,
    sessions: usize,
    retained_messages: usize,
    shards: Vec<ShardStatsView>,
}

#[derive(Serialize)]
struct Listing<T> {
    items: Vec<T>,
    /// More existed than `limit`.
    truncated: bool,
}

fn version_name(version: ProtocolVersion) -> &'static str {
    match version {
        ProtocolVersion::V3_1 => "3.1",
        ProtocolVersion::V3_1_1 => "3.1.1",
        ProtocolVersion::V5 => "5.0",
    }
}

fn client_view(shard: usize, client: ClientSummary) -> ClientView {
    ClientView {
        client_id: client.client_id,
        listener: client.listener.0,
        address: client.address.map(|address| address.to_string()),
        protocol_version: version_name(client.protocol_version),
        keep_alive: client.keepalive_secs,
        username: client.username,
        subscriptions: client.subscriptions,
        shard,
    }
}

fn limit(request: &Request) -> Result<usize, ApiError> {
    match request.query("limit") {
        None => Ok(LIST_LIMIT_MAX),
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|limit| (1..=LIST_LIMIT_MAX).contains(limit))
            .ok_or_else(|| ApiError::bad_request(format!("limit: a number from 1 to {LIST_LIMIT_MAX}"))),
    }
}

fn listing<T: Serialize>(mut items: Vec<T>, limit: usize) -> Response {
    let truncated = items.len() > limit;
    items.truncate(limit);
    Response::json(Status::OK, &Listing { items, truncated })
}

pub fn clients(api: &Api, request: &Request) -> Result<Response, ApiError> {
    api.require_admin(request)?;
    let limit = limit(request)?;
    // Two jobs: the shard looks the addresses up between them (see ShardCore::want_peer_addresses).
    api.control.call_all(SHARD_TIMEOUT, |core, _| core.want_peer_addresses(None)).map_err(shard_error)?;
    let per_shard = api.control.call_all(SHARD_TIMEOUT, |core, _| core.connected_clients()).map_err(shard_error)?;
    let mut clients: Vec<ClientView> = per_shard
        .into_iter()
        .enumerate()
        .flat_map(|(shard, clients)| clients.into_iter().map(move |client| client_view(shard, client)))
        .collect();
    clients.sort_by(|a, b| a.client_id.cmp(&b.client_id));
    Ok(listing(clients, limit))
}

pub fn client(api: &Api, request: &Request, client_id: &str) -> Result<Response, ApiError> {
    api.require_admin(request)?;
    let shard = home_shard(client_id, api.control.shard_count());
    let id = client_id.to_string();
    api.control.call(shard, SHARD_TIMEOUT, move |core, _| core.want_peer_addresses(Some(&id))).map_err(shard_error)?;
    let id = client_id.to_string();
    let found =
        api.control.call(shard, SHARD_TIMEOUT, move |core, _| core.connected_client(&id)).map_err(shard_error)?;
    match found {
        Some(client) => Ok(Response::json(Status::OK, &client_view(shard, client))),
        None => Err(ApiError::not_found(format!("no connected client {client_id:?}"))),
    }
}

pub fn kick(api: &Api, request: &Request, client_id: &str) -> Result<Response, ApiError> {
    api.require_admin(request)?;
    let shard = home_shard(client_id, api.control.shard_count());
    let id = client_id.to_string();
    let kicked =
        api.control.call(shard, SHARD_TIMEOUT, move |core, now| core.kick_client(&id, now)).map_err(shard_error)?;
    if !kicked {
        return Err(ApiError::not_found(format!("no connected client {client_id:?}")));
    }
    Ok(Response::json(Status::OK, &serde_json::json!({ "client_id": client_id, "kicked": true })))
}

pub fn sessions(api: &Api, request: &Request) -> Result<Response, ApiError> {
    api.require_admin(request)?;
    let limit = limit(request)?;
    let per_shard =
        api.control.call_all(SHARD_TIMEOUT, |core, now| core.session_summaries(now)).map_err(shard_error)?;
    let mut sessions: Vec<SessionView> = per_shard
        .into_iter()
        .enumerate()
        .flat_map(|(shard, sessions)| {
            sessions.into_iter().map(move |session: SessionSummary| SessionView {
                client_id: session.client_id,
                connected: session.connected,
                expiry_interval: session.expiry_interval_secs,
                expires_in: session.expires_in_secs,
                subscriptions: session.subscriptions,
                queued_messages: session.queued_messages,
                inflight_messages: session.inflight_messages,
                shard,
            })
        })
        .collect();
    sessions.sort_by(|a, b| a.client_id.cmp(&b.client_id));
    Ok(listing(sessions, limit))
}

pub fn retained(api: &Api, request: &Request) -> Result<Response, ApiError> {
    api.require_admin(request)?;
    let limit = limit(request)?;
    let filter = request.query("filter").unwrap_or_else(|| "#".to_string());
    if crate::protocol::topic::validate_topic_filter(&filter).is_err() {
        return Err(ApiError::bad_request(format!("filter: {filter:?} is not a valid topic filter")));
    }
    let found = api
        .control
        .call(0, SHARD_TIMEOUT, move |core, now| core.retained_matching(&filter, now))
        .map_err(shard_error)?;
    let base64 = base64::engine::general_purpose::STANDARD;
    let items = found
        .into_iter()
        .map(|retained: RetainedSummary| RetainedView {
            topic: retained.topic,
            qos: retained.qos as u8,
            payload_bytes: retained.payload.len(),
            payload_base64: base64.encode(&retained.payload),
            content_type: retained.content_type,
        })
        .collect();
    Ok(listing(items, limit))
}

pub fn delete_retained(api: &Api, request: &Request, topic: String) -> Result<Response, ApiError> {
    api.require_admin(request)?;
    if crate::protocol::topic::validate_topic_name(&topic).is_err() {
        return Err(ApiError::bad_request(format!("{topic:?} is not a topic name")));
    }
    let name = topic.clone();
    let existed =
        api.control.call(0, SHARD_TIMEOUT, move |core, now| core.delete_retained(&name, now)).map_err(shard_error)?;
    if !existed {
        return Err(ApiError::not_found(format!("no retained message on {topic:?}")));
    }
    Ok(Response::json(Status::OK, &serde_json::json!({ "topic": topic, "deleted": true })))
}

pub fn stats(api: &Api, request: &Request) -> Result<Response, ApiError> {
    api.require_admin(request)?;
    let shards = api
        .control
        .call_all(SHARD_TIMEOUT, |core, _| {
            let (gauges, stats) = (core.gauges(), core.stats());
            ShardStatsView {
                shard: core.shard(),
                connections: gauges.connections,
                sessions: gauges.sessions,
                retained_messages: gauges.retained_messages,
                subscription_trie_nodes: gauges.subscription_trie_nodes,
                dropped_too_large: stats.dropped_too_large,
                dropped_queue_full: stats.dropped_queue_full,
                dropped_slow_consumer: stats.dropped_slow_consumer,
                dropped_expired: stats.dropped_expired,
                dropped_offline_qos0: stats.dropped_offline_qos0,
                denied_publishes: stats.denied_publishes,
                denied_deliveries: stats.denied_deliveries,
            }
        })
        .map_err(shard_error)?;
    let stats = Stats {
        connections: shards.iter().map(|shard| shard.connections).sum(),
        sessions: shards.iter().map(|shard| shard.sessions).sum(),
        retained_messages: shards.first().map_or(0, |shard| shard.retained_messages),
        shards,
    };
    Ok(Response::json(Status::OK, &stats))
}
