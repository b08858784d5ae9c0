//! `POST /api/v1/publish` (one message) and `POST /api/v1/publish/batch` (`{"messages": [...]}`): the JSON
//! body becomes an `ExternalPublish`, the caller must be the admin token or a token that may publish to
//! every topic named, and the answer comes once a shard has routed the message(s)
//! (`ShardCore::publish_external_batch`) and, in `durability = "sync"`, once what that changed is on disk
//! (`ShardCore::when_durable`, the gate PUBACKs wait in). A batch is all or nothing: every message is
//! checked before any is routed.

use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::response::{ApiError, Response};
use super::router::{shard_error, Api, Caller, SHARD_TIMEOUT};
use super::server::Request;
use crate::broker::{ExternalPublish, ExternalPublishError, ExternalPublished};
use crate::protocol::{ByteStr, Properties, QoS};
use crate::transport::http::Status;

/// One message as the API takes it.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct PublishBody {
    pub topic: String,
    /// The payload as UTF-8 text; or `payload_base64` for bytes. Neither: an empty payload.
    #[serde(default)]
    pub payload: Option<String>,
    #[serde(default)]
    pub payload_base64: Option<String>,
    #[serde(default)]
    pub qos: u8,
    #[serde(default)]
    pub retain: bool,
    /// v5 Message Expiry Interval, seconds.
    #[serde(default)]
    pub message_expiry_interval: Option<u32>,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub response_topic: Option<String>,
    /// Base64.
    #[serde(default)]
    pub correlation_data: Option<String>,
    /// v5 Payload Format Indicator: 1 says the payload is UTF-8 (checked).
    #[serde(default)]
    pub payload_format_indicator: Option<u8>,
    #[serde(default)]
    pub user_properties: Vec<UserProperty>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct UserProperty {
    pub name: String,
    pub value: String,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    messages: Vec<PublishBody>,
}

#[derive(Serialize)]
struct Published {
    matched: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    diverted_to: Option<String>,
}

#[derive(Serialize)]
struct BatchPublished {
    results: Vec<Published>,
}

pub fn one(api: &Api, request: &Request) -> Result<Response, ApiError> {
    let caller = api.caller(request)?;
    let body: PublishBody = parse_json(&request.body)?;
    let message = body.into_publish().map_err(ApiError::bad_request)?;
    authorize(&caller, std::slice::from_ref(&message))?;
    let mut results = route(api, vec![message]).map_err(|(_, err)| err)?;
    let result = results.pop().ok_or_else(|| ApiError::unavailable("no answer from the shard"))?;
    Ok(Response::json(Status::OK, &published(result)))
}

