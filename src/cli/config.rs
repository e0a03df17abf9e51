//! `suprnova node --config FILE`: the same settings as the flags, in TOML. A flag or its
//! environment variable wins over the file; the file wins over the defaults.
//!
//! ```toml
//! listen = "0.0.0.0:4433"
//! data_dir = "/var/lib/suprnova"          # relative paths are taken from the file's directory
//! bootstrap = ["3f2a…c1@203.0.113.7:4433", "seed.example.org:4433"]
//! advertise = ["203.0.113.9:4433"]
//! control = "127.0.0.1:0"                 # or "off"
//! metrics = "127.0.0.1:9464"
//! log_format = "json"                     # or "text"
//! replication = 3                         # replicas per record
//! ip_limits_local = false                 # IP-diversity limits on private addresses too
//! reachability = "auto"                   # or "public", "private" (behind NAT: use relays)
//! relay = "on"                            # serve as a relay while public, or "off"
//! lan_discovery = true                    # find nodes on the LAN with no bootstrap address
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// Settings read from a config file; every key is optional.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--bootstrap`.
    pub bootstrap: Option<Vec<String>>,
    /// `--advertise`.
    pub advertise: Option<Vec<SocketAddr>>,
    /// `--control`.
    pub control: Option<String>,
    /// `--metrics`.
    pub metrics: Option<SocketAddr>,
    /// `--log-format`.
    pub log_format: Option<String>,
    /// `--replication`.
    pub replication: Option<u16>,
    /// `--ip-limits-local`.
    pub ip_limits_local: Option<bool>,
    /// `--reachability`.
    pub reachability: Option<String>,
    /// `--relay`.
    pub relay: Option<String>,
    /// `lan_discovery = false` is `--no-lan-discovery`.
    pub lan_discovery: Option<bool>,
}

/// Largest config file read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

impl FileConfig {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<FileConfig> {
        let meta = std::fs::metadata(path).with_context(|| format!("cannot read config file {}", path.display()))?;
        if meta.len() > MAX_CONFIG_BYTES {
            bail!("config file {} is over 1 MiB", path.display());
        }
        let text =
            std::fs::read_to_string(path).with_context(|| format!("cannot read config file {}", path.display()))?;
        let mut cfg = FileConfig::parse(&text).with_context(|| format!("config file {}", path.display()))?;
        if let Some(d) = &cfg.data_dir
            && d.is_relative()
        {
            let base = path.parent().unwrap_or(Path::new("."));
            cfg.data_dir = Some(base.join(d));
        }
        Ok(cfg)
    }

    /// Parses TOML text.
    pub fn parse(text: &str) -> Result<FileConfig> {
        let cfg: FileConfig = toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))?;
        if let Some(f) = &cfg.log_format
            && f != "text"
            && f != "json"
        {
            bail!("log_format must be \"text\" or \"json\", not {f:?}");
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_parses() {
        let c = FileConfig::parse(
            r#"
            listen = "127.0.0.1:4433"
            data_dir = "/var/lib/suprnova"
            bootstrap = ["127.0.0.1:5000"]
            advertise = ["192.0.2.1:4433"]
            control = "off"
            metrics = "127.0.0.1:9464"
            log_format = "json"
            replication = 6
            ip_limits_local = true
            "#,
        )
        .map_err(|e| e.to_string());
        let Ok(c) = c else { panic!("{c:?}") };
        assert_eq!(c.listen, Some("127.0.0.1:4433".parse().unwrap_or_else(|_| unreachable!())));
        assert_eq!(c.data_dir.as_deref(), Some(Path::new("/var/lib/suprnova")));
        assert_eq!(c.bootstrap, Some(vec!["127.0.0.1:5000".to_string()]));
        assert_eq!(c.advertise.map(|a| a.len()), Some(1));
        assert_eq!(c.control.as_deref(), Some("off"));
        assert_eq!(c.metrics.map(|m| m.port()), Some(9464));
        assert_eq!(c.log_format.as_deref(), Some("json"));
        assert_eq!(c.replication, Some(6));
        assert_eq!(c.ip_limits_local, Some(true));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors_naming_them() {
        let e = FileConfig::parse("lisen = \"127.0.0.1:1\"").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("lisen"), "{e}");
        let e = FileConfig::parse("listen = \"nowhere\"").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("listen"), "{e}");
        let e = FileConfig::parse("log_format = \"xml\"").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("log_format"), "{e}");
        assert_eq!(FileConfig::parse("").ok(), Some(FileConfig::default()));
    }
}
