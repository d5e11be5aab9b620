"""The action set: every action type's payload schema and its processing rule.

The rollup codec decodes envelopes; this table says what a payload of each type must look
like and which `process_*` function applies it. Later action families register here too.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stf import accounts, identity, jobs, metering, models, staking
from stf.aggregation import RULE_NAMES
from stf.context import Action, BlockInfo, Effects
from stf.errors import InvalidAction
from stf.fields import (
    Field,
    decode_fields,
    encode_fields,
    f32_vector,
    fixed_bytes,
    list_of,
    optional_of,
    text,
    tuple_of,
    u32,
    u64,
    u256,
    var_bytes,
)
from stf.state import KV

Processor = Callable[[KV, Action, BlockInfo, Effects], None]


@dataclass(frozen=True)
class ActionSpec:
    name: str
    fields: tuple[Field, ...]
    payload_type: type
    process: Processor
    max_body_bytes: int = 4096


ACTIONS: dict[str, ActionSpec] = {}


def register(spec: ActionSpec) -> None:
    if spec.name in ACTIONS:
        raise ValueError(f"action {spec.name!r} registered twice")
    ACTIONS[spec.name] = spec


register(
    ActionSpec(
        name="transfer",
        fields=(fixed_bytes("to", 32), u256("amount")),
        payload_type=accounts.Transfer,
        process=accounts.process_transfer,
    )
)


_LAYER = tuple_of("layer", (text("name", 64), list_of("shape", u64("dim"), 8)))
_RATIO = tuple_of("ratio", (u64("num"), u64("den")))
_TERMS = tuple_of(
    "terms",
    (
        u32("rounds"),
        u64("min_participants"),
        u64("max_participants"),
        u64("f"),
        u256("stake_required"),
        u64("round_blocks"),
        u64("target_accuracy_bp"),
        var_bytes("aggregator", 32),
        u64("local_epochs"),
        u64("slash_bps"),
        u64("max_samples"),
        u64("krum_m"),
        tuple_of("rules", (_RATIO,) * len(RULE_NAMES)),
        u64("sample_weighting"),
        u64("reveal_blocks"),
    ),
)
_PARAMS_BODY = 4 * models.MAX_PARAMS + 64 * 1024


@dataclass(frozen=True)
class Propose:
    kind: str  # "access" or "train"
    model_id: str
    amount: int  # access: the price, escrowed; train: the reward pool, escrowed
    expiry_blocks: int  # access only (train jobs end with their rounds)
    terms: tuple[Any, ...] | None  # train only


def terms_from_tuple(raw: tuple[Any, ...]) -> jobs.JobTerms:
    return jobs.JobTerms.from_list([*raw[:12], list(raw[12]), *raw[13:]])


def terms_to_tuple(terms: jobs.JobTerms) -> tuple[Any, ...]:
    ratios = tuple(tuple(r) for r in terms.rules.as_list())
    return (
        terms.rounds,
        terms.min_participants,
        terms.max_participants,
        terms.f,
        terms.stake_required,
        terms.round_blocks,
        terms.target_accuracy_bp,
        terms.aggregator,
        terms.local_epochs,
        terms.slash_bps,
        terms.max_samples,
        terms.krum_m,
        ratios,
        terms.sample_weighting,
        terms.reveal_blocks,
    )


def process_propose(state: KV, action: Action, block: BlockInfo, effects: Effects) -> None:
    p: Propose = action.payload
    if p.kind == "access":
        if p.terms is not None:
            raise InvalidAction("bad_terms", "access proposals carry no job terms")
        models.open_access_proposal(
            state, action, block, effects, p.model_id, p.amount, p.expiry_blocks
        )
    elif p.kind == "train":
        if p.terms is None:
            raise InvalidAction("bad_terms", "train proposals carry job terms")
        model = models.get_model(state, p.model_id)
        if model is not None:  # a job beyond the chain's limits is refused here, at propose
            metering.check_job_limits(state, p.terms[2], model.param_count)
        jobs.open_job(
            state, action, block, effects, p.model_id, p.amount, terms_from_tuple(p.terms)
        )
    else:
        raise InvalidAction("bad_kind", "a proposal is of kind 'access' or 'train'")


def process_message(state: KV, action: Action, block: BlockInfo, effects: Effects) -> None:
    models.post_message(state, action, block, effects, jobs.is_job_member)


for _spec in (
    ActionSpec(
        "upload",
        (
            text("model_id", 64),
            list_of("arch", _LAYER, models.MAX_LAYERS),
            f32_vector("params", models.MAX_PARAMS),
            u64("frac_bits"),
            u256("price"),
            var_bytes("artifact", models.MAX_ARTIFACT_BYTES),
        ),
        models.Upload,
        models.process_upload,
        _PARAMS_BODY + models.MAX_ARTIFACT_BYTES,
    ),
    ActionSpec(
        "set_price",
        (text("model_id", 64), u256("price")),
        models.SetPrice,
        models.process_set_price,
    ),
    ActionSpec(
        "propose",
        (
            text("kind", 16),
            text("model_id", 64),
            u256("amount"),
            u64("expiry_blocks"),
            optional_of("terms", _TERMS),
        ),
        Propose,
        process_propose,
    ),
    ActionSpec(
        "approve",
        (u64("proposal_id"), var_bytes("sealed_key", 4096)),
        models.Approve,
        models.process_approve,
        8192,
    ),
    ActionSpec("reject", (u64("proposal_id"),), models.ProposalRef, models.process_reject),
    ActionSpec("cancel", (u64("proposal_id"),), models.ProposalRef, models.process_cancel),
    ActionSpec(
        "message",
        (u64("proposal_id"), text("text", models.MAX_MESSAGE_BYTES)),
        models.PostMessage,
        process_message,
    ),
    # The L2 path to a stake is gone (stf.staking): the type stays decodable and always fails.
    ActionSpec("stake", (u256("amount"),), jobs.Amount, staking.process_stake_l2),
    ActionSpec(
        "withdraw",
        (u256("amount"), var_bytes("recipient", 20)),
        jobs.Withdraw,
        staking.process_withdraw,
    ),
    ActionSpec("bind_l1", (fixed_bytes("address", 20),), identity.BindL1, identity.process_bind_l1),
    ActionSpec("unstake", (u256("amount"),), staking.Unstake, staking.process_unstake),
    ActionSpec(
        "commit",
        (u64("job_id"), u32("round"), fixed_bytes("commitment", 32)),
        jobs.CommitParams,
        jobs.process_commit,
    ),
    ActionSpec(
        "reveal",
        (
            u64("job_id"),
            u32("round"),
            f32_vector("params", models.MAX_PARAMS),
            u64("samples"),
            fixed_bytes("salt", 32),
        ),
        jobs.RevealParams,
        jobs.process_reveal,
        _PARAMS_BODY,
    ),
    ActionSpec(
        "aggregate",
        (u64("job_id"), u32("round"), u64("accuracy_bp")),
        jobs.AggregateRound,
        jobs.process_aggregate,
    ),
):
    register(_spec)


def get_spec(action_type: str) -> ActionSpec:
    spec = ACTIONS.get(action_type)
    if spec is None:
        raise InvalidAction("unknown_action", f"unknown action type {action_type!r}")
    return spec


def decode_payload(action_type: str, raw: Any) -> Any:
    spec = get_spec(action_type)
    return spec.payload_type(**decode_fields(spec.fields, raw))


def encode_payload(action_type: str, payload: Any) -> list[Any]:
    spec = get_spec(action_type)
    return encode_fields(spec.fields, {f.name: getattr(payload, f.name) for f in spec.fields})


def apply_action(state: KV, action: Action, block: BlockInfo, effects: Effects) -> None:
    """Apply one action's own effect (the nonce was already used by the caller)."""
    get_spec(action.type).process(state, action, block, effects)
