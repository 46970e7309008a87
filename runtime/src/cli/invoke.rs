//! `natsapp-wasm invoke`: one message through a handler, no server
//! (`natsapp_wasm::testing`), printed as text or JSON; the exit code is
//! the verdict.

use natsapp_wasm::config::ByteSize;
use natsapp_wasm::error::ErrorChain;
use natsapp_wasm::observability::logs::LogFormat;
use natsapp_wasm::testing::{BuildError, Builder, LocalHandler, Message};
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct InvokeArgs {
    /// A component (.wasm) to run alone, or a service file (.toml) whose
    /// subscriber or endpoint runs with the file's limits, grants and config
    /// (an endpoint's message is a request: the report shows its answer).
    target: PathBuf,
    /// The payload, as text (or use --file; neither: empty).
    payload: Option<String>,
    /// Read the payload from FILE ("-": standard input).
    #[arg(long, short = 'f', conflicts_with = "payload")]
    file: Option<PathBuf>,
    /// The subscriber or endpoint to run, when the service file has several.
    #[arg(long, short = 's')]
    subscriber: Option<String>,
    /// The message's subject (default: the subscriber's or endpoint's).
    #[arg(long)]
    subject: Option<String>,
    /// A header of the message, NAME=VALUE (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME=VALUE", value_parser = pair)]
    headers: Vec<(String, String)>,
    /// Which delivery this is (1 = the first).
    #[arg(long, default_value_t = 1)]
    delivered: u32,
    /// A config value, KEY=VALUE, over the file's (repeatable).
    #[arg(long = "config", short = 'c', value_name = "KEY=VALUE", value_parser = pair)]
    config: Vec<(String, String)>,
    /// Answers requests to SUBJECT (a pattern) with PAYLOAD (repeatable);
    /// other requests find no responders.
    #[arg(long = "reply", value_name = "SUBJECT=PAYLOAD", value_parser = pair)]
    replies: Vec<(String, String)>,
    /// Stores VALUE under KEY in BUCKET before the run (repeatable).
    #[arg(long, num_args = 3, value_names = ["BUCKET", "KEY", "VALUE"])]
    kv: Vec<String>,
    /// A component alone: a subject it may publish and send requests to
    /// (repeatable; default: any but the system's).
    #[arg(long)]
    publish: Vec<String>,
    /// A component alone: an origin it may send HTTP requests to (repeatable).
    #[arg(long)]
    http: Vec<String>,
    /// A component alone: a key-value bucket it may read and write (repeatable).
    #[arg(long)]
    bucket: Vec<String>,
    /// The time limit of the call (e.g. "5s").
    #[arg(long, value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// The memory limit (e.g. "64MiB").
    #[arg(long, value_parser = ByteSize::parse)]
    memory: Option<ByteSize>,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
}

fn pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE"))
}

impl InvokeArgs {
    fn builder(&self) -> Builder {
        let is_service = self
            .target
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("toml"));
        let mut b = if is_service {
            LocalHandler::service(&self.target, self.subscriber.as_deref())
        } else {
            LocalHandler::component(&self.target)
        };
        for (k, v) in &self.config {
            b = b.config(k, v);
        }
        for (subject, payload) in &self.replies {
            b = b.reply(subject, payload.clone().into_bytes());
        }
        for entry in self.kv.chunks(3) {
            if let [bucket, key, value] = entry {
                b = b.kv(bucket, key, value.clone().into_bytes());
            }
        }
        for s in &self.publish {
            b = b.publish(s);
        }
        for o in &self.http {
            b = b.http(o);
        }
        for name in &self.bucket {
            b = b.bucket(name);
        }
        if let Some(t) = self.timeout {
            b = b.timeout(t);
        }
        if let Some(m) = self.memory {
            b = b.memory(m.0);
        }
        b
    }

    fn payload(&self) -> Result<Vec<u8>, PayloadError> {
        let unreadable = |from: String| move |source| PayloadError { from, source };
        match (&self.payload, &self.file) {
            (Some(text), _) => Ok(text.clone().into_bytes()),
            (None, Some(path)) if path.as_os_str() == "-" => {
                let mut bytes = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut bytes)
                    .map_err(unreadable("standard input".into()))?;
                Ok(bytes)
            }
            (None, Some(path)) => {
                std::fs::read(path).map_err(unreadable(path.display().to_string()))
            }
            (None, None) => Ok(Vec::new()),
        }
    }
}

/// The payload could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the payload from {from}")]
struct PayloadError {
    from: String,
    #[source]
    source: std::io::Error,
}

/// Runs `natsapp-wasm invoke`.
pub fn run(args: InvokeArgs, format: LogFormat) -> ExitCode {
    // The runtime's own log shows only what went wrong; the guest's output
    // is in the report.
    natsapp_wasm::observability::logs::init_with("warn", format);
    let payload = match args.payload() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {}", ErrorChain(&e));
            return ExitCode::from(2);
        }
    };
    let handler = match args.builder().build() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("error: {}", ErrorChain(&e));
            let code = match e {
                BuildError::Engine(_) => 1,
                _ => 2,
            };
            return ExitCode::from(code);
        }
    };
    let mut message = Message::new(payload).delivered(args.delivered);
    message.subject = args.subject.clone();
    message.headers = args.headers.clone();
    let report = handler.invoke(message);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report.to_json()).unwrap_or_default()
        );
    } else {
        print!("{report}");
    }
    ExitCode::from(report.verdict.exit_code())
}
