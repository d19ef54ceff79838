"""SQLAlchemy models, one file per entity. Importing this package registers every table."""

from patron.models.access import ApiKey, IdempotencyRecord, Role
from patron.models.campaign import (
    Campaign,
    CampaignChange,
    CampaignKind,
    CampaignRecipient,
    CampaignStatus,
    ContentType,
    RecipientGroup,
    Suppression,
)
from patron.models.consent import Channel, Consent, ConsentStatus, Purpose
from patron.models.customer import Customer
from patron.models.event import Event
from patron.models.identity import Identity, IdentityKind
from patron.models.import_run import ImportRun
from patron.models.job import Job, JobStatus
from patron.models.journey import EntryStatus, JourneyEntry, JourneyStep, TriggerCursor
from patron.models.loyalty import (
    AccountStatus,
    Coupon,
    CouponPool,
    CouponUse,
    EntryKind,
    LedgerEntry,
    LotUse,
    LoyaltyAccount,
    LoyaltyOperation,
    LoyaltyProgram,
    MiniProgram,
    MiniProgramMember,
    OpenLot,
    PosTransaction,
    Referral,
    ReferralStatus,
    TierChange,
    TransactionStatus,
)
from patron.models.merge import CandidateStatus, MergeCandidate, MergeLog
from patron.models.message import OPEN_CALL, CallOutcome, CallResult, Message, MessageStatus
from patron.models.order import Order, OrderKind, OrderLine
from patron.models.product import Product
from patron.models.score import AnalysisRun, CustomerScore, RunStatus
from patron.models.segment import Segment, SegmentBuild, SegmentMembership
from patron.models.user import AuditRecord, User

__all__ = [
    "OPEN_CALL",
    "AccountStatus",
    "AnalysisRun",
    "ApiKey",
    "AuditRecord",
    "CallOutcome",
    "CallResult",
    "Campaign",
    "CampaignChange",
    "CampaignKind",
    "CampaignRecipient",
    "CampaignStatus",
    "CandidateStatus",
    "Channel",
    "Consent",
    "ConsentStatus",
    "ContentType",
    "Coupon",
    "CouponPool",
    "CouponUse",
    "Customer",
    "CustomerScore",
    "EntryKind",
    "EntryStatus",
    "Event",
    "IdempotencyRecord",
    "Identity",
    "IdentityKind",
    "ImportRun",
    "Job",
    "JobStatus",
    "JourneyEntry",
    "JourneyStep",
    "LedgerEntry",
    "LotUse",
    "LoyaltyAccount",
    "LoyaltyOperation",
    "LoyaltyProgram",
    "MergeCandidate",
    "MergeLog",
    "Message",
    "MessageStatus",
    "MiniProgram",
    "MiniProgramMember",
    "OpenLot",
    "Order",
    "OrderKind",
    "OrderLine",
    "PosTransaction",
    "Product",
    "Purpose",
    "RecipientGroup",
    "Referral",
    "ReferralStatus",
    "Role",
    "RunStatus",
    "Segment",
    "SegmentBuild",
    "SegmentMembership",
    "Suppression",
    "TierChange",
    "TransactionStatus",
    "TriggerCursor",
    "User",
]
