//! ECS error codes and what they mean ([`ErrorKind`]), per ecs-api.md §3.2.
//!
//! Classification keys on `Code`, never on the HTTP status (the two disagree between the
//! documentation and the gateway); the status is only a fallback for codes this table does not
//! know.

use crate::error::ErrorKind;

/// `Throttling`: request throttling.
pub const THROTTLING: &str = "Throttling";
/// `Throttling.User`: per-user flow control.
pub const THROTTLING_USER: &str = "Throttling.User";
/// `Throttling.Api`: per-API flow control.
pub const THROTTLING_API: &str = "Throttling.Api";
/// `ServiceUnavailable`.
pub const SERVICE_UNAVAILABLE: &str = "ServiceUnavailable";
/// `InternalError`.
pub const INTERNAL_ERROR: &str = "InternalError";
/// `OperationConflict`.
pub const OPERATION_CONFLICT: &str = "OperationConflict";
/// `Operation.Conflict` (ENI address operations).
pub const OPERATION_CONFLICT_DOTTED: &str = "Operation.Conflict";
/// `InvalidOperation.InvalidEniState`.
pub const INVALID_ENI_STATE: &str = "InvalidOperation.InvalidEniState";
/// `InvalidOperation.InvalidEcsState`.
pub const INVALID_ECS_STATE: &str = "InvalidOperation.InvalidEcsState";
/// `LastTokenProcessing`.
pub const LAST_TOKEN_PROCESSING: &str = "LastTokenProcessing";
/// `IdempotentParameterMismatch`.
pub const IDEMPOTENT_PARAMETER_MISMATCH: &str = "IdempotentParameterMismatch";
/// `InvalidVSwitchId.IpNotEnough`: the vSwitch is exhausted.
pub const VSWITCH_IP_NOT_ENOUGH: &str = "InvalidVSwitchId.IpNotEnough";
/// `QuotaExceeded.PrivateIpAddress`: reported instead of the previous one at times.
pub const QUOTA_PRIVATE_IP: &str = "QuotaExceeded.PrivateIpAddress";
/// `EniPerInstanceLimitExceeded`.
pub const ENI_PER_INSTANCE_LIMIT: &str = "EniPerInstanceLimitExceeded";
/// `InvalidOperation.Ipv4CountExceeded`.
pub const IPV4_COUNT_EXCEEDED: &str = "InvalidOperation.Ipv4CountExceeded";
/// `InvalidOperation.Ipv6CountExceeded`.
pub const IPV6_COUNT_EXCEEDED: &str = "InvalidOperation.Ipv6CountExceeded";
/// `InvalidVSwitch.Ipv6NotTurnOn`.
pub const IPV6_NOT_TURNED_ON: &str = "InvalidVSwitch.Ipv6NotTurnOn";
/// `InvalidEniId.NotFound`.
pub const ENI_NOT_FOUND: &str = "InvalidEniId.NotFound";
/// `InvalidEcsId.NotFound`.
pub const ECS_NOT_FOUND: &str = "InvalidEcsId.NotFound";
/// `InvalidInstanceId.NotFound`.
pub const INSTANCE_NOT_FOUND: &str = "InvalidInstanceId.NotFound";
/// `InvalidVSwitchId.NotFound`.
pub const VSWITCH_NOT_FOUND: &str = "InvalidVSwitchId.NotFound";
/// `InvalidSecurityGroupId.NotFound`.
pub const SECURITY_GROUP_NOT_FOUND: &str = "InvalidSecurityGroupId.NotFound";
/// `InvalidIp.IpUnassigned`: the address is not on the ENI.
pub const IP_UNASSIGNED: &str = "InvalidIp.IpUnassigned";
/// `InvalidIp.IpAssigned`.
pub const IP_ASSIGNED: &str = "InvalidIp.IpAssigned";
/// `InvalidPrivateIpAddress.Duplicated`.
pub const IP_DUPLICATED: &str = "InvalidPrivateIpAddress.Duplicated";
/// `InvalidVSwitchId.IpInvalid`: the address is not in the vSwitch.
pub const IP_INVALID: &str = "InvalidVSwitchId.IpInvalid";
/// `InvalidOperation.AvailabilityZoneMismatch`.
pub const ZONE_MISMATCH: &str = "InvalidOperation.AvailabilityZoneMismatch";
/// `InvalidOperation.VpcMismatch`.
pub const VPC_MISMATCH: &str = "InvalidOperation.VpcMismatch";
/// `InvalidOperation.DetachPrimaryEniNotAllowed`.
pub const DETACH_PRIMARY: &str = "InvalidOperation.DetachPrimaryEniNotAllowed";
/// `InvalidOperation.InvalidEniType`.
pub const INVALID_ENI_TYPE: &str = "InvalidOperation.InvalidEniType";
/// `Forbidden.RAM`.
pub const FORBIDDEN_RAM: &str = "Forbidden.RAM";
/// `InvalidAccessKeyId.NotFound`.
pub const ACCESS_KEY_NOT_FOUND: &str = "InvalidAccessKeyId.NotFound";
/// `SignatureDoesNotMatch`.
pub const SIGNATURE_DOES_NOT_MATCH: &str = "SignatureDoesNotMatch";
/// `IncompleteSignature`.
pub const INCOMPLETE_SIGNATURE: &str = "IncompleteSignature";
/// `SignatureNonceUsed`.
pub const SIGNATURE_NONCE_USED: &str = "SignatureNonceUsed";
/// `InvalidTimeStamp.Expired`.
pub const TIMESTAMP_EXPIRED: &str = "InvalidTimeStamp.Expired";
/// `IllegalTimestamp`.
pub const ILLEGAL_TIMESTAMP: &str = "IllegalTimestamp";
/// `InvalidSecurityToken.Expired`.
pub const SECURITY_TOKEN_EXPIRED: &str = "InvalidSecurityToken.Expired";
/// `InvalidSecurityToken.Malformed`.
pub const SECURITY_TOKEN_MALFORMED: &str = "InvalidSecurityToken.Malformed";
/// `InvalidSecurityToken.MismatchWithAccessKey`.
pub const SECURITY_TOKEN_MISMATCH: &str = "InvalidSecurityToken.MismatchWithAccessKey";
/// `MissingSecurityToken`.
pub const MISSING_SECURITY_TOKEN: &str = "MissingSecurityToken";
/// `MissingParameter`.
pub const MISSING_PARAMETER: &str = "MissingParameter";
/// `InvalidParameter`.
pub const INVALID_PARAMETER: &str = "InvalidParameter";
/// `UnknownError`.
pub const UNKNOWN_ERROR: &str = "UnknownError";
/// `InvalidAction.NotFound`.
pub const INVALID_ACTION: &str = "InvalidAction.NotFound";

