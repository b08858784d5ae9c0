//! The PostgreSQL backend (`[auth.postgres]`), as mosquitto-go-auth's: `password_query` returns the
//! user's password hash (Mosquitto's `$7$` PBKDF2-SHA512 or `$6$` SHA-512, as in a password file), and
//! `acl_query` the user's rules as rows of (topic filter, access), access as mosquitto-go-auth numbers it:
//! 1 read, 2 write, 3 read and write, 4 subscribe (bits; read or subscribe allow a SUBSCRIBE, write a
//! PUBLISH). In the queries `$1` is the user name and `$2` the client id; in the returned filters `%u` and
//! `%c` are replaced by them. Each worker thread keeps its own connection (so `pool_connections_max` is
//! the worker count), opened on first use and again after any error.

use std::time::Duration;

use postgres::types::ToSql;
use postgres::{Client, NoTls};
use serde::Deserialize;

use super::super::password_file::PasswordHash;
use super::super::token::filter_covers;
use super::AclAction;

/// `[auth.postgres]`.
#[derive(Deserialize, Clone, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresAuthSettings {
    /// libpq-style connection string (`host=127.0.0.1 port=5432 user=mqtt password=... dbname=mqtt`) or
    /// a `postgresql://` URL.
    pub connection: String,
    /// Connections (one worker thread each) at most.
    pub pool_connections_max: usize,
    /// Returns one row whose first column is the password hash; no row: unknown user (refused).
    pub password_query: Option<String>,
    /// Returns rows of (topic filter text, access integer); `None`: the ACL file (if any) decides.
    pub acl_query: Option<String>,
    /// Connecting, and each query (`statement_timeout`), at most this long.
    pub timeout_ms: u64,
    pub cache_ttl_secs: u64,
    pub cache_max_entries: usize,
    pub queued_requests_max: usize,
    pub fail_open: bool,
}

impl Default for PostgresAuthSettings {
    fn default() -> Self {
        PostgresAuthSettings {
            connection: String::new(),
            pool_connections_max: 2,
            password_query: None,
            acl_query: None,
            timeout_ms: 2000,
            cache_ttl_secs: 60,
            cache_max_entries: 10_000,
            queued_requests_max: 1024,
            fail_open: false,
        }
    }
}

impl std::fmt::Debug for PostgresAuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connection string may hold a password.
        f.debug_struct("PostgresAuthSettings")
            .field("host", &self.host())
            .field("password_query", &self.password_query)
            .field("acl_query", &self.acl_query)
            .finish_non_exhaustive()
    }
}

impl PostgresAuthSettings {
    pub fn validate(&self) -> Result<postgres::Config, String> {
        let config: postgres::Config =
            self.connection.parse().map_err(|err| format!("auth.postgres.connection: {err}"))?;
        if self.password_query.is_none() && self.acl_query.is_none() {
            return Err("auth.postgres: set password_query, acl_query or both".into());
        }
        if self.timeout_ms == 0 || self.pool_connections_max == 0 || self.queued_requests_max == 0 {
            return Err(
                "auth.postgres: timeout_ms, pool_connections_max and queued_requests_max must be at least 1".into()
            );
        }
        Ok(config)
    }

    /// `host:port` for log lines (never the password).
    pub fn host(&self) -> String {
        let Ok(config) = self.connection.parse::<postgres::Config>() else { return "?".into() };
        let host = match config.get_hosts().first() {
            Some(postgres::config::Host::Tcp(host)) => host.clone(),
            #[cfg(unix)]
            Some(postgres::config::Host::Unix(path)) => path.display().to_string(),
            None => "localhost".into(),
        };
        format!("{host}:{}", config.get_ports().first().copied().unwrap_or(5432))
    }
}

/// The backend: its connection settings and queries, shared by the workers.
pub struct PostgresBackend {
    config: postgres::Config,
    settings: PostgresAuthSettings,
}

/// One worker's connection, kept between checks.
#[derive(Default)]
pub struct PostgresConnection {
    client: Option<Client>,
}

impl PostgresBackend {
    pub fn new(settings: PostgresAuthSettings) -> Result<PostgresBackend, String> {
        let mut config = settings.validate()?;
        config.connect_timeout(Duration::from_millis(settings.timeout_ms));
        config.options(&format!("-c statement_timeout={}", settings.timeout_ms));
        Ok(PostgresBackend { config, settings })
    }

    pub fn settings(&self) -> &PostgresAuthSettings {
        &self.settings
    }