pub fn batch(api: &Api, request: &Request) -> Result<Response, ApiError> {
    let caller = api.caller(request)?;
    let body: BatchBody = parse_json(&request.body)?;
    if body.messages.is_empty() || body.messages.len() > api.settings.batch_max_messages {
        let max = api.settings.batch_max_messages;
        return Err(ApiError::bad_request(format!("messages: between 1 and {max} (http.batch_max_messages)")));
    }
    let messages = body
        .messages
        .into_iter()
        .enumerate()
        .map(|(index, body)| {
            body.into_publish().map_err(|err| ApiError::bad_request(format!("messages[{index}]: {err}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    authorize(&caller, &messages)?;
    let results = route(api, messages)
        .map_err(|(index, err)| ApiError::new(err.status, format!("messages[{index}]: {}", err.message)))?;
    Ok(Response::json(Status::OK, &BatchPublished { results: results.into_iter().map(published).collect() }))
}

fn published(result: ExternalPublished) -> Published {
    Published { matched: result.matched, diverted_to: result.diverted_to }
}

/// The JSON body as `T`: 400 naming what is wrong (syntax, a type, an unknown or missing field).
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|err| ApiError::bad_request(format!("request body: {err}")))
}

fn authorize(caller: &Caller, messages: &[ExternalPublish]) -> Result<(), ApiError> {
    let Caller::Token(grant) = caller else { return Ok(()) };
    match messages.iter().find(|message| !grant.may_publish(&message.topic)) {
        Some(message) => Err(ApiError::forbidden(format!("this token may not publish to {:?}", message.topic))),
        None => Ok(()),
    }
}

/// Routes the messages on one shard and waits until they are durable; a refusal of any of them is a 400
/// naming the rule (503 for a full disk), with the index of the message refused. Routed but not durable
/// within `SHARD_TIMEOUT` is a 503: the message may still be kept (at least once, as a lost PUBACK).
fn route(api: &Api, messages: Vec<ExternalPublish>) -> Result<Vec<ExternalPublished>, (usize, ApiError)> {
    let shard = api.publish_shard();
    // QoS 0 without retain promises nothing to keep: it need not wait behind acks held for the disk.
    let keeps = messages.iter().any(|message| message.qos != QoS::AtMostOnce || message.retain);
    let (durable_tx, durable_rx) = std::sync::mpsc::sync_channel(1);
    let outcome = api
        .control
        .call(shard, SHARD_TIMEOUT, move |core, now| {
            let outcome = core.publish_external_batch(messages, now);
            if outcome.is_ok() && keeps {
                core.when_durable(Box::new(move || {
                    let _ = durable_tx.try_send(());
                }));
            }
            outcome
        })
        .map_err(|err| (0, shard_error(err)))?;
    let published = outcome.map_err(|(index, err)| match err {
        ExternalPublishError::DiskFull => (index, ApiError::unavailable(err.to_string())),
        err => (index, ApiError::bad_request(err.to_string())),
    })?;
    if !keeps {
        return Ok(published);
    }
    durable_rx.recv_timeout(SHARD_TIMEOUT).map_err(|_| {
        let detail = "published, but not confirmed on disk in time (persistence, durability = sync); it may be kept";
        (0, ApiError::unavailable(detail))
    })?;
    Ok(published)
}

impl PublishBody {
    fn into_publish(self) -> Result<ExternalPublish, String> {
        let base64 = base64::engine::general_purpose::STANDARD;
        let payload = match (self.payload, self.payload_base64) {
            (Some(_), Some(_)) => return Err("give payload or payload_base64, not both".into()),
            (Some(text), None) => Bytes::from(text),
            (None, Some(encoded)) => {
                Bytes::from(base64.decode(encoded).map_err(|err| format!("payload_base64: not base64 ({err})"))?)
            }
            (None, None) => Bytes::new(),
        };
        let qos = match self.qos {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            2 => QoS::ExactlyOnce,
            other => return Err(format!("qos: {other} is not 0, 1 or 2")),
        };
        if self.payload_format_indicator.is_some_and(|indicator| indicator > 1) {
            return Err("payload_format_indicator: 0 or 1".into());
        }
        let correlation_data = match self.correlation_data {
            Some(encoded) => Some(Bytes::from(
                base64.decode(encoded).map_err(|err| format!("correlation_data: not base64 ({err})"))?,
            )),
            None => None,
        };
        if let Some(topic) = &self.response_topic {
            crate::protocol::topic::validate_topic_name(topic)
                .map_err(|_| "response_topic: [MQTT-3.3.2-14] must be a topic name without wildcards".to_string())?;
        }
        let properties = Properties {
            payload_format_indicator: self.payload_format_indicator,
            content_type: self.content_type.map(ByteStr::from),
            response_topic: self.response_topic.map(ByteStr::from),
            correlation_data,
            user_properties: self
                .user_properties
                .into_iter()
                .map(|property| (ByteStr::from(property.name), ByteStr::from(property.value)))
                .collect(),
            ..Properties::default()
        };
        Ok(ExternalPublish {
            topic: self.topic,
            payload,
            qos,
            retain: self.retain,
            properties,
            message_expiry_interval_secs: self.message_expiry_interval,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<ExternalPublish, String> {
        parse_json::<PublishBody>(json.as_bytes()).map_err(|err| err.message)?.into_publish()
    }

    #[test]
    fn a_publish_body_carries_every_v5_field() {
        let publish = parse(
            r#"{"topic":"a/b","payload_base64":"AAE=","qos":1,"retain":true,"message_expiry_interval":30,
                "content_type":"application/octet-stream","response_topic":"r/1","correlation_data":"eHk=",
                "user_properties":[{"name":"k","value":"v"},{"name":"k","value":"w"}]}"#,
        )
        .unwrap();
        assert_eq!(publish.topic, "a/b");
        assert_eq!(&publish.payload[..], &[0, 1]);
        assert_eq!(
            (publish.qos, publish.retain, publish.message_expiry_interval_secs),
            (QoS::AtLeastOnce, true, Some(30))
        );
        assert_eq!(publish.properties.correlation_data.as_deref(), Some(&b"xy"[..]));
        assert_eq!(publish.properties.user_properties.len(), 2);
        assert_eq!(parse(r#"{"topic":"t","payload":"héllo"}"#).unwrap().payload, Bytes::from("héllo"));
    }

    #[test]
    fn bad_bodies_are_refused_naming_the_field() {
        for (body, expected) in [
            (r#"{"topic":"t","qos":3}"#, "qos"),
            (r#"{"topic":"t","qos":"1"}"#, "invalid type"),
            (r#"{"topic":"t","colour":"red"}"#, "unknown field"),
            (r#"{"payload":"x"}"#, "missing field `topic`"),
            (r#"{"topic":"t","payload":"x","payload_base64":"eA=="}"#, "not both"),
            (r#"{"topic":"t","payload_base64":"!!"}"#, "payload_base64"),
            (r#"{"topic":"t","response_topic":"a/+"}"#, "response_topic"),
            (r#"{"topic":"t""#, "EOF"),
        ] {
            let err = parse(body).unwrap_err();
            assert!(err.contains(expected), "{body}: {err}");
        }
    }
}
