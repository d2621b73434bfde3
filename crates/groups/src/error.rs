//! Why the coordinator refused a request, and the Kafka error code for each reason.

/// A refusal from the coordinator. Several variants share one Kafka error code; the variants keep
/// the detail for logs and for the error message that JoinGroup/SyncGroup responses can carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("member id is not known to the group; rejoin with an empty member id")]
    UnknownMemberId,
    #[error("generation {generation_id} is not the group's current generation {current}")]
    IllegalGeneration { generation_id: i32, current: i32 },
    #[error("the group is rebalancing; rejoin the group")]
    RebalanceInProgress,
    #[error(
        "group instance id {group_instance_id} now belongs to another member; this member was fenced"
    )]
    FencedInstanceId { group_instance_id: String },
    #[error(
        "protocol type or protocols are not compatible with the group's \
         (every member must share the protocol type and at least one protocol)"
    )]
    InconsistentGroupProtocol,
    #[error(
        "session timeout {session_timeout_ms} ms is outside the broker's range [{min_ms}, {max_ms}]"
    )]
    InvalidSessionTimeout {
        session_timeout_ms: i32,
        min_ms: u64,
        max_ms: u64,
    },
    #[error("a member id is required; rejoin with the member id in this response")]
    MemberIdRequired,
    #[error("the group already has its maximum of {max} members")]
    GroupMaxSizeReached { max: usize },
    #[error("the group still has members; it can be deleted only when empty")]
    NonEmptyGroup,
    #[error("group does not exist")]
    GroupIdNotFound,
    #[error("group id must not be empty")]
    InvalidGroupId,
    #[error("member metadata is {bytes} bytes, over the broker's limit of {max}")]
    MemberMetadataTooLarge { bytes: usize, max: usize },
    #[error("assignment for member {member_id} is {bytes} bytes, over the broker's limit of {max}")]
    AssignmentTooLarge {
        member_id: String,
        bytes: usize,
        max: usize,
    },
    #[error(
        "the coordinator already holds its maximum of {max} groups; \
         delete unused groups or raise the limit"
    )]
    TooManyGroups { max: usize },
    #[error(
        "the coordinator's memory budget is exhausted ({needed} bytes needed, {available} free); \
         retry later or raise the limit"
    )]
    MemoryBudgetExhausted { needed: usize, available: usize },
    #[error(
        "member epoch {member_epoch} is fenced (the coordinator knows epoch {current}); \
         abandon all partitions and rejoin with epoch 0"
    )]
    FencedMemberEpoch { member_epoch: i32, current: i32 },
    #[error(
        "member epoch {member_epoch} is stale (the member is at epoch {current}); \
         retry with the epoch of the latest heartbeat response"
    )]
    StaleMemberEpoch { member_epoch: i32, current: i32 },
    #[error(
        "group instance id {group_instance_id} is still used by another member; \
         that member must leave (or its session expire) first"
    )]
    UnreleasedInstanceId { group_instance_id: String },
    #[error("server assignor {assignor:?} is not supported; use \"uniform\" or \"range\"")]
    UnsupportedAssignor { assignor: String },
    #[error("invalid request: {reason}")]
    InvalidRequest { reason: String },
    #[error("subscribed topic regex {regex:?} is not valid: {reason}")]
    InvalidRegularExpression { regex: String, reason: String },
    #[error(
        "group {group_id} is a classic group with members, not a consumer group; \
         use another group id, or wait until the classic group is empty"
    )]
    NotConsumerGroup { group_id: String },
    #[error(
        "group {group_id} is a consumer-protocol (KIP-848) group with members; \
         join it with group.protocol=consumer, or wait until it is empty"
    )]
    NotClassicGroup { group_id: String },
}

impl GroupError {
    /// Kafka's error code for this error.
    pub fn code(&self) -> i16 {
        match self {
            GroupError::UnknownMemberId => 25,
            GroupError::IllegalGeneration { .. } => 22,
            GroupError::RebalanceInProgress => 27,
            GroupError::FencedInstanceId { .. } => 82,
            GroupError::InconsistentGroupProtocol | GroupError::NotClassicGroup { .. } => 23,
            GroupError::InvalidSessionTimeout { .. } => 26,
            GroupError::MemberIdRequired => 79,
            GroupError::GroupMaxSizeReached { .. } => 81,
            GroupError::NonEmptyGroup => 68,
            GroupError::GroupIdNotFound | GroupError::NotConsumerGroup { .. } => 69,
            GroupError::InvalidGroupId => 24,
            // INVALID_REQUEST: the request is well-formed but breaks a broker limit.
            GroupError::MemberMetadataTooLarge { .. }
            | GroupError::AssignmentTooLarge { .. }
            | GroupError::InvalidRequest { .. } => 42,
            GroupError::InvalidRegularExpression { .. } => 128,
            GroupError::FencedMemberEpoch { .. } => 110,
            GroupError::UnreleasedInstanceId { .. } => 111,
            GroupError::UnsupportedAssignor { .. } => 112,
            GroupError::StaleMemberEpoch { .. } => 113,
            // UNKNOWN_SERVER_ERROR: Kafka has no code for "coordinator full"; a fatal error is
            // surfaced to the application instead of being retried silently forever.
            GroupError::TooManyGroups { .. } | GroupError::MemoryBudgetExhausted { .. } => -1,
        }
    }
}
