//! The Python wrapper's "Real-World Example", ported: validates an order,
//! reserves inventory for each item and publishes the order's status.
//! Invalid orders are rejected (terminated, dead-lettered when configured);
//! a failed publish is retried. Optional config values simulate slow work:
//! the handler sleeps `work_ms` milliseconds first, or `slow_ms` for every
//! `slow_every`-th message of the stream.

use natsapp_guest::{export_handler, Data, Error, Handler, Message, Result};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderCreated {
    order_id: String,
    user_id: String,
    total_amount: f64,
    items: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    id: String,
    quantity: u32,
}

#[derive(Serialize)]
struct InventoryUpdate<'a> {
    item_id: &'a str,
    quantity_reserved: u32,
}

#[derive(Serialize)]
struct OrderProcessed {
    order_id: String,
    status: &'static str,
    processed_at: String,
    tracking_number: String,
}

struct OrderProcessor;

impl Handler for OrderProcessor {
    fn handle(data: Data, msg: &Message) -> Result {
        simulate_work(msg.delivery().stream_sequence)?;
        let order: OrderCreated = data.json()?;
        if order.order_id.is_empty() || order.items.is_empty() || order.total_amount < 0.0 {
            return Err(Error::reject(format!("invalid order {:?}: needs an id, items and a non-negative total", order.order_id)));
        }
        println!("processing order {} for user {}", order.order_id, order.user_id);
        let inventory = natsapp_guest::config::get("inventory_subject").unwrap_or_else(|| "inventory.updates".into());
        for item in &order.items {
            natsapp_guest::publish_json(&inventory, &InventoryUpdate { item_id: &item.id, quantity_reserved: item.quantity })?;
        }
        let now = Utc::now();
        let tracking_number = format!("TRK{}{}", order.order_id, now.yyyymmdd());
        let status = natsapp_guest::config::get("status_subject").unwrap_or_else(|| "order.status".into());
        natsapp_guest::publish_json(
            &status,
            &OrderProcessed { order_id: order.order_id.clone(), status: "processed", processed_at: now.rfc3339(), tracking_number },
        )?;
        println!("processed order {}", order.order_id);
        Ok(())
    }
}

export_handler!(OrderProcessor);

/// Sleeps `work_ms` milliseconds, or `slow_ms` when the stream sequence
/// is a multiple of `slow_every` (all default to 0: no sleep).
fn simulate_work(sequence: u64) -> Result {
    let ms = |key: &str| -> std::result::Result<u64, Error> {
        match natsapp_guest::config::get(key) {
            None => Ok(0),
            Some(v) => v.parse().map_err(|_| Error::reject(format!("config {key} = {v:?} is not a number"))),
        }
    };
    let every = ms("slow_every")?;
    let sleep = if every > 0 && sequence % every == 0 { ms("slow_ms")? } else { ms("work_ms")? };
    std::thread::sleep(std::time::Duration::from_millis(sleep));
    Ok(())
}

/// UTC date and time from the WASI wall clock, without a date crate.
struct Utc {
    days: i64,
    secs_of_day: u64,
}

impl Utc {
    fn now() -> Utc {
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Utc { days: (secs / 86_400) as i64, secs_of_day: secs % 86_400 }
    }

    /// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    fn ymd(&self) -> (i64, u32, u32) {
        let z = self.days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        (yoe + era * 400 + i64::from(m <= 2), m, d)
    }

    fn yyyymmdd(&self) -> String {
        let (y, m, d) = self.ymd();
        format!("{y:04}{m:02}{d:02}")
    }

    fn rfc3339(&self) -> String {
        let (y, m, d) = self.ymd();
        let s = self.secs_of_day;
        format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", s / 3600, s / 60 % 60, s % 60)
    }
}
