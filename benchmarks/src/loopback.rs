//! The benchmarks talk to this machine only: every address they are given must be
//! `127.0.0.1` (checked before anything is sent).

use anyhow::{bail, Context};

pub const HOST: &str = "127.0.0.1";

/// An `http://127.0.0.1[:port]/…` URL (no other host, no other scheme).
pub fn check_url(text: &str) -> anyhow::Result<reqwest::Url> {
    let url = reqwest::Url::parse(text).with_context(|| format!("not a URL: {text:?}"))?;
    if url.scheme() != "http" {
        bail!("{text:?}: only plain http:// to {HOST} is allowed");
    }
    if !is_loopback_url(&url) {
        bail!("{text:?}: only {HOST} may be targeted");
    }
    Ok(url)
}

/// Whether the URL's host is exactly 127.0.0.1.
pub fn is_loopback_url(url: &reqwest::Url) -> bool {
    url.host_str() == Some(HOST)
}

/// A comma-separated `host:port` list (Kafka bootstrap servers), every host 127.0.0.1.
pub fn check_host_ports(list: &str) -> anyhow::Result<()> {
    for entry in list.split(',').map(str::trim) {
        let (host, port) = entry
            .rsplit_once(':')
            .with_context(|| format!("{entry:?}: expected {HOST}:PORT"))?;
        port.parse::<u16>()
            .with_context(|| format!("{entry:?}: bad port"))?;
        if host != HOST {
            bail!("{entry:?}: only {HOST} may be targeted");
        }
    }
    Ok(())
}

/// A `mongodb://127.0.0.1[:port][/…]` URI with one host (no `mongodb+srv`, no lists).
pub fn check_mongodb_uri(uri: &str) -> anyhow::Result<()> {
    let rest = uri
        .strip_prefix("mongodb://")
        .with_context(|| format!("{uri:?}: expected mongodb://{HOST}:PORT"))?;
    let hosts = rest.split(['/', '?']).next().unwrap_or_default();
    let hosts = hosts.rsplit('@').next().unwrap_or_default();
    if hosts.contains(',') {
        bail!("{uri:?}: one host only");
    }
    let host = hosts.split(':').next().unwrap_or_default();
    if host != HOST {
        bail!("{uri:?}: only {HOST} may be targeted");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_is_accepted() {
        assert!(check_url("http://127.0.0.1:8081").is_ok());
        assert!(check_url("http://127.0.0.1:8089/v1/payment/x?y=1").is_ok());
        assert!(check_url("https://127.0.0.1:8081").is_err());
        assert!(check_url("http://example.com").is_err());
        assert!(check_url("http://127.0.0.2:8081").is_err());
        assert!(check_host_ports("127.0.0.1:9092").is_ok());
        assert!(check_host_ports("127.0.0.1:9092,kafka:9092").is_err());
        assert!(check_host_ports("127.0.0.1").is_err());
        assert!(check_mongodb_uri("mongodb://127.0.0.1:27017").is_ok());
        assert!(check_mongodb_uri("mongodb://127.0.0.1:27017/?appName=x").is_ok());
        assert!(check_mongodb_uri("mongodb://u:p@127.0.0.1/db").is_ok());
        assert!(check_mongodb_uri("mongodb://127.0.0.1,10.0.0.1").is_err());
        assert!(check_mongodb_uri("mongodb+srv://cluster").is_err());
        assert!(check_mongodb_uri("mongodb://mongo:27017").is_err());
    }
}
