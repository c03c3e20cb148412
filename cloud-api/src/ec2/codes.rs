//! EC2 error codes and what they mean ([`ErrorKind`]): the same classes as the ECS codes
//! ([`crate::ecs::codes`]), so a pool reacts the same way on either cloud.
//!
//! Classification keys on `Code` (EC2's "Error codes for the Amazon EC2 API" reference); the
//! HTTP status is only a fallback for codes this table does not know.

use super::Ec2Action;
use crate::error::ErrorKind;

/// `RequestLimitExceeded`: the account's token bucket for the action is empty.
pub const REQUEST_LIMIT_EXCEEDED: &str = "RequestLimitExceeded";
/// `InternalError`.
pub const INTERNAL_ERROR: &str = "InternalError";
/// `Unavailable`: the server is overloaded.
pub const UNAVAILABLE: &str = "Unavailable";
/// `ServiceUnavailable`.
pub const SERVICE_UNAVAILABLE: &str = "ServiceUnavailable";
/// `IncorrectState`: the resource is in a state that does not allow the operation.
pub const INCORRECT_STATE: &str = "IncorrectState";
/// `IncorrectInstanceState`.
pub const INCORRECT_INSTANCE_STATE: &str = "IncorrectInstanceState";
/// `InvalidNetworkInterface.InUse`: deleting an attached ENI.
pub const ENI_IN_USE: &str = "InvalidNetworkInterface.InUse";
/// `DependencyViolation`.
pub const DEPENDENCY_VIOLATION: &str = "DependencyViolation";
/// `IdempotentParameterMismatch`: a `ClientToken` reused with other parameters.
pub const IDEMPOTENT_PARAMETER_MISMATCH: &str = "IdempotentParameterMismatch";
/// `InsufficientFreeAddressesInSubnet`: the subnet is exhausted.
pub const INSUFFICIENT_FREE_ADDRESSES: &str = "InsufficientFreeAddressesInSubnet";
/// `InsufficientCidrBlocks`: no aligned free block for a prefix.
pub const INSUFFICIENT_CIDR_BLOCKS: &str = "InsufficientCidrBlocks";
/// `AttachmentLimitExceeded`: the instance has as many ENIs as its type allows.
pub const ATTACHMENT_LIMIT_EXCEEDED: &str = "AttachmentLimitExceeded";
/// `PrivateIpAddressLimitExceeded`: the ENI has as many addresses as the type allows.
pub const PRIVATE_IP_LIMIT_EXCEEDED: &str = "PrivateIpAddressLimitExceeded";
/// `NetworkInterfaceLimitExceeded`: the account's ENI quota in the region.
pub const NETWORK_INTERFACE_LIMIT_EXCEEDED: &str = "NetworkInterfaceLimitExceeded";
/// `InvalidNetworkInterfaceID.NotFound`.
pub const ENI_NOT_FOUND: &str = "InvalidNetworkInterfaceID.NotFound";
/// `InvalidAttachmentID.NotFound`.
pub const ATTACHMENT_NOT_FOUND: &str = "InvalidAttachmentID.NotFound";
/// `InvalidInstanceID.NotFound`.
pub const INSTANCE_NOT_FOUND: &str = "InvalidInstanceID.NotFound";
/// `InvalidSubnetID.NotFound`.
pub const SUBNET_NOT_FOUND: &str = "InvalidSubnetID.NotFound";
/// `InvalidGroup.NotFound`: a security group.
pub const GROUP_NOT_FOUND: &str = "InvalidGroup.NotFound";
/// `InvalidInstanceType`: `DescribeInstanceTypes` of a type that does not exist.
pub const INVALID_INSTANCE_TYPE: &str = "InvalidInstanceType";
/// `InvalidNetworkInterfaceID.Malformed`.
pub const ENI_ID_MALFORMED: &str = "InvalidNetworkInterfaceID.Malformed";
/// `InvalidParameterValue`.
pub const INVALID_PARAMETER_VALUE: &str = "InvalidParameterValue";
/// `InvalidIPAddress.InUse`: an explicit address is taken.
pub const IP_IN_USE: &str = "InvalidIPAddress.InUse";
/// `UnauthorizedOperation`: the IAM policy does not allow the action.
pub const UNAUTHORIZED_OPERATION: &str = "UnauthorizedOperation";
/// `AuthFailure`: the credentials are not valid.
pub const AUTH_FAILURE: &str = "AuthFailure";
/// `SignatureDoesNotMatch`.
pub const SIGNATURE_DOES_NOT_MATCH: &str = "SignatureDoesNotMatch";
/// `InvalidClientTokenId`: unknown access key.
pub const INVALID_CLIENT_TOKEN_ID: &str = "InvalidClientTokenId";
/// `ExpiredToken`: the session token expired.
pub const EXPIRED_TOKEN: &str = "ExpiredToken";
/// `RequestExpired`: the request's date is too far from the server's clock.
pub const REQUEST_EXPIRED: &str = "RequestExpired";