/// Classifies an ECS error code (HTTP status as fallback for unknown codes).
#[must_use]
pub fn classify(code: &str, http_status: Option<u16>) -> ErrorKind {
    let starts = |p: &str| code.starts_with(p);
    match code {
        // Throttling: any `Throttling*` and the terraform-seen variant.
        c if c == THROTTLING || starts("Throttling.") || c == "Rejected.Throttling" => {
            ErrorKind::Throttled
        }
        INTERNAL_ERROR | UNKNOWN_ERROR | "InternalError.Dispatch" => ErrorKind::Transient,
        c if c == SERVICE_UNAVAILABLE || starts("ServiceUnavailable.") => ErrorKind::Transient,
        OPERATION_CONFLICT
        | OPERATION_CONFLICT_DOTTED
        | "InvalidOperation.Conflict"
        | LAST_TOKEN_PROCESSING
        | "InvalidOperation.HasMemberEniAttached" => ErrorKind::Conflict,
        INVALID_ENI_STATE
        | INVALID_ECS_STATE
        | "IncorrectInstanceStatus"
        | "IncorrectVSwitchStatus" => ErrorKind::InvalidState,
        SIGNATURE_NONCE_USED => ErrorKind::Conflict,
        IDEMPOTENT_PARAMETER_MISMATCH
        | "InvalidIdempotenceParameter.Mismatch"
        | "IdempotentFailed" => ErrorKind::IdempotencyMismatch,
        VSWITCH_IP_NOT_ENOUGH | QUOTA_PRIVATE_IP => ErrorKind::SubnetExhausted,
        ENI_PER_INSTANCE_LIMIT
        | "MaxEniCountExceeded"
        | IPV4_COUNT_EXCEEDED
        | IPV6_COUNT_EXCEEDED
        | "MaxEniIpv6IpsCountExceeded"
        | "SecurityGroupInstanceLimitExceed" => ErrorKind::QuotaExceeded,
        _ if starts("QuotaExceed") => ErrorKind::QuotaExceeded,
        c if c.ends_with(".NotFound") && c != ACCESS_KEY_NOT_FOUND && c != INVALID_ACTION => {
            ErrorKind::NotFound
        }
        c if starts("Forbidden") && c != "Forbidden.AccessKeyDisabled" => ErrorKind::Permission,
        "NoPermission" => ErrorKind::Permission,
        ACCESS_KEY_NOT_FOUND
        | "Forbidden.AccessKeyDisabled"
        | SIGNATURE_DOES_NOT_MATCH
        | INCOMPLETE_SIGNATURE
        | MISSING_SECURITY_TOKEN
        | "InvalidAccessKeyId" => ErrorKind::Authentication,
        _ if starts("InvalidSecurityToken") => ErrorKind::Authentication,
        TIMESTAMP_EXPIRED | ILLEGAL_TIMESTAMP => ErrorKind::ClockSkew,
        IP_UNASSIGNED => ErrorKind::NotFound,
        _ if starts("MissingParameter")
            || starts("InvalidParameter")
            || starts("UnsupportedParameter")
            || starts("InvalidOperation.")
            || starts("InvalidIp.")
            || starts("InvalidPrivateIpAddress")
            || starts("InvalidVSwitch")
            || starts("InvalidSecurityGroup")
            || starts("InvalidAction")
            || starts("InvalidVersion")
            || starts("IllegalParameter") =>
        {
            ErrorKind::InvalidRequest
        }
        _ => match http_status {
            Some(500..=599) => ErrorKind::Transient,
            Some(429) => ErrorKind::Throttled,
            Some(404) => ErrorKind::NotFound,
            Some(403) => ErrorKind::Permission,
            Some(409) => ErrorKind::Conflict,
            Some(400..=499) => ErrorKind::InvalidRequest,
            _ => ErrorKind::Other,
        },
    }
}

