"""One stake ledger across both layers, and money the L2 cannot take going back where it came from.

* **Stake comes from L1 only**, from the key's bound address (`stf.identity`): a STAKE message
  from any other sender is released back to that sender by a STAKE_RELEASE record (the ETH sits
  in the StakingRegistry under (key, sender)). The L2 `stake` action (stake from the L2 balance)
  is refused: that stake had no ETH in the registry behind it, so L1 slashed it as 0 while L2
  burnt it, and it had no exit.
* **Stake leaves by the L2 `unstake` action**: the STF releases it only when the key has no
  submission in an open round (the only place a slash can still come from: a round's slashes are
  decided when it closes), and emits a STAKE_RELEASE record to the bound address, which L1 pays
  after finality like a withdrawal. The StakingRegistry's direct exit is only an escape hatch
  when the rollup stops; its STAKE_WITHDRAWN message lowers the key's stake here.
* **Deposits** credit a key's L2 balance only when their L1 sender is the key's bound address;
  anything else goes back to the sender by a REFUND record (job 0).
* **Job funding**: JOB_FUNDED for a job that cannot take it (unknown, completed) is refunded to
  the funder (a REFUND record against that job id's L1 pool); a job remembers its L1 funders, and
  what is left of its L1 pool when it ends goes back to them pro rata (REFUND records), not to
  the owner's L2 balance.
"""

from dataclasses import dataclass

from stf import jobs
from stf.context import Action, BlockInfo, Effects
from stf.encoding import from_u256, pack, u64_key, u256, unpack
from stf.errors import InvalidAction
from stf.identity import is_bound_to
from stf.settlement import REFUND, STAKE_RELEASE, new_record
from stf.state import KV

MAX_FUNDERS = 64  # distinct L1 funders a job remembers; later ones are refunded at once
_FUNDERS = b"jobfunders/"
_MIN_WITHDRAWAL = b"param/min_withdrawal"
_PROPOSAL_COUNT_KEY = b"count/proposals"


# -- L1 messages -------------------------------------------------------------------------------


def apply_deposit(state: KV, key: bytes, sender: bytes, amount: int, effects: Effects) -> None:
    from stf import accounts

    if is_bound_to(state, key, sender):
        accounts.credit(state, key, amount)
        effects.emit("Deposited", key=key, amount=amount)
        return
    record = new_record(state, REFUND, 0, 0, key, amount, payee=sender)
    effects.records.append(record)
    effects.emit(
        "DepositRefunded", key=key, sender=sender, amount=amount, record_id=record.record_id
    )


def apply_stake(state: KV, key: bytes, sender: bytes, amount: int, effects: Effects) -> None:
    if is_bound_to(state, key, sender):
        jobs.set_stake(state, key, jobs.get_stake(state, key) + amount)
        jobs.set_unbonding(state, key, False)
        effects.emit("Staked", client=key, amount=amount, total=jobs.get_stake(state, key))
        return
    record = new_record(state, STAKE_RELEASE, 0, 0, key, amount, payee=sender)
    effects.records.append(record)
    effects.emit(
        "StakeRefunded", client=key, sender=sender, amount=amount, record_id=record.record_id
    )


def apply_escape_exit(state: KV, key: bytes, sender: bytes, amount: int, effects: Effects) -> None:
    """The registry's escape hatch paid `sender` what it held for `key`: only the bound
    address's part is the key's stake here (other senders' parts were never credited)."""
    if is_bound_to(state, key, sender):
        stake = jobs.get_stake(state, key)
        jobs.set_stake(state, key, stake - min(stake, amount))
    effects.emit("StakeWithdrawn", client=key, sender=sender, amount=amount)


def _funders_key(job_id: int) -> bytes:
    return _FUNDERS + u64_key(job_id)


def get_funders(state: KV, job_id: int) -> list[tuple[bytes, int]]:
    raw = state.get(_funders_key(job_id))
    if raw is None:
        return []
    return [(addr, from_u256(amount)) for addr, amount in unpack(raw)]


def _put_funders(state: KV, job_id: int, funders: list[tuple[bytes, int]]) -> None:
    state.put(_funders_key(job_id), pack([[a, u256(x)] for a, x in sorted(funders)]))


