#![allow(clippy::unwrap_used, clippy::expect_used)]

use tonic::Code;

use super::*;

fn targets(n: u16) -> Vec<Target> {
    (1..=n)
        .map(|port| Target::parse(&format!("10.0.0.{port}:7100")).unwrap())
        .collect()
}

/// Unreachable, unavailable and timed-out replicas are skipped and the next one's answer is returned.
#[tokio::test]
async fn try_each_moves_past_replicas_that_cannot_answer() {
    let targets = targets(4);
    let mut asked = Vec::new();
    let answer = try_each(&targets, async |target: &Target| {
        asked.push(target.clone());
        match asked.len() {
            1 => Err(CallError::Connect("refused".into())),
            2 => Err(CallError::Status(Status::unavailable("no leader"))),
            3 => Err(CallError::TimedOut(Duration::from_secs(1))),
            _ => Ok(asked.len()),
        }
    })
    .await
    .unwrap();
    assert_eq!(answer.value, 4);
    assert_eq!(answer.target, targets[3]);
    assert_eq!(asked, targets);
}

/// An application error is final: later replicas are never asked.
#[tokio::test]
async fn try_each_stops_at_application_errors() {
    let targets = targets(3);
    let mut calls = 0;
    let err = try_each(&targets, async |_: &Target| -> Result<(), CallError> {
        calls += 1;
        Err(CallError::Status(Status::not_found("no such service")))
    })
    .await
    .unwrap_err();
    assert_eq!(calls, 1);
    match err {
        CtlError::Rpc {
            target,
            code,
            message,
        } => {
            assert_eq!(target, targets[0]);
            assert_eq!(code, Code::NotFound);
            assert_eq!(message, "no such service");
        }
        other => panic!("expected an Rpc error, got {other:?}"),
    }
}

/// When nobody answers, every replica's failure is reported in the order tried.
#[tokio::test]
async fn try_each_reports_every_failure_when_nobody_answers() {
    let targets = targets(2);
    let err = try_each(&targets, async |t: &Target| -> Result<(), CallError> {
        Err(CallError::Connect(format!("refused by {t}")))
    })
    .await
    .unwrap_err();
    let CtlError::NoAnswer(failures) = &err else {
        panic!("expected NoAnswer, got {err:?}");
    };
    assert_eq!(failures.len(), 2);
    assert_eq!(failures[1].target, targets[1]);
    assert_eq!(
        err.to_string(),
        "no replica answered\n  10.0.0.1:7100: cannot connect: refused by 10.0.0.1:7100\
         \n  10.0.0.2:7100: cannot connect: refused by 10.0.0.2:7100"
    );
}

/// Only "cannot answer now" failures fail over; application codes do not.
#[test]
fn failover_classification() {
    assert!(CallError::Status(Status::deadline_exceeded("")).tries_next());
    assert!(CallError::Status(Status::unavailable("")).tries_next());
    for status in [
        Status::invalid_argument(""),
        Status::not_found(""),
        Status::failed_precondition(""),
        Status::internal(""),
        Status::unknown(""),
    ] {
        assert!(!CallError::Status(status).tries_next());
    }
}
