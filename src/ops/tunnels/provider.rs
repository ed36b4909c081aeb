//! PROVISIONAL stub: replaced by the providers branch.
#![allow(dead_code, unused_variables)]
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::config::TunnelsConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Ssh,
    Localtunnel,
    Cloudflared,
    Ngrok,
}
impl Provider {
    pub const ALL: [Provider; 4] = [
        Provider::Ssh,
        Provider::Localtunnel,
        Provider::Cloudflared,
        Provider::Ngrok,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Ssh => "ssh",
            Provider::Localtunnel => "localtunnel",
            Provider::Cloudflared => "cloudflared",
            Provider::Ngrok => "ngrok",
        }
    }
    pub fn parse(s: &str) -> Option<Provider> {
        Provider::ALL.into_iter().find(|p| p.as_str() == s)
    }
}
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StartOptions {}
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    BadOption(String),
}
pub fn options(p: Provider, v: &serde_json::Value) -> Result<StartOptions, ProviderError> {
    Ok(StartOptions {})
}
pub fn locate(
    p: Provider,
    cfg: &TunnelsConfig,
    path_env: &std::ffi::OsStr,
) -> Result<PathBuf, String> {
    Err("stub".into())
}
pub struct Launch {
    pub argv: Vec<String>,
    pub bind_dir: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    pub files: Vec<(String, Vec<u8>, bool)>,
    pub connect_ports: Option<Vec<u16>>,
    pub bind_ports: Vec<u16>,
    pub discovery: Discovery,
}
#[derive(Debug, Clone)]
pub enum Discovery {
    Output,
    NgrokApi(SocketAddr),
    CloudflaredMetrics(SocketAddr),
    Fixed(String),
}
pub fn launch(
    p: Provider,
    binary: &Path,
    cfg: &TunnelsConfig,
    opts: &StartOptions,
    target: SocketAddr,
    free_port: &mut dyn FnMut() -> std::io::Result<u16>,
) -> Result<Launch, ProviderError> {
    Err(ProviderError::Unavailable("stub".into()))
}
pub fn url_from_line(
    p: Provider,
    line: &str,
    cfg: &TunnelsConfig,
    opts: &StartOptions,
) -> Option<String> {
    None
}
pub async fn poll_url(d: &Discovery) -> Result<Option<String>, String> {
    Ok(None)
}