def apply_job_funded(state: KV, job_id: int, sender: bytes, amount: int, effects: Effects) -> None:
    funders = dict(get_funders(state, job_id))
    job = jobs.get_job(state, job_id)
    full = sender not in funders and len(funders) >= MAX_FUNDERS
    if job is None or job.status != jobs.ACTIVE or full:
        record = new_record(state, REFUND, job_id, 0, bytes(32), amount, payee=sender)
        effects.records.append(record)
        effects.emit(
            "FundingRefunded",
            job_id=job_id,
            sender=sender,
            amount=amount,
            record_id=record.record_id,
        )
        return
    assert jobs.credit_job_pool_l1(state, job_id, amount, effects)
    funders[sender] = funders.get(sender, 0) + amount
    _put_funders(state, job_id, list(funders.items()))


def refund_unspent_l1(state: KV, job: "jobs.Job", effects: Effects) -> None:
    """At a job's end: what is left of its L1 pool goes back to its L1 funders, pro rata to what
    each put in (the rounding remainder to the largest funder, ties to the lowest address)."""
    left = job.pool_l1
    funders = get_funders(state, job.job_id)
    if not left or not funders:
        return
    total = sum(x for _, x in funders)
    shares = [(addr, left * x // total) for addr, x in funders]
    remainder = left - sum(s for _, s in shares)
    top = max(range(len(funders)), key=lambda i: (funders[i][1], -i))
    shares[top] = (shares[top][0], shares[top][1] + remainder)
    for addr, share in shares:
        if share:
            record = new_record(state, REFUND, job.job_id, 0, bytes(32), share, payee=addr)
            effects.records.append(record)
            effects.emit(
                "FundingRefunded",
                job_id=job.job_id,
                sender=addr,
                amount=share,
                record_id=record.record_id,
            )


# -- L2 actions ---------------------------------------------------------------------------------


def process_stake_l2(state: KV, action: Action, block: BlockInfo, effects: Effects) -> None:
    """The L2 path to a stake is gone: stake on L1 (StakingRegistry.stake) from the key's bound
    address. The action type stays in the codec so old encodings decode; it always fails."""
    raise InvalidAction(
        "stake_on_l1", "stake on L1 (StakingRegistry.stake) from the key's bound L1 address"
    )


@dataclass(frozen=True)
class Unstake:
    amount: int  # 0 = the whole stake


def open_submission_job(state: KV, client: bytes) -> int | None:
    """An active job whose open round holds a submission of `client` (its slash is still to be
    decided), or None. Scans the jobs (one read each)."""
    raw = state.get(_PROPOSAL_COUNT_KEY)
    count = 0 if raw is None else int.from_bytes(raw, "big")
    for job_id in range(1, count + 1):
        job = jobs.get_job(state, job_id)
        if job is None or job.status != jobs.ACTIVE:
            continue
        if jobs.get_submission(state, job_id, job.current_round, client) is not None:
            return job_id
    return None


def process_unstake(state: KV, action: Action, block: BlockInfo, effects: Effects) -> None:
    p: Unstake = action.payload
    stake = jobs.get_stake(state, action.sender)
    amount = stake if p.amount == 0 else p.amount
    if amount == 0:
        raise InvalidAction("nothing_staked", "the key has no stake")
    if amount > stake:
        raise InvalidAction("insufficient_stake", f"stake {stake} < amount {amount}")
    job_id = open_submission_job(state, action.sender)
    if job_id is not None:
        raise InvalidAction(
            "open_submission",
            f"the key has a submission in the open round of job {job_id}: unstake once it closes",
        )
    jobs.set_stake(state, action.sender, stake - amount)
    record = new_record(state, STAKE_RELEASE, 0, 0, action.sender, amount)
    effects.records.append(record)
    effects.emit(
        "StakeReleased",
        client=action.sender,
        amount=amount,
        total=stake - amount,
        payee=record.payee,
        record_id=record.record_id,
    )


# -- withdrawal minimum -------------------------------------------------------------------------


def set_min_withdrawal(state: KV, amount: int) -> None:
    state.put(_MIN_WITHDRAWAL, u256(amount))


def get_min_withdrawal(state: KV) -> int:
    raw = state.get(_MIN_WITHDRAWAL)
    return 0 if raw is None else from_u256(raw)


def process_withdraw(state: KV, action: Action, block: BlockInfo, effects: Effects) -> None:
    """`jobs.process_withdraw`, refused below the genesis minimum (nobody grinds the keeper with
    1-wei claims); its record pays the signed recipient or else the key's bound address."""
    p: jobs.Withdraw = action.payload
    minimum = get_min_withdrawal(state)
    if 0 < p.amount < minimum:
        raise InvalidAction("below_min_withdrawal", f"withdraw at least {minimum} wei")
    jobs.process_withdraw(state, action, block, effects)
