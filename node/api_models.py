"""The HTTP API's answers as types: every view builds its JSON body as one of these, and the
OpenAPI description (node.server.openapi) is generated from them, so the two cannot drift apart.

Enumerations are taken from the constants the STF, the node and the L1 bridge write, not
retyped here; `Literal`s the type checker can see are checked against them by the tests."""

from typing import Annotated, Any, Literal, NotRequired, TypedDict

from l1_bridge import batches
from l1_bridge.contracts import DEPLOYMENT_FORMAT, DeploymentParams
from rollup.block import HeaderJson, L1OriginJson, ReceiptJson
from rollup.jsonshape import (
    ChecksumAddress,
    DecimalString,
    Hex,
    Hex32,
    Keywords,
    Uint,
    keywords,
)
from rollup.smt import SmtProofJson
from stf import aggregation, jobs, models, settlement


def enum_of(*values: str | int) -> Keywords:
    """JSON Schema keywords naming the only values a field takes."""
    return keywords(enum=tuple(values))


ActionState = Literal["accepted", "executed", "failed", "committed", "finalized"]
DecisionReason = Annotated[
    str,
    enum_of(
        *sorted(
            {aggregation.KEPT, aggregation.EXCLUDED}
            | aggregation.EVIDENCE_REASONS
            | aggregation.SUSPICION_REASONS
            | aggregation.SLASHING_REASONS
        )
    ),
]
Outcome = Annotated[
    str,
    enum_of(aggregation.KEPT_OUTCOME, aggregation.EXCLUDED_OUTCOME, aggregation.SLASHED_OUTCOME),
]
JobStatus = Annotated[str, enum_of(jobs.ACTIVE, jobs.COMPLETED)]
RoundStatus = Annotated[
    str, enum_of(jobs.ROUND_OPEN, jobs.ROUND_REVEAL, jobs.ROUND_AGGREGATED, jobs.ROUND_EXPIRED)
]
ProposalStatus = Annotated[
    str, enum_of(models.OPEN, models.APPROVED, models.REJECTED, models.EXPIRED, models.ACTIVE)
]
BatchStatus = Annotated[
    str,
    enum_of(
        batches.PENDING, batches.COMMITTED, batches.FINALIZED, batches.CHALLENGED, batches.DISCARDED
    ),
]
RecordKindCode = Annotated[int, enum_of(*sorted(settlement.KIND_NAMES))]
Ratio = tuple[Uint, Uint]
KeeperState = Annotated[
    str,
    keywords(
        pattern="^(?:settled|failed:.+)$",
        description="settled on L1, or failed:<error> (the keeper retries it every 60 s)",
    ),
]


class Error(TypedDict):
    """Every refusal: a machine-readable code and a human-readable detail."""

    error: str
    detail: str


# -- ingress -------------------------------------------------------------------------------


class Accepted(TypedDict):
    hash: Hex32
    status: Literal["accepted"]


class BatchItemRejected(TypedDict):
    """One refused action of a batch, with the HTTP status it alone would have had."""

    error: str
    detail: str
    status: Annotated[int, keywords(minimum=400, maximum=599)]


class BatchResult(TypedDict):
    accepted: Uint
    rejected: Uint
    results: list[Accepted | BatchItemRejected]


class ActionStatus(TypedDict):
    """accepted -> executed (or failed) -> committed (its batch is on L1) -> finalized."""

    hash: Hex32
    status: ActionState
    height: Uint | None
    index: Uint | None
    batch: Uint | None
    receipt: NotRequired[ReceiptJson]


# -- chain reads ---------------------------------------------------------------------------


class Block(HeaderJson):
    """A header with its action hashes."""

    action_count: Uint
    action_hashes: list[Hex32]


class BlockFull(Block):
    """`?full=1`: the block with its encoded actions, L1 messages and receipts."""

    actions: list[Hex]
    l1_messages: list[Hex]
    receipts: list[ReceiptJson]


class StateProof(TypedDict):
    """A state value (null: absent) with its Merkle proof against the head state root."""

    height: Uint
    state_root: Hex32
    state_key: Hex
    value: Hex | None
    proof: SmtProofJson


class AccountFields(TypedDict):
    key: Hex32
    nonce: Uint
    next_nonce: Uint
    balance: DecimalString


class Account(StateProof, AccountFields):
    """An account (absent: nonce 0, balance 0) with its Merkle proof."""


class Head(TypedDict):
    height: Uint
    hash: Hex32
    state_root: Hex32


class SequencerHealth(TypedDict):
    """A follower's view of the sequencer it follows."""

    url: str
    reachable: bool
    head_height: Uint | None
    lag_blocks: int | None
    seconds_since_contact: float | None
    last_error: str | None
    stopped: str | None


class Health(TypedDict):
    """A follower says so, and how its sequencer looks from here."""

    status: Literal["ok"]
    role: Literal["sequencer", "follower"]
    sequencer: NotRequired[SequencerHealth]
    chain_id: Uint
    genesis_hash: Hex32
    head: Head
    pending_actions: Uint


# -- models, proposals, jobs ---------------------------------------------------------------


class Layer(TypedDict):
    name: str
    shape: list[Uint]


class Model(TypedDict):
    model_id: str
    owner: Hex32
    arch: list[Layer]
    param_count: Uint
    frac_bits: Uint
    price: DecimalString
    version: Uint
    params_hash: Hex32
    artifact_hash: Hex32 | None


