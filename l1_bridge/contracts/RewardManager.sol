// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Address} from "@openzeppelin/contracts/utils/Address.sol";

import {IRewardTreasury, IRollupInbox} from "./Interfaces.sol";
import {MessageKinds, Settlement, SettlementRecord} from "./Settlement.sol";
import {SettlementVerifier} from "./SettlementVerifier.sol";

/// @title RewardManager
/// @notice Funds job reward pools and pays reward (kind 2), withdrawal (kind 3) and refund (kind 5)
///         records of finalized batches out of the RewardTreasury, each record once.
///
/// `fundJob(jobId)`: the protocol fee (`protocolFeeBps` of msg.value, rounded down) is sent once to
/// `protocolAddress`, the rest to the RewardTreasury, and a JOB_FUNDED message credits the job's pool
/// on L2. Payees: every record names its payee inside its Merkle leaf (`r.payee`, fixed by the L2 from
/// the key's signed binding, the signed withdrawal recipient, or the L1 sender being refunded); this
/// contract pays exactly that address and looks nothing up. Rewards, and refunds of job funding
/// (`jobId != 0`), are paid only for a job funded here and never beyond the net amount funded for it;
/// refunds with `jobId == 0` return deposits the L2 could not credit.
contract RewardManager is SettlementVerifier {
    struct JobPool {
        uint128 funded;
        uint128 paid;
    }

    IRewardTreasury public immutable treasury;
    address public immutable protocolAddress;
    uint16 public immutable protocolFeeBps;

    mapping(uint64 jobId => JobPool) private _jobs;

    event JobFunded(uint64 indexed jobId, address indexed funder, uint256 value, uint256 fee, uint256 net);
    event Claimed(
        uint64 indexed batchIndex,
        bytes32 indexed recordId,
        bytes32 indexed rollupKey,
        uint8 kind,
        address recipient,
        uint256 amount
    );

    error ZeroAmount();
    error UnknownJob(uint64 jobId);
    error RewardExceedsJobPool(uint64 jobId, uint256 available, uint256 amount);
    error ZeroPayee(bytes32 recordId);
    error InvalidConfig();

    constructor(
        IRollupInbox inbox_,
        IRewardTreasury treasury_,
        address protocolAddress_,
        uint16 protocolFeeBps_
    ) SettlementVerifier(inbox_) {
        if (protocolFeeBps_ >= 10_000 || (protocolFeeBps_ != 0 && protocolAddress_ == address(0))) {
            revert InvalidConfig();
        }
        treasury = treasury_;
        protocolAddress = protocolAddress_;
        protocolFeeBps = protocolFeeBps_;
    }

    /// @notice Fund job `jobId`'s reward pool with msg.value (minus the protocol fee).
    /// @return net wei credited to the pool.
    function fundJob(uint64 jobId) external payable nonReentrant returns (uint256 net) {
        if (msg.value == 0) revert ZeroAmount();
        uint256 fee = (msg.value * protocolFeeBps) / 10_000;
        net = msg.value - fee;
        JobPool storage pool = _jobs[jobId];
        pool.funded += uint128(net);
        emit JobFunded(jobId, msg.sender, msg.value, fee, net);
        inbox.sendMessage(MessageKinds.JOB_FUNDED, bytes32(0), msg.sender, net, abi.encode(jobId, fee));
        if (fee != 0) Address.sendValue(payable(protocolAddress), fee);
        Address.sendValue(payable(address(treasury)), net);
    }

    /// @notice Pay reward, withdrawal or refund record `r` of finalized batch `batchIndex` to `r.payee`.
    ///         Anyone may call; the payee is fixed by the record (see contract doc).
    /// @return recipient the address paid.
    function claim(
        uint64 batchIndex,
        bytes32 stateRoot,
        bytes32 settlementRoot,
        bytes32 lastBlockHash,
        SettlementRecord calldata r,
        bytes32[] calldata proof
    ) external nonReentrant returns (address recipient) {
        uint8 kind = r.kind;
        if (kind != Settlement.KIND_REWARD && kind != Settlement.KIND_WITHDRAWAL && kind != Settlement.KIND_REFUND) {
            revert WrongRecordKind(kind);
        }
        bytes32 expected = inbox.finalizedOutputRoot(batchIndex);
        _checkRecord(batchIndex, expected, stateRoot, settlementRoot, lastBlockHash, r, proof);

        (uint256 wordIndex, uint256 shift) = _position(r.recordId);
        uint256 word = _words[wordIndex];
        if ((word >> shift) & 1 != 0) revert RecordAlreadyExecuted(r.recordId);
        _words[wordIndex] = word | (1 << shift);

        recipient = r.payee;
        if (recipient == address(0)) revert ZeroPayee(r.recordId);
        if (kind == Settlement.KIND_REWARD || (kind == Settlement.KIND_REFUND && r.jobId != 0)) {
            uint64 jobId = r.jobId;
            uint256 amount = r.amount;
            JobPool memory pool = _jobs[jobId];
            if (pool.funded == 0) revert UnknownJob(jobId);
            uint256 available = pool.funded - pool.paid;
            if (amount > available) revert RewardExceedsJobPool(jobId, available, amount);
            _jobs[jobId] = JobPool({funded: pool.funded, paid: pool.paid + uint128(amount)});
        }

        emit Claimed(batchIndex, r.recordId, r.rollupKey, kind, recipient, r.amount);
        treasury.pay(payable(recipient), r.amount);
    }

    /// @notice Whether the reward/withdrawal/refund record with `recordId` was paid.
    function isClaimed(bytes32 recordId) external view returns (bool) {
        (uint256 word, uint256 shift) = _position(recordId);
        return (_words[word] >> shift) & 1 != 0;
    }

    /// @dev Claimed bits: record key `k` is bit `k % 255` of word `k / 255`.
    function _position(bytes32 recordId) internal pure override returns (uint256 word, uint256 shift) {
        uint256 key = Settlement.executionKey(recordId);
        word = key / 255;
        shift = key % 255;
    }

    /// @notice Net wei funded for `jobId` and wei of it paid out as rewards.
    function jobPool(uint64 jobId) external view returns (uint256 funded, uint256 paid) {
        JobPool memory pool = _jobs[jobId];
        return (pool.funded, pool.paid);
    }
}
