//! What isolation costs: ten subscribers as one tenant (one connection)
//! against the same ten as ten tenants (ten connections), at the same
//! total load, and the idle memory a tenant adds.

use super::*;

const SUBSCRIBERS: usize = 10;

impl Bench {
    pub(crate) async fn tenants(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        let mut one = None;
        for (case, tenants) in [(0, 1), (1, SUBSCRIBERS)] {
            let (rate, peak) = self.tenants_case(case, tenants).await;
            let base = *one.get_or_insert(rate);
            rows.push(Row {
                case: format!(
                    "isolation: {SUBSCRIBERS} Rust no-op subscribers as {tenants} tenant(s)"
                ),
                msgs_per_s: Some(rate),
                peak_rss_mib: Some(peak),
                note: format!(
                    "{:.2}× as one tenant; {} messages in all",
                    rate / base,
                    self.n
                ),
                ..Default::default()
            });
        }
        let idle_one = self.idle_tenants(1).await;
        let idle_ten = self.idle_tenants(SUBSCRIBERS).await;
        rows.push(Row {
            case: format!(
                "isolation: idle, {SUBSCRIBERS} subscribers as 1 and as {SUBSCRIBERS} tenants"
            ),
            note: format!(
                "RSS {idle_one:.1} MiB and {idle_ten:.1} MiB: {:.2} MiB per tenant",
                (idle_ten - idle_one) / (SUBSCRIBERS - 1) as f64
            ),
            ..Default::default()
        });
        rows
    }

    fn tenants_toml(&self, case: usize, tenants: usize) -> String {
        let mut t = format!(
            "[service]\nname = \"tenants-bench\"\ngraceful_timeout = \"2s\"\n[nats]\nservers = [\"{}\"]\n",
            self.server.url()
        );
        for k in 0..tenants {
            t += &format!(
                "[[tenants]]\nname = \"t{k}\"\nquotas = {{ concurrency = {CONCURRENCY}, cpu = \"2\" }}\n"
            );
        }
        for k in 0..SUBSCRIBERS {
            t += &format!(
                "[[streams]]\nname = \"T{case}_{k}\"\nsubjects = [\"t{case}.{k}\"]\n\
                 [[subscribers]]\nname = \"s{k}\"\ntenant = \"t{}\"\ncomponent = \"{}\"\nsubject = \"t{case}.{k}\"\n\
                 stream = \"T{case}_{k}\"\ndurable = \"s{k}\"\nconcurrency = {}\npull = {{ batch_size = {}, timeout = \"1s\" }}\n",
                k % tenants,
                self.noop.display(),
                CONCURRENCY / SUBSCRIBERS,
                BATCH / SUBSCRIBERS,
            );
        }
        t
    }

    async fn tenants_case(&self, case: usize, tenants: usize) -> (f64, f64) {
        let per = (self.n / SUBSCRIBERS).max(1);
        for k in 0..SUBSCRIBERS {
            preload(
                &self.js,
                &format!("T{case}_{k}"),
                &format!("t{case}.{k}"),
                per,
            )
            .await;
        }
        let child = spawn(
            &self.tenants_toml(case, tenants),
            self.dir.path(),
            &self.warm_cache,
        );
        let t0 = Instant::now();
        let mut started = None;
        loop {
            within(t0, "the tenants' subscribers to drain");
            let mut delivered = false;
            let mut drained = 0;
            for k in 0..SUBSCRIBERS {
                let s = self.js.get_stream(format!("T{case}_{k}")).await.unwrap();
                if let Ok(info) = s.consumer_info(format!("s{k}")).await {
                    delivered |= info.delivered.stream_sequence > 0;
                    if info.ack_floor.stream_sequence >= per as u64 && info.num_ack_pending == 0 {
                        drained += 1;
                    }
                }
            }
            if delivered && started.is_none() {
                started = Some(Instant::now());
            }
            if drained == SUBSCRIBERS {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = started.expect("a delivery before draining").elapsed();
        let (peak, _) = rss_mib(child.id());
        stop(child);
        self.delete_case_streams(case).await;
        ((per * SUBSCRIBERS) as f64 / took.as_secs_f64(), peak)
    }

    async fn delete_case_streams(&self, case: usize) {
        let names: Vec<String> = (0..SUBSCRIBERS).map(|k| format!("T{case}_{k}")).collect();
        delete_streams(
            &self.js,
            &names.iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .await;
    }

    /// RSS of the service idle with its subscribers as `tenants` tenants.
    async fn idle_tenants(&self, tenants: usize) -> f64 {
        let case = 10 + tenants;
        for k in 0..SUBSCRIBERS {
            create_stream(
                &self.js,
                &format!("T{case}_{k}"),
                &[&format!("t{case}.{k}")],
            )
            .await;
        }
        let child = spawn(
            &self.tenants_toml(case, tenants),
            self.dir.path(),
            &self.warm_cache,
        );
        for k in 0..SUBSCRIBERS {
            consumer_exists(&self.js, &format!("T{case}_{k}"), &format!("s{k}")).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (_, rss) = rss_mib(child.id());
        stop(child);
        self.delete_case_streams(case).await;
        rss
    }
}
