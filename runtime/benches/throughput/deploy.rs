//! Deploying over NATS: how long from a fragment put in its key to every
//! one of three replicas reporting it applied (status requests every
//! 20 ms), for a Rust component and a Python one — first with caches of
//! their own that have never seen the component (each replica compiles
//! it, as three machines would), then the same component under another
//! key (from the cache) — and how long a replica takes from its start to
//! its first message handled when its one component is in the object
//! store, against the same component from a file.

use super::*;
use natsapp_wasm::deploy::{publish, status};
use natsapp_wasm::nats::objects;

/// Replicas watching the bucket.
const REPLICAS: usize = 3;

impl Bench {
    pub(crate) async fn deploy(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        create_stream(&self.js, "DEP", &["dep.>"]).await;
        let toml = format!(
            "[service]\nname = \"deploy-bench\"\ngraceful_timeout = \"1s\"\n\
             include = [{{ kv = \"DEPLOYB\", keys = \">\" }}]\n\
             [nats]\nservers = [\"{}\"]\n\
             [[streams]]\nname = \"DEP\"\nsubjects = [\"dep.>\"]\ndeclare = false\n",
            self.server.url()
        );
        let caches: Vec<tempfile::TempDir> = (0..REPLICAS)
            .map(|_| tempfile::tempdir().unwrap())
            .collect();
        let replicas: Vec<Child> = caches
            .iter()
            .map(|cache| spawn(&toml, self.dir.path(), cache.path()))
            .collect();
        let client = self.js.client();
        for (lang, component) in [("Rust", &self.noop), ("Python", &self.py_noop)] {
            let bytes = std::fs::read(component).unwrap();
            let name = lang.to_lowercase();
            let pushed = objects::push(&self.js, "COMPONENTSB", &name, &bytes, Some(1))
                .await
                .unwrap();
            let mut took = Vec::new();
            for (key, durable) in [
                (format!("{name}.cold"), "cold"),
                (format!("{name}.warm"), "warm"),
            ] {
                let fragment = format!(
                    "[[subscribers]]\nname = \"{name}-{durable}\"\n\
                     component = {{ object = \"COMPONENTSB/{name}\", sha256 = \"{}\" }}\n\
                     subject = \"dep.{name}.{durable}\"\nstream = \"DEP\"\ndurable = \"{name}-{durable}\"\n",
                    pushed.digest
                );
                let revision = publish::put(&self.js, "DEPLOYB", &key, &fragment, Some(1))
                    .await
                    .unwrap();
                let t0 = Instant::now();
                loop {
                    within(t0, "every replica to apply the deploy");
                    let answers = status::ask(&client, "DEPLOYB", Some(REPLICAS))
                        .await
                        .unwrap();
                    let applied = answers
                        .iter()
                        .filter(|a| {
                            a.keys
                                .iter()
                                .any(|k| k.key == key && k.revision == Some(revision))
                        })
                        .count();
                    if applied == REPLICAS {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                took.push(t0.elapsed().as_secs_f64());
            }
            rows.push(Row {
                case: format!("deploy to {REPLICAS} replicas, {lang} no-op"),
                note: format!(
                    "every replica applied {:.2} s after the put (each compiling it); {:.2} s for the same component under another key (from the cache)",
                    took[0], took[1]
                ),
                ..Default::default()
            });
        }
        for r in replicas {
            stop(r);
        }

        // Start-up: one subscriber, its component from a file or the object store.
        let pushed = objects::push(
            &self.js,
            "COMPONENTSB",
            "noop",
            &std::fs::read(&self.noop).unwrap(),
            Some(1),
        )
        .await
        .unwrap();
        let mut starts = Vec::new();
        for (tag, component) in [
            ("file", format!("\"{}\"", self.noop.display())),
            (
                "object",
                format!(
                    "{{ object = \"COMPONENTSB/noop\", sha256 = \"{}\" }}",
                    pushed.digest
                ),
            ),
        ] {
            let cache = tempfile::tempdir().unwrap();
            let mut took = Vec::new();
            for round in ["cold", "warm"] {
                let durable = format!("start-{tag}-{round}");
                let subject = format!("dep.{durable}");
                self.js
                    .publish(subject.clone(), "x".into())
                    .await
                    .unwrap()
                    .await
                    .unwrap();
                let toml = format!(
                    "[service]\nname = \"start-bench\"\ngraceful_timeout = \"1s\"\n\
                     [nats]\nservers = [\"{}\"]\n\
                     [[streams]]\nname = \"DEP\"\nsubjects = [\"dep.>\"]\ndeclare = false\n\
                     [[subscribers]]\nname = \"s\"\ncomponent = {component}\nsubject = \"{subject}\"\n\
                     stream = \"DEP\"\ndurable = \"{durable}\"\n",
                    self.server.url()
                );
                let t0 = Instant::now();
                let child = spawn(&toml, self.dir.path(), cache.path());
                let s = self.js.get_stream("DEP").await.unwrap();
                loop {
                    within(t0, "the replica's first message");
                    if s.consumer_info(&durable)
                        .await
                        .is_ok_and(|i| i.ack_floor.stream_sequence > 0)
                    {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                took.push(t0.elapsed().as_secs_f64());
                stop(child);
            }
            starts.push((tag, took));
        }
        for (tag, took) in &starts {
            rows.push(Row {
                case: format!(
                    "start-up to the first message, Rust no-op from {}",
                    if *tag == "file" {
                        "a file"
                    } else {
                        "the object store"
                    }
                ),
                note: format!("cold {:.2} s, warm {:.2} s", took[0], took[1]),
                ..Default::default()
            });
        }
        rows
    }
}
