//! The host side of the `neotenant:plugin` interfaces. Every function checks the
//! installation's grants first; an ungranted interface answers an error and does nothing.
//! WASI is linked with an empty context: no arguments, environment, preopened directories
//! or sockets; stdout/stderr are discarded; clocks and randomness are the only WASI
//! services a guest gets (the Rust standard library needs them).

use std::collections::HashMap;

use futures::future::BoxFuture;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::rt::neotenant::plugin::{config, events, http, kv, logging, types};
use crate::limits::Limiter;
use crate::{CallCtx, Limits};

/// Key-value storage for one installation, provided by the caller.
pub trait Kv: Send + Sync {
    fn get(&self, key: String) -> BoxFuture<'static, Result<Option<Vec<u8>>, String>>;
    fn set(&self, key: String, value: Vec<u8>) -> BoxFuture<'static, Result<(), String>>;
    fn delete(&self, key: String) -> BoxFuture<'static, Result<(), String>>;
    fn keys(&self, prefix: String, limit: u32) -> BoxFuture<'static, Result<Vec<String>, String>>;
}

/// An event a plugin emitted; the caller writes it to the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emitted {
    pub kind: String,
    pub subject: String,
    pub data: serde_json::Value,
}

/// Store data of one call.
pub struct Host {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: Limiter,
    call: CallCtx,
    caps: Limits,
    http: crate::Net,
    emitted: Vec<Emitted>,
    logged: u32,
}

impl Host {
    pub(crate) fn new(call: CallCtx, limits: Limiter, caps: Limits, http: crate::Net) -> Host {
        let wasi = WasiCtxBuilder::new()
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Host {
            wasi,
            table: ResourceTable::new(),
            limits,
            call,
            caps,
            http,
            emitted: Vec::new(),
            logged: 0,
        }
    }

    pub(crate) fn limits_mut(&mut self) -> &mut Limiter {
        &mut self.limits
    }

    pub(crate) fn take_emitted(self) -> Vec<Emitted> {
        self.emitted
    }

    fn denied(cap: &str) -> String {
        format!("capability `{cap}` was not granted to this plugin")
    }
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for Host {}

impl logging::Host for Host {
    async fn log(&mut self, level: logging::Level, message: String) {
        if !self.call.grants.logging {
            return;
        }
        self.logged += 1;
        if self.logged > self.caps.log_lines {
            if self.logged == self.caps.log_lines + 1 {
                tracing::warn!(tenant = %self.call.tenant, plugin = %self.call.plugin,
                               "plugin log lines beyond the per-call limit are dropped");
            }
            return;
        }
        let message: String = message.chars().take(2000).collect();
        let (tenant, plugin) = (&self.call.tenant, &self.call.plugin);
        match level {
            logging::Level::Debug => tracing::debug!(%tenant, %plugin, "{message}"),
            logging::Level::Info => tracing::info!(%tenant, %plugin, "{message}"),
            logging::Level::Warn => tracing::warn!(%tenant, %plugin, "{message}"),
            logging::Level::Error => tracing::error!(%tenant, %plugin, "{message}"),
        }
    }
}

impl config::Host for Host {
    async fn get(&mut self, key: String) -> Option<String> {
        self.call.config.get(&key).cloned()
    }
}

const KV_KEY_MAX: usize = 256;

impl kv::Host for Host {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, String> {
        if !self.call.grants.kv {
            return Err(Self::denied("kv"));
        }
        self.call.kv.get(key).await
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        if !self.call.grants.kv {
            return Err(Self::denied("kv"));
        }
        if key.is_empty() || key.len() > KV_KEY_MAX {
            return Err(format!("keys are 1 to {KV_KEY_MAX} bytes"));
        }
        if value.len() > self.caps.kv_value_bytes {
            return Err(format!(
                "values are at most {} bytes",
                self.caps.kv_value_bytes
            ));
        }
        self.call.kv.set(key, value).await
    }

    async fn delete(&mut self, key: String) -> Result<(), String> {
        if !self.call.grants.kv {
            return Err(Self::denied("kv"));
        }
        self.call.kv.delete(key).await
    }

