// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IRollupInbox, ISlashingManager, IStakingRegistry} from "./Interfaces.sol";
import {Settlement, SettlementRecord} from "./Settlement.sol";
import {SettlementVerifier} from "./SettlementVerifier.sol";

/// @title SlashingManager
/// @notice Executes slash records (kind 1) of finalized batches against the StakingRegistry, each once,
///         and tracks *pending* slashes: anyone may flag a slash record of a committed batch (final or
///         not) so the slashed key cannot withdraw its stake before the slash executes. A flag is
///         released when the slash executes, or by `clearStalePendingSlash` once its batch was
///         discarded (no longer committed with the same output root).
///
/// Executed/flagged state: 2 bits per record in the execution bitmap (see {SettlementVerifier}),
/// 127 records per storage word: record key `k` lives in word `k / 127` at bits `2 * (k % 127)`.
contract SlashingManager is SettlementVerifier, ISlashingManager {
    struct PendingFlag {
        bytes32 rollupKey;
        bytes32 outputRoot;
        uint64 batchIndex;
    }

    /// @notice The registry slashes are executed against. Immutable: callers cannot choose it.
    IStakingRegistry public immutable registry;

    uint256 private constant EXECUTED = 1;
    uint256 private constant FLAGGED = 2;

    mapping(bytes32 recordId => PendingFlag) private _flags;
    mapping(bytes32 rollupKey => uint256) private _pendingCount;

    event SlashExecuted(
        uint64 indexed batchIndex, bytes32 indexed recordId, bytes32 indexed rollupKey, uint256 amount, uint256 slashed
    );
    event PendingSlashFlagged(
        uint64 indexed batchIndex, bytes32 indexed recordId, bytes32 indexed rollupKey, uint256 amount, address flagger
    );
    event PendingSlashCleared(uint64 indexed batchIndex, bytes32 indexed recordId, bytes32 indexed rollupKey);

    error AlreadyFlagged(bytes32 recordId);
    error NotFlagged(bytes32 recordId);
    error FlagStillValid(bytes32 recordId);

    constructor(IRollupInbox inbox_, IStakingRegistry registry_) SettlementVerifier(inbox_) {
        registry = registry_;
    }

    /// @notice Execute slash record `r` of finalized batch `batchIndex`; `proof` shows `r` is in
    ///         `settlementRoot`, and the three roots must hash to the batch's output root.
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
        bytes32 expected = inbox.finalizedOutputRoot(batchIndex);
        _checkRecord(batchIndex, expected, stateRoot, settlementRoot, lastBlockHash, r, proof);

        (uint256 word, uint256 shift) = _position(r.recordId);
        uint256 bits = _words[word];
        uint256 state = (bits >> shift) & 3;
        if (state & EXECUTED != 0) revert RecordAlreadyExecuted(r.recordId);
        _words[word] = (bits & ~(FLAGGED << shift)) | (EXECUTED << shift);
        if (state & FLAGGED != 0) _releaseFlag(r.recordId);

        slashed = registry.slash(r.rollupKey, r.amount);
        emit SlashExecuted(batchIndex, r.recordId, r.rollupKey, r.amount, slashed);
    }

    /// @notice Flag slash record `r` of committed batch `batchIndex` as pending: until it executes (or
    ///         the batch is discarded) the slashed key cannot withdraw its stake. Anyone may call.
    function flagPendingSlash(
        uint64 batchIndex,
        bytes32 stateRoot,
        bytes32 settlementRoot,
        bytes32 lastBlockHash,
        SettlementRecord calldata r,
        bytes32[] calldata proof
    ) external {
        if (r.kind != Settlement.KIND_SLASH) revert WrongRecordKind(r.kind);
        bytes32 committed = inbox.committedOutputRoot(batchIndex);
        _checkRecord(batchIndex, committed, stateRoot, settlementRoot, lastBlockHash, r, proof);

        (uint256 word, uint256 shift) = _position(r.recordId);
        uint256 bits = _words[word];
        uint256 state = (bits >> shift) & 3;
        if (state & EXECUTED != 0) revert RecordAlreadyExecuted(r.recordId);
        if (state & FLAGGED != 0) revert AlreadyFlagged(r.recordId);
        _words[word] = bits | (FLAGGED << shift);
        _flags[r.recordId] = PendingFlag({rollupKey: r.rollupKey, outputRoot: committed, batchIndex: batchIndex});
        ++_pendingCount[r.rollupKey];
        emit PendingSlashFlagged(batchIndex, r.recordId, r.rollupKey, r.amount, msg.sender);
    }

    /// @notice Release the flag of `recordId` whose batch was discarded (the index is no longer
    ///         committed, or is committed with a different output root). Anyone may call.
    function clearStalePendingSlash(bytes32 recordId) external {
        PendingFlag memory f = _flags[recordId];
        if (f.outputRoot == bytes32(0)) revert NotFlagged(recordId);
        if (f.batchIndex < inbox.nextBatchIndex() && inbox.committedOutputRoot(f.batchIndex) == f.outputRoot) {
            revert FlagStillValid(recordId);
        }
        (uint256 word, uint256 shift) = _position(recordId);
        _words[word] &= ~(FLAGGED << shift);
        _releaseFlag(recordId);
    }

    /// @notice Number of flagged, not yet executed slashes against `rollupKey`.
    function pendingSlashCount(bytes32 rollupKey) external view returns (uint256) {
        return _pendingCount[rollupKey];
    }

    /// @notice Whether the slash record with `recordId` was executed.
    function isExecuted(bytes32 recordId) external view returns (bool) {
        (uint256 word, uint256 shift) = _position(recordId);
        return (_words[word] >> shift) & EXECUTED != 0;
    }

    /// @notice The pending flag of `recordId` (all zero if not flagged).
    function pendingFlag(bytes32 recordId)
        external
        view
        returns (bytes32 rollupKey, bytes32 outputRoot, uint64 batchIndex)
    {
        PendingFlag memory f = _flags[recordId];
        return (f.rollupKey, f.outputRoot, f.batchIndex);
    }

    function _releaseFlag(bytes32 recordId) private {
        PendingFlag memory f = _flags[recordId];
        delete _flags[recordId];
        --_pendingCount[f.rollupKey];
        emit PendingSlashCleared(f.batchIndex, recordId, f.rollupKey);
    }

    function _position(bytes32 recordId) internal pure override returns (uint256 word, uint256 shift) {
        uint256 key = Settlement.executionKey(recordId);
        word = key / 127;
        shift = (key % 127) << 1;
    }
}
