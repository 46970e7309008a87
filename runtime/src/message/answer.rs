//! What a request to an endpoint is answered with when its guest did not
//! answer it: a micro-service error whose status says what came of the
//! handler, sent as soon as that is known (by the endpoint, or by a local
//! run).

use super::{FailureCause, Outcome};

/// An error answer: its status code and description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorAnswer {
    /// 400, 500 or 503.
    pub code: u16,
    /// What the requester is told.
    pub description: String,
}

impl std::fmt::Display for ErrorAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.code, self.description)
    }
}

/// The error answer `outcome` calls for, `answered` saying whether the
/// guest answered already (then the requester has its answer, and a failed
/// handler is only counted).
pub fn after(outcome: &Outcome, answered: bool) -> Option<ErrorAnswer> {
    let (code, description) = match outcome {
        Outcome::Ok if answered => return None,
        Outcome::Ok => (500, "no response".to_string()),
        // The guest's own words, as for a dead letter's reason.
        Outcome::Reject(reason) => (400, reason.clone()),
        Outcome::Retry { reason, .. } if reason.is_empty() => (503, "retry".to_string()),
        Outcome::Retry { reason, .. } => (503, reason.clone()),
        // Only the cause: the detail can hold the guest's stderr and the
        // runtime's limits, which are not the requester's to read.
        Outcome::Failed { cause, .. } => (500, cause_text(*cause).to_string()),
    };
    Some(ErrorAnswer { code, description })
}

/// The answer to a request no handler slot nor waiting place was left for.
pub fn overloaded(running: usize, waiting: usize) -> ErrorAnswer {
    ErrorAnswer {
        code: 503,
        description: format!("overloaded: {running} requests handled and {waiting} waiting"),
    }
}

/// The answer to a request read as the endpoint stopped.
pub fn stopping() -> ErrorAnswer {
    ErrorAnswer {
        code: 503,
        description: "the endpoint is stopping".to_string(),
    }
}

fn cause_text(cause: FailureCause) -> &'static str {
    match cause {
        FailureCause::Trap => "handler trapped",
        FailureCause::Panic => "handler crashed",
        FailureCause::Timeout => "handler timed out",
        FailureCause::Memory => "handler exceeded its memory limit",
        FailureCause::Instantiate => "handler could not be instantiated",
        FailureCause::Commit | FailureCause::Output => "handler's outputs could not be stored",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn each_outcome_has_its_status() {
        let code = |o: &Outcome, answered| after(o, answered).map(|a| a.code);
        assert_eq!(code(&Outcome::Ok, true), None);
        assert_eq!(code(&Outcome::Ok, false), Some(500));
        assert_eq!(code(&Outcome::Reject("bad".into()), false), Some(400));
        let retry = Outcome::Retry {
            delay: Some(Duration::from_secs(1)),
            reason: String::new(),
        };
        assert_eq!(after(&retry, false).unwrap().to_string(), "503:retry");
        let failed = Outcome::Failed {
            cause: FailureCause::Timeout,
            detail: "handler exceeded its time limit of 1s".into(),
        };
        assert_eq!(
            after(&failed, true).unwrap().to_string(),
            "500:handler timed out",
            "a failure after an answer is still counted"
        );
    }
}
