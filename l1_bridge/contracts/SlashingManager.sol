// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IRollupInbox, IStakingRegistry} from "./Interfaces.sol";
import {Settlement, SettlementRecord} from "./Settlement.sol";
import {SettlementVerifier} from "./SettlementVerifier.sol";

/// @title SlashingManager
/// @notice Executes the stake-ledger records of finalized batches against the StakingRegistry, each
///         once: slash records (kind 1) move stake to the SlashTreasury; stake-release records
///         (kind 4) pay stake back to the record's payee. Stake leaves the registry only through a
///         release record the L2 decided (after it made sure no slash can still fall on the key), or
///         through the registry's escape hatch when the rollup has stopped, so no slash can be outrun.
///
/// Executed state: 1 bit per record in the execution bitmap (see {SettlementVerifier}), 255 records per
/// storage word: record key `k` lives in word `k / 255` at bit `k % 255`.
contract SlashingManager is SettlementVerifier {
    /// @notice The registry records are executed against. Immutable: callers cannot choose it.
    IStakingRegistry public immutable registry;

    event SlashExecuted(
        uint64 indexed batchIndex, bytes32 indexed recordId, bytes32 indexed rollupKey, uint256 amount, uint256 slashed
    );
    event StakeReleased(
        uint64 indexed batchIndex, bytes32 indexed recordId, bytes32 indexed rollupKey, address payee, uint256 amount
    );

    error ZeroPayee(bytes32 recordId);

    constructor(IRollupInbox inbox_, IStakingRegistry registry_) SettlementVerifier(inbox_) {
        registry = registry_;
    }

    /// @notice Execute slash record `r` of finalized batch `batchIndex`; `proof` shows `r` is in
    ///         `settlementRoot`, and the three roots must hash to the batch's output root. A slash
    ///         record's `payee` names the slashed party: the L1 address bound to the key, whose stake
    ///         for the key it takes.
    /// @return slashed wei actually moved to the SlashTreasury (min(amount, stake)).
    function executeSlash(
        uint64 batchIndex,
        bytes32 stateRoot,
        bytes32 settlementRoot,
        bytes32 lastBlockHash,
        SettlementRecord calldata r,
        bytes32[] calldata proof
    ) external nonReentrant returns (uint256 slashed) {
        if (r.kind != Settlement.KIND_SLASH) revert WrongRecordKind(r.kind);
        _execute(batchIndex, stateRoot, settlementRoot, lastBlockHash, r, proof);
        slashed = registry.slash(r.rollupKey, r.payee, r.amount);
        emit SlashExecuted(batchIndex, r.recordId, r.rollupKey, r.amount, slashed);
    }

    /// @notice Execute stake-release record `r` of finalized batch `batchIndex`: pay `r.amount` of
    ///         `r.rollupKey`'s stake to `r.payee`. Anyone may call.
    function executeRelease(
        uint64 batchIndex,
        bytes32 stateRoot,
        bytes32 settlementRoot,
        bytes32 lastBlockHash,
        SettlementRecord calldata r,
        bytes32[] calldata proof
    ) external nonReentrant returns (uint256 paid) {
        if (r.kind != Settlement.KIND_STAKE_RELEASE) revert WrongRecordKind(r.kind);
        if (r.payee == address(0)) revert ZeroPayee(r.recordId);
        _execute(batchIndex, stateRoot, settlementRoot, lastBlockHash, r, proof);
        paid = registry.release(r.rollupKey, payable(r.payee), r.amount);
        emit StakeReleased(batchIndex, r.recordId, r.rollupKey, r.payee, paid);
    }

    /// @notice Whether the record with `recordId` was executed.
    function isExecuted(bytes32 recordId) external view returns (bool) {
        (uint256 word, uint256 shift) = _position(recordId);
        return (_words[word] >> shift) & 1 != 0;
    }

    function _execute(
        uint64 batchIndex,
        bytes32 stateRoot,
        bytes32 settlementRoot,
        bytes32 lastBlockHash,
        SettlementRecord calldata r,
        bytes32[] calldata proof
    ) private {
        bytes32 expected = inbox.finalizedOutputRoot(batchIndex);
        _checkRecord(batchIndex, expected, stateRoot, settlementRoot, lastBlockHash, r, proof);
        (uint256 word, uint256 shift) = _position(r.recordId);
        uint256 bits = _words[word];
        if ((bits >> shift) & 1 != 0) revert RecordAlreadyExecuted(r.recordId);
        _words[word] = bits | (1 << shift);
    }

    function _position(bytes32 recordId) internal pure override returns (uint256 word, uint256 shift) {
        uint256 key = Settlement.executionKey(recordId);
        word = key / 255;
        shift = key % 255;
    }
}