class ModelList(TypedDict):
    count: Uint
    models: list[Model]


class ModelCount(TypedDict):
    count: Uint


class ModelPrice(TypedDict):
    model_id: str
    price: DecimalString


class FixedParams(TypedDict):
    """Parameters as fixed-point integers: value = integer / 2**frac_bits."""

    frac_bits: Uint
    count: Uint
    values: list[int]


class ModelAccess(TypedDict):
    model_id: str
    buyer: Hex32
    sealed_key: Hex


class Proposal(TypedDict):
    proposal_id: Uint
    kind: Literal["access", "train"]
    proposer: Hex32
    model_id: str
    amount: DecimalString
    status: ProposalStatus
    created_height: Uint
    expiry_height: Uint | None
    job_id: Uint | None


class Message(TypedDict):
    index: Uint
    author: Hex32
    text: str
    height: Uint
    timestamp_ms: Uint


class ProposalMessages(TypedDict):
    proposal_id: Uint
    messages: list[Message]


class Rules(TypedDict):
    """The job's exclusion thresholds, each a ratio [numerator, denominator]."""

    near_copy_norm: Ratio
    affine_residual: Ratio
    isolation_ratio: Ratio
    opposed_max: Ratio
    near_duplicate: Ratio
    replay_tolerance: Ratio
    krum_outlier: Ratio


class JobTerms(TypedDict):
    rounds: Uint
    min_participants: Uint
    max_participants: Uint
    f: Uint
    stake_required: DecimalString
    round_blocks: Uint
    target_accuracy_bp: Uint
    local_epochs: Uint
    slash_bps: Uint
    max_samples: Uint
    krum_m: Uint
    sample_weighting: Uint
    reveal_blocks: Uint
    rules: Rules


class Job(TypedDict):
    job_id: Uint
    model_id: str
    owner: Hex32
    aggregator: Hex32
    status: JobStatus
    current_round: Uint
    pool: DecimalString
    funded: DecimalString
    param_count: Uint
    frac_bits: Uint
    terms: JobTerms


class RoundSubmission(TypedDict):
    """A commitment, and once revealed its samples and parameter hash."""

    client: Hex32
    commitment: Hex32
    height: Uint
    revealed: bool
    samples: Uint | None
    params_hash: Hex32 | None
    revealed_height: Uint | None


class RoundDecision(TypedDict):
    client: Hex32
    reason: DecisionReason
    score: DecimalString | None
    outcome: Outcome
    kept: bool
    excluded: bool
    slashed: bool


class Round(TypedDict):
    job_id: Uint
    round: Uint
    status: RoundStatus
    opened_height: Uint
    deadline_height: Uint
    reveal_deadline_height: Uint | None
    submissions: list[RoundSubmission]
    decisions: list[RoundDecision]
    accuracy_bp: Uint
    global_hash: Hex32 | None


class Stake(TypedDict):
    key: Hex32
    stake: DecimalString


# -- L1 ------------------------------------------------------------------------------------


class Batch(TypedDict):
    index: Uint
    status: BatchStatus
    first_height: Uint
    last_height: Uint
    state_root: Hex32
    settlement_root: Hex32
    last_block_hash: Hex32
    output_root: Hex32
    prev_output_root: Hex32
    data_hash: Hex32
    records: Uint


class BatchBlock(TypedDict):
    """What a verifier replays: a block's actions and L1 messages, encoded."""

    height: Uint
    hash: Hex32
    timestamp_ms: Uint
    l1_origin: L1OriginJson
    actions: list[Hex]
    l1_messages: list[Hex]


class BatchFull(Batch):
    """`?full=1`: the batch with its blocks' data."""

    blocks: list[BatchBlock]


class BatchList(TypedDict):
    batches: list[Batch]


class L1Record(TypedDict):
    """A settlement record as L1 takes it (`SettlementRecord` of the Solidity contracts)."""

    version: Uint
    kind: RecordKindCode
    job_id: Uint
    round: Uint
    rollup_key: Hex32
    payee: ChecksumAddress
    amount: DecimalString
    record_id: Hex32


class SettlementProof(TypedDict):
    """Exactly the arguments of SlashingManager.executeSlash / RewardManager.claim, and
    what the keeper did with the record (null: not tried yet)."""

    batch_index: Uint
    batch_status: BatchStatus
    settled: KeeperState | None
    state_root: Hex32
    settlement_root: Hex32
    last_block_hash: Hex32
    output_root: Hex32
    record: L1Record
    proof: list[Hex32]


class Deployment(TypedDict):
    """The deployment file `fedrollup deploy` writes (same fields, same values)."""

    format: Annotated[str, keywords(const=DEPLOYMENT_FORMAT)]
    chainId: Uint
    blockNumber: Uint
    contracts: dict[str, ChecksumAddress]
    params: DeploymentParams


class JsonRpcError(TypedDict):
    code: int
    message: str
    data: NotRequired[Any]


class JsonRpcResponse(TypedDict):
    """A JSON-RPC 2.0 response: a result or an error (reverts carry their data, code 3)."""

    jsonrpc: Literal["2.0"]
    id: int | str | None
    result: NotRequired[Any]
    error: NotRequired[JsonRpcError]


class OpenApiDocument(TypedDict):
    openapi: Literal["3.1.0"]
    info: dict[str, Any]
    jsonSchemaDialect: str
    paths: dict[str, Any]
    components: dict[str, Any]