/// Whether an error of `action` with `code` means the goal is already reached (the ENI or the
/// address is already gone): not-found on detach, delete and unassign, as Terway treats them.
#[must_use]
pub fn is_success_on(action: super::Action, code: &str) -> bool {
    use super::Action as A;
    match action {
        A::DetachNetworkInterface => code == ENI_NOT_FOUND || code == ECS_NOT_FOUND,
        A::DeleteNetworkInterface => code == ENI_NOT_FOUND,
        A::UnassignPrivateIpAddresses | A::UnassignIpv6Addresses => {
            code == ENI_NOT_FOUND || code == IP_UNASSIGNED
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ecs::Action;

    #[test]
    fn documented_codes_classify_as_ecs_api_md_says() {
        let cases = [
            (THROTTLING, ErrorKind::Throttled),
            (THROTTLING_USER, ErrorKind::Throttled),
            (THROTTLING_API, ErrorKind::Throttled),
            ("Rejected.Throttling", ErrorKind::Throttled),
            (SERVICE_UNAVAILABLE, ErrorKind::Transient),
            ("ServiceUnavailable.RegionMaintaining", ErrorKind::Transient),
            (INTERNAL_ERROR, ErrorKind::Transient),
            (UNKNOWN_ERROR, ErrorKind::Transient),
            (OPERATION_CONFLICT, ErrorKind::Conflict),
            (OPERATION_CONFLICT_DOTTED, ErrorKind::Conflict),
            (LAST_TOKEN_PROCESSING, ErrorKind::Conflict),
            (INVALID_ENI_STATE, ErrorKind::InvalidState),
            (INVALID_ECS_STATE, ErrorKind::InvalidState),
            ("IncorrectInstanceStatus", ErrorKind::InvalidState),
            (
                IDEMPOTENT_PARAMETER_MISMATCH,
                ErrorKind::IdempotencyMismatch,
            ),
            (
                "InvalidIdempotenceParameter.Mismatch",
                ErrorKind::IdempotencyMismatch,
            ),
            (VSWITCH_IP_NOT_ENOUGH, ErrorKind::SubnetExhausted),
            (QUOTA_PRIVATE_IP, ErrorKind::SubnetExhausted),
            ("QuotaExceed.Tags", ErrorKind::QuotaExceeded),
            ("QuotaExceeded", ErrorKind::QuotaExceeded),
            (ENI_PER_INSTANCE_LIMIT, ErrorKind::QuotaExceeded),
            ("MaxEniCountExceeded", ErrorKind::QuotaExceeded),
            (IPV4_COUNT_EXCEEDED, ErrorKind::QuotaExceeded),
            (IPV6_COUNT_EXCEEDED, ErrorKind::QuotaExceeded),
            ("MaxEniIpv6IpsCountExceeded", ErrorKind::QuotaExceeded),
            ("SecurityGroupInstanceLimitExceed", ErrorKind::QuotaExceeded),
            (IPV6_NOT_TURNED_ON, ErrorKind::InvalidRequest),
            ("InvalidOperation.Ipv6NotSupport", ErrorKind::InvalidRequest),
            (ZONE_MISMATCH, ErrorKind::InvalidRequest),
            (VPC_MISMATCH, ErrorKind::InvalidRequest),
            (INVALID_ENI_TYPE, ErrorKind::InvalidRequest),
            (DETACH_PRIMARY, ErrorKind::InvalidRequest),
            (
                "InvalidOperation.EniServiceManaged",
                ErrorKind::InvalidRequest,
            ),
            (ENI_NOT_FOUND, ErrorKind::NotFound),
            (ECS_NOT_FOUND, ErrorKind::NotFound),
            (INSTANCE_NOT_FOUND, ErrorKind::NotFound),
            (VSWITCH_NOT_FOUND, ErrorKind::NotFound),
            (SECURITY_GROUP_NOT_FOUND, ErrorKind::NotFound),
            (IP_UNASSIGNED, ErrorKind::NotFound),
            (IP_ASSIGNED, ErrorKind::InvalidRequest),
            (IP_DUPLICATED, ErrorKind::InvalidRequest),
            (IP_INVALID, ErrorKind::InvalidRequest),
            (FORBIDDEN_RAM, ErrorKind::Permission),
            ("Forbidden.SubUser", ErrorKind::Permission),
            ("Forbidden.NotSupportRAM", ErrorKind::Permission),
            ("Forbidden.Unauthorized", ErrorKind::Permission),
            ("NoPermission", ErrorKind::Permission),
            (ACCESS_KEY_NOT_FOUND, ErrorKind::Authentication),
            ("Forbidden.AccessKeyDisabled", ErrorKind::Authentication),
            (SIGNATURE_DOES_NOT_MATCH, ErrorKind::Authentication),
            (INCOMPLETE_SIGNATURE, ErrorKind::Authentication),
            (SECURITY_TOKEN_EXPIRED, ErrorKind::Authentication),
            (SECURITY_TOKEN_MALFORMED, ErrorKind::Authentication),
            (SECURITY_TOKEN_MISMATCH, ErrorKind::Authentication),
            (MISSING_SECURITY_TOKEN, ErrorKind::Authentication),
            (TIMESTAMP_EXPIRED, ErrorKind::ClockSkew),
            (ILLEGAL_TIMESTAMP, ErrorKind::ClockSkew),
            (SIGNATURE_NONCE_USED, ErrorKind::Conflict),
            ("MissingParameter.CommandId", ErrorKind::InvalidRequest),
            ("InvalidParameter.Foo", ErrorKind::InvalidRequest),
            ("UnsupportedParameter", ErrorKind::InvalidRequest),
        ];
        for (code, kind) in cases {
            assert_eq!(classify(code, None), kind, "{code}");
        }
    }

    #[test]
    fn retry_classes() {
        for c in [
            THROTTLING,
            INTERNAL_ERROR,
            OPERATION_CONFLICT,
            INVALID_ENI_STATE,
            SIGNATURE_NONCE_USED,
        ] {
            assert!(classify(c, None).is_retryable(), "{c}");
        }
        for c in [
            VSWITCH_IP_NOT_ENOUGH,
            "QuotaExceeded",
            FORBIDDEN_RAM,
            "InvalidParameter",
            ENI_NOT_FOUND,
            SIGNATURE_DOES_NOT_MATCH,
        ] {
            assert!(!classify(c, None).is_retryable(), "{c}");
        }
    }

    #[test]
    fn unknown_codes_fall_back_to_http_status() {
        assert_eq!(classify("Weird", Some(503)), ErrorKind::Transient);
        assert_eq!(classify("Weird", Some(429)), ErrorKind::Throttled);
        assert_eq!(classify("Weird", Some(400)), ErrorKind::InvalidRequest);
        assert_eq!(classify("Weird", None), ErrorKind::Other);
    }

    #[test]
    fn not_found_counts_as_success_only_where_terway_does() {
        assert!(is_success_on(Action::DetachNetworkInterface, ENI_NOT_FOUND));
        assert!(is_success_on(Action::DetachNetworkInterface, ECS_NOT_FOUND));
        assert!(is_success_on(Action::DeleteNetworkInterface, ENI_NOT_FOUND));
        assert!(is_success_on(
            Action::UnassignPrivateIpAddresses,
            IP_UNASSIGNED
        ));
        assert!(is_success_on(Action::UnassignIpv6Addresses, ENI_NOT_FOUND));
        assert!(!is_success_on(
            Action::AttachNetworkInterface,
            ENI_NOT_FOUND
        ));
        assert!(!is_success_on(
            Action::DeleteNetworkInterface,
            INVALID_ENI_STATE
        ));
    }
}