    async fn keys(&mut self, prefix: String, limit: u32) -> Result<Vec<String>, String> {
        if !self.call.grants.kv {
            return Err(Self::denied("kv"));
        }
        self.call.kv.keys(prefix, limit.min(1000)).await
    }
}

impl events::Host for Host {
    async fn emit(&mut self, kind: String, subject: String, data: String) -> Result<(), String> {
        if !self.call.grants.events {
            return Err(Self::denied("events"));
        }
        if self.emitted.len() >= self.caps.emit_max {
            return Err(format!("at most {} events per call", self.caps.emit_max));
        }
        if kind.is_empty()
            || kind.len() > 50
            || !kind
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._".contains(&b))
        {
            return Err("kinds are 1 to 50 of a-z, 0-9, '.', '_'".into());
        }
        if subject.len() > 256 {
            return Err("subjects are at most 256 bytes".into());
        }
        if data.len() > self.caps.output_bytes {
            return Err(format!(
                "event data is at most {} bytes",
                self.caps.output_bytes
            ));
        }
        let data: serde_json::Value = match serde_json::from_str(&data) {
            Ok(v @ serde_json::Value::Object(_)) => v,
            _ => return Err("event data must be a JSON object".into()),
        };
        self.emitted.push(crate::Emitted {
            kind,
            subject,
            data,
        });
        Ok(())
    }
}

/// Whether `url` names a host (and port) on the allowlist. Entries are `host` (any port)
/// or `host:port`; hosts compare case-insensitively.
pub(crate) fn allowed(url: &url::Url, allow: &[String]) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.to_ascii_lowercase();
    let port = url.port_or_known_default();
    allow.iter().any(|entry| {
        let entry = entry.to_ascii_lowercase();
        match entry.rsplit_once(':').map(|(h, p)| (h, p.parse::<u16>())) {
            Some((h, Ok(p))) if !h.is_empty() && !h.ends_with(':') => h == host && Some(p) == port,
            _ => entry == host,
        }
    })
}

const HOP_BY_HOP: [&str; 8] = [
    "host",
    "connection",
    "content-length",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "te",
    "keep-alive",
];

impl http::Host for Host {
    async fn fetch(&mut self, req: http::Request) -> Result<http::Response, String> {
        if self.call.grants.http.is_empty() {
            return Err(Self::denied("http"));
        }
        let url = url::Url::parse(&req.url).map_err(|e| format!("bad URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("only http and https URLs".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("credentials in URLs are not allowed".into());
        }
        if !allowed(&url, &self.call.grants.http) {
            return Err(format!(
                "{} is not on the hosts the tenant approved for this plugin",
                url.host_str().unwrap_or("?")
            ));
        }
        if let Some(guard) = &self.http.guard
            && !guard.permits(&url)
        {
            return Err(format!(
                "{} is an address inside the platform's network",
                url.host_str().unwrap_or("?")
            ));
        }
        let method = reqwest::Method::from_bytes(req.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| "bad method".to_string())?;
        if req.body.len() > self.caps.http_body_bytes {
            return Err(format!(
                "request bodies are at most {} bytes",
                self.caps.http_body_bytes
            ));
        }
        let mut headers: HashMap<String, String> = HashMap::new();
        for (k, v) in req.headers {
            let k = k.to_ascii_lowercase();
            if !HOP_BY_HOP.contains(&k.as_str()) {
                headers.insert(k, v);
            }
        }
        let mut builder = self.http.client.request(method, url).body(req.body);
        for (k, v) in headers {
            builder = builder.header(k, v);
        }
        let mut resp = builder
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
            .collect();
        let mut body = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
        {
            if body.len() + chunk.len() > self.caps.http_body_bytes {
                return Err(format!(
                    "response bodies are at most {} bytes",
                    self.caps.http_body_bytes
                ));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(http::Response {
            status,
            headers,
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::allowed;

    #[test]
    fn allowlist_matches_host_and_port_exactly() {
        let allow = vec!["api.example.com".to_string(), "127.0.0.1:8099".to_string()];
        let ok = |u: &str| allowed(&url::Url::parse(u).unwrap(), &allow);
        assert!(ok("https://api.example.com/x"));
        assert!(ok("http://API.example.com:81/x"));
        assert!(ok("http://127.0.0.1:8099/hook"));
        assert!(!ok("http://127.0.0.1:8098/hook"));
        assert!(!ok("http://127.0.0.1/hook"));
        assert!(!ok("https://api.example.com.evil.test/"));
        assert!(!ok("https://evil.test/?api.example.com"));
        assert!(!ok("https://sub.api.example.com/"));
    }
}
