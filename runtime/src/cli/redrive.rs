//! `natsapp-wasm redrive FILE --subscriber NAME [--limit N] [--reason TEXT]
//! [--dry-run]`: puts a subscriber's dead letters back on their original
//! subjects, with the subscriber's identity (its tenant's for a tenant's).

use super::remote::{connect, runtime};
use natsapp_wasm::config::Config;
use natsapp_wasm::error::ErrorChain;
use natsapp_wasm::redrive::{self, Moved, RedriveError, Selection};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct RedriveArgs {
    /// The service file that names the subscriber.
    file: PathBuf,
    /// The subscriber whose dead letters move.
    #[arg(long)]
    subscriber: String,
    /// Move at most this many.
    #[arg(long)]
    limit: Option<usize>,
    /// Move only those whose reason (Natsapp-Reason) contains this text.
    #[arg(long)]
    reason: Option<String>,
    /// List what would move, with reasons, and move nothing.
    #[arg(long)]
    dry_run: bool,
    /// Resuming a stopped redrive: move a dead letter it had in flight
    /// again even when its stream cannot tell whether its copy was stored
    /// (a work-queue or interest stream, past its duplicate window).
    #[arg(long)]
    force: bool,
}

fn failed(e: &RedriveError) -> ExitCode {
    eprintln!("error: {}", ErrorChain(e));
    ExitCode::from(match e {
        RedriveError::Nats { .. } => 1,
        _ => 2,
    })
}

pub fn run(args: RedriveArgs) -> ExitCode {
    let config = match Config::load(&args.file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {}", ErrorChain(&e));
            return ExitCode::from(2);
        }
    };
    let (sub, subject) = match redrive::subscriber(&config, &args.subscriber) {
        Ok(found) => found,
        Err(e) => return failed(&e),
    };
    // A tenant's dead letters are in its account: they move as the tenant.
    let nats = match &sub.tenant {
        None => config.nats.clone(),
        Some(tenant) => match config.tenant(tenant) {
            Some(t) => t.nats.clone(),
            None => {
                eprintln!(
                    "error: subscriber {:?} names tenant {tenant:?}, which {} does not declare",
                    sub.name,
                    args.file.display()
                );
                return ExitCode::from(2);
            }
        },
    };
    let selection = Selection {
        limit: args.limit,
        reason: args.reason,
    };
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    runtime.block_on(async {
        let client = match connect(&nats, "natsapp-wasm redrive").await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {}", ErrorChain(&e));
                return ExitCode::from(if e.is_input() { 2 } else { 1 });
            }
        };
        let js = async_nats::jetstream::new(client);
        if args.dry_run {
            return match redrive::list(&js, &sub.name, &subject, &selection).await {
                Ok(letters) => {
                    for letter in &letters {
                        match &letter.unmovable {
                            None => println!("would move {letter}"),
                            Some(why) => println!("cannot move {letter}: {why}"),
                        }
                    }
                    let movable = letters.iter().filter(|l| l.unmovable.is_none()).count();
                    println!("{movable} dead letters of {} would move", sub.name);
                    ExitCode::SUCCESS
                }
                Err(e) => failed(&e),
            };
        }
        let result = redrive::redrive(
            &js,
            sub,
            &subject,
            &selection,
            args.force,
            |letter, moved| match moved {
                Moved::Redriven { stream, sequence } => {
                    println!("moved {letter} to {stream} {sequence}")
                }
                Moved::AlreadyRedriven => {
                    println!("removed {letter}: a stopped redrive had moved it")
                }
                Moved::Skipped(why) => println!("left {letter}: {why}"),
            },
            |warning| eprintln!("warning: {warning}"),
        )
        .await;
        match result {
            Ok(count) => {
                println!("{count} dead letters of {} redriven", sub.name);
                ExitCode::SUCCESS
            }
            Err(e) => failed(&e),
        }
    })
}
