//! Where OpenTelemetry data goes: the collector's OTLP/gRPC address, as
//! `host:port` or `http://host:port` (the form OpenTelemetry's own tools
//! use). Parsed once, at start-up, so a typo exits 64 naming the flag.

use std::{fmt, str::FromStr};

/// An OTLP/gRPC collector address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OtlpEndpoint {
    pub host: String,
    pub port: u16,
}

impl OtlpEndpoint {
    /// The endpoint as a URL for gRPC clients.
    pub fn url(&self) -> String {
        if self.host.contains(':') {
            format!("http://[{}]:{}", self.host, self.port)
        } else {
            format!("http://{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for OtlpEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url())
    }
}

impl FromStr for OtlpEndpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix("http://").unwrap_or(s);
        if rest.starts_with("https://") || rest.contains('/') {
            return Err(format!(
                "`{s}` is not host:port or http://host:port (TLS to the collector is not supported yet)"
            ));
        }
        let (host, port) = rest.rsplit_once(':').ok_or_else(|| {
            format!("`{s}` has no port (the collector's OTLP/gRPC port is usually 4317)")
        })?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("`{s}` has no valid port"))?;
        let valid_host = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'));
        if !valid_host {
            return Err(format!("`{s}` has no valid host"));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_with_or_without_the_scheme() {
        let e: OtlpEndpoint = "http://collector:4317".parse().expect("valid");
        assert_eq!((e.host.as_str(), e.port), ("collector", 4317));
        let e: OtlpEndpoint = "127.0.0.1:4317".parse().expect("valid");
        assert_eq!(e.url(), "http://127.0.0.1:4317");
        let e: OtlpEndpoint = "[::1]:4317".parse().expect("valid");
        assert_eq!(e.url(), "http://[::1]:4317");
        assert_eq!(parse_sampling_percent("1"), Ok(10_000));
        assert_eq!(parse_sampling_percent("0.01"), Ok(100));
        assert!(parse_sampling_percent("101").is_err());
        for bad in [
            "collector",
            "https://c:4317",
            "c:0",
            "http://c:4317/v1",
            ":4317",
            "a b:1",
        ] {
            assert!(bad.parse::<OtlpEndpoint>().is_err(), "{bad}");
        }
    }
}

/// The telemetry flag every Gatehouse binary takes.
#[derive(Debug, Clone, clap::Args)]
pub struct TelemetryArgs {
    /// OpenTelemetry collector (OTLP/gRPC, `host:port` or `http://host:port`)
    /// that receives traces; none are exported when unset.
    #[arg(long, env = "GATEHOUSE_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<OtlpEndpoint>,
}

/// Parses a sampling share given in percent (0–100, decimals allowed) into
/// millionths.
pub fn parse_sampling_percent(s: &str) -> Result<u32, String> {
    let percent: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number (a percent, 0 to 100)"))?;
    if !(0.0..=100.0).contains(&percent) {
        return Err(format!("`{s}` is not between 0 and 100"));
    }
    Ok((percent * 10_000.0).round() as u32)
}
