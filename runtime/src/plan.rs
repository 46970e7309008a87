//! What `natsapp-wasm check` prints: the streams, publishers and
//! subscribers a configuration sets up, and their components.

use crate::config::Config;
use std::fmt::{self, Write};
use std::time::Duration;

/// A readable summary of a validated configuration.
pub struct Plan(String);

fn secs(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

impl Plan {
    /// The plan of `config`.
    pub fn new(c: &Config) -> Plan {
        let mut s = String::new();
        let _ = writeln!(s, "service {:?} ({})", c.service.name, c.path.display());
        let reconnect = match (c.nats.allow_reconnect, c.nats.max_reconnect_attempts) {
            (false, _) => "no reconnect".to_string(),
            (true, None) => format!(
                "reconnect every {} forever",
                secs(c.nats.reconnect_time_wait)
            ),
            (true, Some(n)) => format!(
                "reconnect every {}, up to {n} attempts",
                secs(c.nats.reconnect_time_wait)
            ),
        };
        let _ = writeln!(
            s,
            "nats: {} ({reconnect}; graceful shutdown {})",
            c.nats.servers.join(", "),
            secs(c.service.graceful_timeout)
        );
        let _ = writeln!(s, "streams:");
        for st in &c.streams {
            let subjects: Vec<&str> = st.subjects.iter().map(|x| x.as_str()).collect();
            let how = if st.declare {
                "declare if missing"
            } else {
                "must exist"
            };
            let _ = writeln!(s, "  {} [{}] ({how})", st.name, subjects.join(", "));
        }
        let _ = writeln!(s, "publishers:");
        for p in &c.publishers {
            match &p.stream {
                Some(st) => {
                    let _ = writeln!(
                        s,
                        "  {} -> stream {st} (PubAck within {})",
                        p.subject,
                        secs(p.timeout)
                    );
                }
                None => {
                    let _ = writeln!(s, "  {} (core NATS)", p.subject);
                }
            }
        }
        let _ = writeln!(s, "subscribers:");
        for sub in &c.subscribers {
            let size = std::fs::metadata(&sub.component)
                .map(|m| m.len())
                .unwrap_or(0);
            let _ = writeln!(
                s,
                "  {}: {} on stream {}, durable {}",
                sub.name, sub.subject, sub.stream, sub.durable
            );
            let _ = writeln!(
                s,
                "    component {} ({} KiB): implements natsapp:handler/handler@0.1.0",
                sub.component.display(),
                size.div_ceil(1024)
            );
            let max_deliver = sub
                .max_deliver
                .map_or("unlimited".to_string(), |m| m.to_string());
            let backoff: Vec<String> = sub.backoff.iter().map(|d| secs(*d)).collect();
            let _ = writeln!(
                s,
                "    concurrency {}, batch {}, pull timeout {}, ack_wait {}, max_deliver {max_deliver}, backoff [{}], instances {}",
                sub.concurrency, sub.batch_size, secs(sub.pull_timeout), secs(sub.ack_wait), backoff.join(", "),
                match sub.instances {
                    crate::config::Instances::PerMessage => "per-message".to_string(),
                    crate::config::Instances::Reuse { max_uses: None } => "reused".to_string(),
                    crate::config::Instances::Reuse { max_uses: Some(n) } => format!("reused up to {n} times"),
                }
            );
            let allowed: Vec<&str> = sub.publish.iter().map(|x| x.as_str()).collect();
            let _ = writeln!(
                s,
                "    limits: memory {} MiB, {} per message; may publish to [{}]; dead letter {}",
                sub.memory >> 20,
                secs(sub.timeout),
                allowed.join(", "),
                sub.dead_letter.as_ref().map_or("none", |d| d.as_str())
            );
        }
        Plan(s)
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}
