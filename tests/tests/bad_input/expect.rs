//! Checks of the broker's answers: the gRPC code and the field an error names.

use hermod_proto::v1 as pb;
use tonic::{Code, Status};

pub(crate) fn expect_ack(result: &pb::PublishResult) -> pb::PublishAck {
    match &result.outcome {
        Some(pb::publish_result::Outcome::Ack(ack)) => ack.clone(),
        other => panic!("expected an ack, got {other:?}"),
    }
}

/// The result is a per-item error with `code`, whose field is `field` and
/// whose message names it too.
pub(crate) fn expect_item_error(result: &pb::PublishResult, code: Code, field: &str) -> pb::ItemError {
    match &result.outcome {
        Some(pb::publish_result::Outcome::Error(error)) => {
            check_item_error(error, code, field);
            error.clone()
        }
        other => panic!("expected {code:?} naming {field}, got {other:?}"),
    }
}

pub(crate) fn check_item_error(error: &pb::ItemError, code: Code, field: &str) {
    assert_eq!(
        Code::from_i32(error.code),
        code,
        "wrong code for {field}: {error:?}"
    );
    assert!(
        error.field == field || error.field.starts_with(&format!("{field}[")),
        "expected field {field}, got {error:?}"
    );
    assert!(
        error.message.contains(field),
        "the message should name {field}: {error:?}"
    );
}

/// The call failed with `code` and a message naming `field`.
pub(crate) fn expect_status<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    field: &str,
) -> Status {
    match result {
        Ok(value) => panic!("expected {code:?} naming {field}, got {value:?}"),
        Err(status) => {
            assert_eq!(status.code(), code, "wrong code for {field}: {status:?}");
            assert!(
                status.message().contains(field),
                "the message should name {field}: {status:?}"
            );
            status
        }
    }
}