/// Classifies an EC2 error code (HTTP status as fallback for unknown codes).
#[must_use]
pub fn classify(code: &str, http_status: Option<u16>) -> ErrorKind {
    let starts = |p: &str| code.starts_with(p);
    match code {
        REQUEST_LIMIT_EXCEEDED
        | "Throttling"
        | "ThrottlingException"
        | "RequestThrottled"
        | "RequestThrottledException"
        | "TooManyRequestsException"
        | "SlowDown"
        | "PriorRequestNotComplete"
        | "EC2ThrottledException"
        | "BandwidthLimitExceeded" => ErrorKind::Throttled,
        INTERNAL_ERROR
        | "InternalFailure"
        | UNAVAILABLE
        | SERVICE_UNAVAILABLE
        | "ServiceUnavailableException"
        | "RequestTimeout"
        | "RequestTimeoutException" => ErrorKind::Transient,
        "ConcurrentTagAccess" | "ConcurrentModification" => ErrorKind::Conflict,
        INCORRECT_STATE
        | INCORRECT_INSTANCE_STATE
        | ENI_IN_USE
        | DEPENDENCY_VIOLATION
        | "InvalidNetworkInterface.NotAttached"
        | "IncorrectModificationState" => ErrorKind::InvalidState,
        IDEMPOTENT_PARAMETER_MISMATCH => ErrorKind::IdempotencyMismatch,
        INSUFFICIENT_FREE_ADDRESSES | INSUFFICIENT_CIDR_BLOCKS => ErrorKind::SubnetExhausted,
        c if c.ends_with("LimitExceeded") => ErrorKind::QuotaExceeded,
        INVALID_INSTANCE_TYPE => ErrorKind::NotFound,
        c if c.ends_with(".NotFound") || c.ends_with(".NotFoundException") => ErrorKind::NotFound,
        UNAUTHORIZED_OPERATION
        | "AccessDenied"
        | "AccessDeniedException"
        | "Blocked"
        | "OptInRequired" => ErrorKind::Permission,
        AUTH_FAILURE
        | SIGNATURE_DOES_NOT_MATCH
        | INVALID_CLIENT_TOKEN_ID
        | EXPIRED_TOKEN
        | "IncompleteSignature"
        | "MissingAuthenticationToken"
        | "InvalidAccessKeyId"
        | "UnrecognizedClientException" => ErrorKind::Authentication,
        REQUEST_EXPIRED => ErrorKind::ClockSkew,
        _ if starts("InvalidParameter")
            || starts("MissingParameter")
            || starts("UnknownParameter")
            || starts("InvalidAction")
            || starts("InvalidIPAddress")
            || starts("InvalidAddress")
            || c_is_malformed(code)
            || code == "ValidationError"
            || code == "OperationNotPermitted"
            || code == "UnsupportedOperation"
            || code == "Unsupported" =>
        {
            ErrorKind::InvalidRequest
        }
        _ => match http_status {
            Some(500..=599) => ErrorKind::Transient,
            Some(429) => ErrorKind::Throttled,
            Some(404) => ErrorKind::NotFound,
            Some(401 | 403) => ErrorKind::Permission,
            Some(409) => ErrorKind::Conflict,
            Some(400..=499) => ErrorKind::InvalidRequest,
            _ => ErrorKind::Other,
        },
    }
}

fn c_is_malformed(code: &str) -> bool {
    code.ends_with(".Malformed")
}