    /// Does `password` match the user's stored hash? Err: the database failed (or holds no usable hash).
    pub fn login(
        &self,
        connection: &mut PostgresConnection,
        username: Option<&str>,
        client_id: &str,
        password: Option<&str>,
    ) -> Result<bool, String> {
        let (Some(query), Some(username)) = (self.settings.password_query.as_deref(), username) else {
            // No user name, nothing to look up: refused, as a password file refuses one it does not hold.
            return Ok(false);
        };
        let rows = self.query(connection, query, username, client_id)?;
        let Some(row) = rows.first() else { return Ok(false) };
        let stored: String = row.try_get(0).map_err(|err| format!("password_query's first column: {err}"))?;
        let hash = PasswordHash::parse(stored.trim()).map_err(|err| format!("stored hash of `{username}`: {err}"))?;
        Ok(hash.verify(password.unwrap_or_default().as_bytes()))
    }

    /// Does one of the user's rules grant `action` on `topic`?
    pub fn acl(
        &self,
        connection: &mut PostgresConnection,
        username: Option<&str>,
        client_id: &str,
        action: AclAction,
        topic: &str,
    ) -> Result<bool, String> {
        let Some(query) = self.settings.acl_query.as_deref() else { return Ok(true) };
        let rows = self.query(connection, query, username.unwrap_or_default(), client_id)?;
        let wanted = match action {
            AclAction::Publish => 2,
            AclAction::Subscribe => 1 | 4,
        };
        for row in &rows {
            let filter: String = row.try_get(0).map_err(|err| format!("acl_query's first column: {err}"))?;
            let access = access_of(row)?;
            let filter = filter.replace("%u", username.unwrap_or_default()).replace("%c", client_id);
            if access & wanted != 0 && filter_covers(&filter, topic) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Runs `query` with `$1` = user name and `$2` = client id (as many as it uses), connecting first when
    /// needed; any error drops the connection, so the next check connects again.
    fn query(
        &self,
        connection: &mut PostgresConnection,
        query: &str,
        username: &str,
        client_id: &str,
    ) -> Result<Vec<postgres::Row>, String> {
        let all: [&(dyn ToSql + Sync); 2] = [&username, &client_id];
        let used = if query.contains("$2") { 2 } else { usize::from(query.contains("$1")) };
        let params = &all[..used];
        // A connection kept from before a database restart fails on its first use: connect once more.
        if let Some(client) = connection.client.as_mut().filter(|client| !client.is_closed()) {
            match client.query(query, params) {
                Ok(rows) => return Ok(rows),
                Err(err) if !err.is_closed() => {
                    connection.client = None;
                    return Err(err.to_string());
                }
                Err(_) => {}
            }
        }
        connection.client = None;
        let mut client = self.config.connect(NoTls).map_err(|err| err.to_string())?;
        let rows = client.query(query, params).map_err(|err| err.to_string())?;
        connection.client = Some(client);
        Ok(rows)
    }
}

/// The access column: an integer of any width, or mosquitto-go-auth's numbers as text.
fn access_of(row: &postgres::Row) -> Result<i64, String> {
    if let Ok(value) = row.try_get::<_, i32>(1) {
        return Ok(i64::from(value));
    }
    if let Ok(value) = row.try_get::<_, i16>(1) {
        return Ok(i64::from(value));
    }
    if let Ok(value) = row.try_get::<_, i64>(1) {
        return Ok(value);
    }
    let text: String = row.try_get(1).map_err(|err| format!("acl_query's second column (access): {err}"))?;
    text.trim().parse().map_err(|_| format!("acl_query's access `{text}` is not 1, 2, 3 or 4"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_need_a_parsable_connection_and_a_query_and_logs_never_show_the_password() {
        let settings = PostgresAuthSettings {
            connection: "host=127.0.0.1 port=5544 user=mqtt password=hunter2 dbname=mqtt".into(),
            password_query: Some("SELECT hash FROM users WHERE name = $1".into()),
            ..PostgresAuthSettings::default()
        };
        assert!(settings.validate().is_ok());
        assert_eq!(settings.host(), "127.0.0.1:5544");
        assert!(!format!("{settings:?}").contains("hunter2"));
        assert!(PostgresAuthSettings { password_query: None, ..settings.clone() }.validate().is_err());
        assert!(PostgresAuthSettings { connection: "host=a port=notaport".into(), ..settings }.validate().is_err());
    }

    #[test]
    fn an_unreachable_database_is_an_error_not_a_denial() {
        let settings = PostgresAuthSettings {
            connection: "host=127.0.0.1 port=1 user=x dbname=x".into(),
            password_query: Some("SELECT 1".into()),
            timeout_ms: 300,
            ..PostgresAuthSettings::default()
        };
        let backend = PostgresBackend::new(settings).unwrap();
        let mut connection = PostgresConnection::default();
        assert!(backend.login(&mut connection, Some("alice"), "c", Some("pw")).is_err());
        assert_eq!(backend.login(&mut connection, None, "c", None), Ok(false), "no user name: nothing to look up");
    }
}
