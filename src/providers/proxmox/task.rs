//! Proxmox tasks (UPIDs): poll until the task stops, backing off instead of
//! spinning; a task that ends in anything but `OK` (or `WARNINGS`) fails with
//! the tail of its log.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::PveApi;
use crate::providers::ProviderError;

/// The node a UPID runs on: `UPID:<node>:...`.
pub fn node_of(upid: &str) -> Option<&str> {
    upid.strip_prefix("UPID:")?.split(':').next()
}

/// Wait for the task to end. `Ok(())` for `OK` and `WARNINGS: n`.
pub async fn wait(api: &dyn PveApi, upid: &str, timeout: Duration) -> Result<(), ProviderError> {
    let node = node_of(upid)
        .ok_or_else(|| ProviderError::Other(format!("`{upid}` is not a task id (UPID)")))?;
    let path = format!("/nodes/{node}/tasks/{}/status", encode(upid));
    let start = Instant::now();
    let mut delay = Duration::from_millis(50);
    loop {
        let st = api.get(&path, &[]).await?;
        if st["status"].as_str() == Some("stopped") {
            let exit = st["exitstatus"].as_str().unwrap_or("").to_string();
            if exit == "OK" || exit.starts_with("WARNINGS") {
                return Ok(());
            }
            let log_tail = log_tail(api, node, upid).await;
            return Err(ProviderError::TaskFailed {
                upid: upid.to_string(),
                status: exit,
                log_tail,
            });
        }
        if start.elapsed() > timeout {
            return Err(ProviderError::Other(format!(
                "task {upid} still running after {}\nhelp: it continues on the node; check it in the Proxmox task log, \
                 then run phoenix again (the journal remembers it)",
                humantime::format_duration(timeout)
            )));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

async fn log_tail(api: &dyn PveApi, node: &str, upid: &str) -> Vec<String> {
    let path = format!("/nodes/{node}/tasks/{}/log", encode(upid));
    match api.get(&path, &[("limit".into(), "1000".into())]).await {
        Ok(Value::Array(lines)) => {
            let text: Vec<String> = lines
                .iter()
                .filter_map(|l| l["t"].as_str().map(str::to_string))
                .collect();
            text[text.len().saturating_sub(10)..].to_vec()
        }
        _ => Vec::new(),
    }
}

/// UPIDs hold `:` and `@`, which must be escaped in a path segment.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upid_node_and_encoding() {
        let u = "UPID:pve1:000003E8:00001B58:6750A1B2:vzcreate:101:root@pam!phoenix:";
        assert_eq!(node_of(u), Some("pve1"));
        assert_eq!(node_of("nope"), None);
        assert!(encode(u).starts_with("UPID%3Apve1%3A"));
        assert!(encode(u).contains("root%40pam%21phoenix"));
    }
}