/// Whether an error of `action` with `code` means the goal is already reached: the ENI or the
/// attachment is already gone on detach, delete and unassign (as the AWS VPC CNI treats them).
#[must_use]
pub fn is_success_on(action: Ec2Action, code: &str) -> bool {
    use Ec2Action as A;
    match action {
        A::DetachNetworkInterface => code == ATTACHMENT_NOT_FOUND || code == ENI_NOT_FOUND,
        A::DeleteNetworkInterface | A::UnassignPrivateIpAddresses | A::UnassignIpv6Addresses => {
            code == ENI_NOT_FOUND
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_codes_classify_into_the_shared_classes() {
        let cases = [
            (REQUEST_LIMIT_EXCEEDED, ErrorKind::Throttled),
            ("Throttling", ErrorKind::Throttled),
            (INTERNAL_ERROR, ErrorKind::Transient),
            (UNAVAILABLE, ErrorKind::Transient),
            (SERVICE_UNAVAILABLE, ErrorKind::Transient),
            (INCORRECT_STATE, ErrorKind::InvalidState),
            (ENI_IN_USE, ErrorKind::InvalidState),
            (DEPENDENCY_VIOLATION, ErrorKind::InvalidState),
            ("ConcurrentTagAccess", ErrorKind::Conflict),
            (
                IDEMPOTENT_PARAMETER_MISMATCH,
                ErrorKind::IdempotencyMismatch,
            ),
            (INSUFFICIENT_FREE_ADDRESSES, ErrorKind::SubnetExhausted),
            (INSUFFICIENT_CIDR_BLOCKS, ErrorKind::SubnetExhausted),
            (ATTACHMENT_LIMIT_EXCEEDED, ErrorKind::QuotaExceeded),
            (PRIVATE_IP_LIMIT_EXCEEDED, ErrorKind::QuotaExceeded),
            (NETWORK_INTERFACE_LIMIT_EXCEEDED, ErrorKind::QuotaExceeded),
            ("TagLimitExceeded", ErrorKind::QuotaExceeded),
            (ENI_NOT_FOUND, ErrorKind::NotFound),
            (ATTACHMENT_NOT_FOUND, ErrorKind::NotFound),
            (INSTANCE_NOT_FOUND, ErrorKind::NotFound),
            (SUBNET_NOT_FOUND, ErrorKind::NotFound),
            (GROUP_NOT_FOUND, ErrorKind::NotFound),
            (INVALID_INSTANCE_TYPE, ErrorKind::NotFound),
            (ENI_ID_MALFORMED, ErrorKind::InvalidRequest),
            (INVALID_PARAMETER_VALUE, ErrorKind::InvalidRequest),
            ("InvalidParameterCombination", ErrorKind::InvalidRequest),
            ("MissingParameter", ErrorKind::InvalidRequest),
            (IP_IN_USE, ErrorKind::InvalidRequest),
            (UNAUTHORIZED_OPERATION, ErrorKind::Permission),
            (AUTH_FAILURE, ErrorKind::Authentication),
            (SIGNATURE_DOES_NOT_MATCH, ErrorKind::Authentication),
            (INVALID_CLIENT_TOKEN_ID, ErrorKind::Authentication),
            (EXPIRED_TOKEN, ErrorKind::Authentication),
            (REQUEST_EXPIRED, ErrorKind::ClockSkew),
        ];
        for (code, kind) in cases {
            assert_eq!(classify(code, None), kind, "{code}");
        }
    }

    #[test]
    fn retry_classes_match_the_ecs_ones() {
        use crate::ecs::codes as ecs;
        // Pairs of codes meaning the same on both clouds.
        for (ec2, alibaba) in [
            (REQUEST_LIMIT_EXCEEDED, ecs::THROTTLING),
            (INTERNAL_ERROR, ecs::INTERNAL_ERROR),
            (INCORRECT_STATE, ecs::INVALID_ENI_STATE),
            (INSUFFICIENT_FREE_ADDRESSES, ecs::VSWITCH_IP_NOT_ENOUGH),
            (ATTACHMENT_LIMIT_EXCEEDED, ecs::ENI_PER_INSTANCE_LIMIT),
            (ENI_NOT_FOUND, ecs::ENI_NOT_FOUND),
            (SIGNATURE_DOES_NOT_MATCH, ecs::SIGNATURE_DOES_NOT_MATCH),
            (
                IDEMPOTENT_PARAMETER_MISMATCH,
                ecs::IDEMPOTENT_PARAMETER_MISMATCH,
            ),
        ] {
            assert_eq!(classify(ec2, None), ecs::classify(alibaba, None), "{ec2}");
            assert_eq!(
                classify(ec2, None).is_retryable(),
                ecs::classify(alibaba, None).is_retryable()
            );
        }
    }

    #[test]
    fn unknown_codes_fall_back_to_http_status() {
        assert_eq!(classify("Weird", Some(503)), ErrorKind::Transient);
        assert_eq!(classify("Weird", Some(400)), ErrorKind::InvalidRequest);
        assert_eq!(classify("Weird", None), ErrorKind::Other);
    }

    #[test]
    fn gone_counts_as_done_only_on_release_paths() {
        assert!(is_success_on(
            Ec2Action::DetachNetworkInterface,
            ATTACHMENT_NOT_FOUND
        ));
        assert!(is_success_on(
            Ec2Action::DeleteNetworkInterface,
            ENI_NOT_FOUND
        ));
        assert!(is_success_on(
            Ec2Action::UnassignPrivateIpAddresses,
            ENI_NOT_FOUND
        ));
        assert!(!is_success_on(
            Ec2Action::AttachNetworkInterface,
            ENI_NOT_FOUND
        ));
    }
}
