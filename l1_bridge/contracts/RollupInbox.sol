// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {Address} from "@openzeppelin/contracts/utils/Address.sol";

import {IRollupInbox} from "./Interfaces.sol";
import {MessageKinds} from "./Settlement.sol";
import {TwoStepAdmin} from "./TwoStepAdmin.sol";

/// @title RollupInbox
/// @notice Batch output-root commitments of the fedrollup L2 (optimistic, with a challenge window and
///         a guardian that resolves challenges) and the numbered L1→L2 message stream.
///
/// Batches: the proposer commits batch `index` with `commitBatch`, strictly sequentially. A batch is
/// *finalized* once `challengeWindow` seconds have passed since it was committed and it is not
/// frozen. A challenger may `challenge` a batch inside its window: that batch and every later one
/// (including ones committed meanwhile) are frozen until the guardian resolves the challenge;
/// `valid` unfreezes, `!valid` discards the batch and all later ones (`nextBatchIndex` rolls back and
/// the proposer recommits from there). Finalized batches can never be frozen or discarded.
///
/// Storage and gas: a commit writes exactly one new storage slot, the output root (non-zero; it is
/// zeroed again if the batch is discarded, so "root != 0" means "committed"). Per-batch metadata
/// lives in a ring of `maxPendingBatches` 64-bit lanes (4 per slot, pre-initialised by the
/// constructor so writes are non-zero→non-zero): lane = commit time (40 bits) | ring epoch of the
/// batch (`index / maxPendingBatches`, 23 bits) | frozen flag (bit 63). Batch `i + maxPendingBatches`
/// reuses the lane of batch `i` and may only be committed once batch `i` is final
/// (`TooManyPendingBatches` otherwise), so a lane holding a later epoch proves the earlier batch
/// final. The previous output root is checked against a 128-bit keccak tag kept in the head slot
/// next to `nextBatchIndex`, instead of reading the previous root. Finality checks read 2 slots.
///
/// Messages: `deposit` (public, payable; the ETH is forwarded to the RewardTreasury as L2 backing)
/// and `sendMessage` (only the StakingRegistry and RewardManager) append to one numbered stream; see
/// {MessageKinds} for the kinds and field meanings. Forced inclusion: every commit states how many
/// messages the L2 has consumed after its batch (`messagesConsumed`, the L2's next message nonce,
/// which its state root commits to and `fedrollup verify` checks); a commit that claims more than
/// exist, or leaves unconsumed a message older than `inclusionWindow` seconds, is refused. So the
/// sequencer cannot keep a deposit or a stake out of the L2 and go on committing.
///
/// Roles, each a separate address from the constructor on (none may be zero): the admin
/// ({TwoStepAdmin}: moves in two steps) grants and revokes guardians and challengers and rotates
/// the proposer with `setProposer`; the proposer commits; guardians resolve challenges;
/// challengers challenge. The proposer shares its storage slot with the message count, which
/// `commitBatch` reads anyway, so rotation costs the commit no extra storage read.
contract RollupInbox is TwoStepAdmin, AccessControl, IRollupInbox {
    bytes32 public constant GUARDIAN_ROLE = keccak256("GUARDIAN_ROLE");
    bytes32 public constant CHALLENGER_ROLE = keccak256("CHALLENGER_ROLE");

    /// @dev `frozenFrom` value meaning "nothing frozen".
    uint64 public constant NOT_FROZEN = type(uint64).max;

    uint256 private constant LANE_MASK = 0xffffffffffffffff;
    uint256 private constant TIME_MASK = 0xffffffffff; // 40 bits
    uint256 private constant EPOCH_SHIFT = 40;
    uint256 private constant EPOCH_MASK = 0x7fffff; // 23 bits
    uint256 private constant FROZEN = 1 << 63;
    /// @dev Lane value meaning "no live batch needs this lane" (initial value, and the value a discard
    ///      resets lanes to): whatever batch held it before was final. No real commit has time 1.
    uint256 private constant LANE_FREE = 1;
    /// @dev Every lane of a ring slot set to LANE_FREE.
    uint256 private constant RING_SLOT_INIT = 0x0000000000000001000000000000000100000000000000010000000000000001;

    /// @notice Seconds after its commit during which a batch can be challenged.
    uint64 public immutable challengeWindow;
    /// @notice The output root batch 0 builds on.
    bytes32 public immutable genesisOutputRoot;
    /// @notice Where deposited ETH is forwarded (it backs L2 balances and pays withdrawals).
    address public immutable rewardTreasury;
    /// @notice Registered message senders.
    address public immutable stakingRegistry;
    address public immutable rewardManager;
    /// @notice Ring capacity: how many not-yet-final batches may exist at once.
    uint256 public immutable maxPendingBatches;
    /// @notice Deployment time (what {lastCommitTime} answers before the first commit).
    uint64 public immutable deployedAt;
    /// @notice Seconds within which a message must be consumed by a committed batch.
    uint64 public immutable inclusionWindow;

    struct Head {
        uint64 nextIndex;
        uint64 frozenFrom;
        bytes16 lastRootTag;
    }

    /// @dev The proposer and the message count, packed: `commitBatch` reads both with one SLOAD.
    struct Stream {
        address proposer;
        uint96 messageCount;
    }

    Head private _head;
    Stream private _stream;
    mapping(uint256 index => bytes32) private _outputRoots;
    mapping(uint256 ringSlot => uint256) private _ring;
    uint64[] private _pendingChallenges;
    mapping(uint256 nonce => uint256) private _messageTime;
    /// @dev Last time the guardian resolved a challenge (a discard rolls the head back: the
    ///      escape hatch must not read that as "nothing committed since deployment").
    uint64 private _lastResolvedAt;

    event BatchCommitted(
        uint64 indexed index,
        bytes32 outputRoot,
        bytes32 prevOutputRoot,
        bytes32 dataHash,
        uint64 committedAt,
        uint64 messagesConsumed
    );
    event BatchChallenged(uint64 indexed index, address indexed challenger);
    event ChallengeResolved(uint64 indexed index, bool valid, address indexed guardian);
    /// @notice Batches `fromIndex` .. `toIndex - 1` were discarded; `fromIndex` is the next index.
    event BatchesDiscarded(uint64 indexed fromIndex, uint64 toIndex);
    event ProposerChanged(address indexed previousProposer, address indexed newProposer);
    event MessageSent(
        uint256 indexed nonce, uint8 indexed kind, bytes32 indexed rollupKey, address sender, uint256 amount, bytes data
    );

    error NotProposer(address caller);
    error UnexpectedBatchIndex(uint64 expected, uint64 got);
    error PrevOutputRootMismatch(uint64 index, bytes32 got);
    error ZeroOutputRoot();
    error TooManyPendingBatches(uint64 index);
    error BatchNotCommitted(uint64 index);
    error BatchNotFinalized(uint64 index);
    error ChallengeWindowClosed(uint64 index);
    error AlreadyChallenged(uint64 index);
    error NotChallenged(uint64 index);
    error UnauthorizedMessageSender(address caller, uint8 kind);
    error ZeroAmount();
    error ZeroRollupKey();
    error InvalidConfig();
    error MessagesNotSent(uint64 consumed, uint256 sent);
    error MessageNotIncluded(uint256 nonce, uint256 sentAt);
    error UnknownRole(bytes32 role);

    /// @param admin_ the admin ({TwoStepAdmin}): grants/revokes guardians and challengers, rotates the
    ///        proposer. No role is held by the zero address (`ZeroAddress`).
    /// @param maxPendingBatches_ ring capacity, a multiple of 4 (the constructor pre-initialises
    ///        maxPendingBatches_ / 4 storage slots).
    constructor(
        address admin_,
        address proposer_,
        address guardian_,
        address challenger_,
        uint64 challengeWindow_,
        bytes32 genesisOutputRoot_,
        address rewardTreasury_,
        address stakingRegistry_,
        address rewardManager_,
        uint256 maxPendingBatches_,
        uint64 inclusionWindow_
    ) TwoStepAdmin(admin_) {
        _requireNonZero(proposer_);
        _requireNonZero(guardian_);
        _requireNonZero(challenger_);
        if (
            rewardTreasury_ == address(0) || stakingRegistry_ == address(0)
                || rewardManager_ == address(0) || challengeWindow_ == 0 || challengeWindow_ > TIME_MASK
                || maxPendingBatches_ == 0 || maxPendingBatches_ % 4 != 0 || maxPendingBatches_ > 1 << 32
                || inclusionWindow_ == 0
        ) revert InvalidConfig();
        inclusionWindow = inclusionWindow_;
        _stream.proposer = proposer_;
        emit ProposerChanged(address(0), proposer_);
        challengeWindow = challengeWindow_;
        genesisOutputRoot = genesisOutputRoot_;
        rewardTreasury = rewardTreasury_;
        stakingRegistry = stakingRegistry_;
        rewardManager = rewardManager_;
        maxPendingBatches = maxPendingBatches_;
        deployedAt = uint64(block.timestamp);
        for (uint256 i = 0; i < maxPendingBatches_ / 4; ++i) {
            _ring[i] = RING_SLOT_INIT;
        }
        _head = Head({nextIndex: 0, frozenFrom: NOT_FROZEN, lastRootTag: _tag(genesisOutputRoot_)});
        _grantRole(GUARDIAN_ROLE, guardian_);
        _grantRole(CHALLENGER_ROLE, challenger_);
    }

    // ------------------------------------------------------------------ roles

    /// @notice The only address allowed to commit batches.
    function proposer() external view returns (address) {
        return _stream.proposer;
    }

    /// @notice Rotate the proposer (admin only): from this transaction on only `newProposer` can
    ///         commit; the old one is refused (`NotProposer`).
    function setProposer(address newProposer) external onlyAdmin {
        _requireNonZero(newProposer);
        address previous = _stream.proposer;
        _stream.proposer = newProposer;
        emit ProposerChanged(previous, newProposer);
    }

    /// @notice Grant GUARDIAN_ROLE or CHALLENGER_ROLE (admin only; no other role exists here: the
    ///         admin itself moves only by {TwoStepAdmin}).
    function grantRole(bytes32 role, address account) public override onlyAdmin {
        if (role != GUARDIAN_ROLE && role != CHALLENGER_ROLE) revert UnknownRole(role);
        _requireNonZero(account);
        _grantRole(role, account);
    }

    /// @notice Revoke a guardian or a challenger (admin only).
    function revokeRole(bytes32 role, address account) public override onlyAdmin {
        _revokeRole(role, account);
    }

    // ------------------------------------------------------------------ batches

    /// @notice Commit the output root of batch `index` (proposer only). `dataHash` commits to the
    ///         batch data (it is only logged). `messagesConsumed`: the L2's next L1-message nonce
    ///         after this batch (see the contract doc: forced inclusion).
    function commitBatch(
        uint64 index,
        bytes32 prevOutputRoot,
        bytes32 outputRoot,
        bytes32 dataHash,
        uint64 messagesConsumed
    ) external {
        Stream memory stream = _stream;
        if (msg.sender != stream.proposer) revert NotProposer(msg.sender);
        _checkInclusion(messagesConsumed, stream.messageCount);
        // Head slot layout: nextIndex (bits 0..63) | frozenFrom (64..127) | lastRootTag (128..255).
        uint256 head;
        assembly ("memory-safe") {
            head := sload(_head.slot)
        }
        uint256 next = head & LANE_MASK;
        if (index != next) revert UnexpectedBatchIndex(uint64(next), index);
        if (_tagWord(prevOutputRoot) != head >> 128) revert PrevOutputRootMismatch(index, prevOutputRoot);
        if (outputRoot == bytes32(0)) revert ZeroOutputRoot();

        _takeLane(index, (head >> 64) & LANE_MASK != NOT_FROZEN);

        _outputRoots[index] = outputRoot;
        head = (_tagWord(outputRoot) << 128) | (head & (LANE_MASK << 64)) | (next + 1);
        assembly ("memory-safe") {
            sstore(_head.slot, head)
        }
        emit BatchCommitted(index, outputRoot, prevOutputRoot, dataHash, uint64(block.timestamp), messagesConsumed);
    }

    /// @notice Challenge batch `index` inside its window: it and all later batches are frozen until
    ///         the guardian resolves the challenge.
    function challenge(uint64 index) external onlyRole(CHALLENGER_ROLE) {
        if (_outputRoots[index] == bytes32(0)) revert BatchNotCommitted(index);
        uint256 lane = _laneOf(index);
        if (!_holds(lane, index) || (lane & TIME_MASK) + challengeWindow <= block.timestamp) {
            revert ChallengeWindowClosed(index);
        }
        uint256 n = _pendingChallenges.length;
        for (uint256 i = 0; i < n; ++i) {
            if (_pendingChallenges[i] == index) revert AlreadyChallenged(index);
        }
        _pendingChallenges.push(index);
        Head memory h = _head;
        if (index < h.frozenFrom) {
            uint64 end = h.frozenFrom < h.nextIndex ? h.frozenFrom : h.nextIndex;
            _setFrozen(index, end, true);
            _head.frozenFrom = index;
        }
        emit BatchChallenged(index, msg.sender);
    }

    /// @notice Resolve the pending challenge of batch `index` (guardian only). `valid`: the batch stands
    ///         (unfrozen unless another pending challenge still covers it). `!valid`: the batch and all
    ///         later ones are discarded and the proposer must recommit from `index`.
    function resolveChallenge(uint64 index, bool valid) external onlyRole(GUARDIAN_ROLE) {
        uint64[] storage pending = _pendingChallenges;
        uint256 n = pending.length;
        bool found = false;
        for (uint256 i = 0; i < n; ++i) {
            if (pending[i] == index) {
                pending[i] = pending[n - 1];
                pending.pop();
                --n;
                found = true;
                break;
            }
        }
        if (!found) revert NotChallenged(index);

        Head memory h = _head;
        if (!valid) {
            // Challenges of discarded batches become moot.
            for (uint256 i = 0; i < n;) {
                if (pending[i] >= index) {
                    pending[i] = pending[n - 1];
                    pending.pop();
                    --n;
                } else {
                    ++i;
                }
            }
            // Discarded batches were frozen, hence not final, hence at most maxPendingBatches of them.
            // Their lanes become free (the batches those lanes held before were checked final).
            for (uint64 j = index; j < h.nextIndex; ++j) {
                delete _outputRoots[j];
                (uint256 slot, uint256 shift) = _lane(j);
                uint256 word = _ring[slot];
                _ring[slot] = (word & ~(LANE_MASK << shift)) | (LANE_FREE << shift);
            }
            emit BatchesDiscarded(index, h.nextIndex);
            h.nextIndex = index;
            h.lastRootTag = _tag(index == 0 ? genesisOutputRoot : _outputRoots[index - 1]);
        }
        uint64 newFrozenFrom = NOT_FROZEN;
        for (uint256 i = 0; i < n; ++i) {
            if (pending[i] < newFrozenFrom) newFrozenFrom = pending[i];
        }
        // Unfreeze the live batches no pending challenge covers any more.
        uint64 end = newFrozenFrom < h.nextIndex ? newFrozenFrom : h.nextIndex;
        if (h.frozenFrom < end) _setFrozen(h.frozenFrom, end, false);
        h.frozenFrom = newFrozenFrom;
        _head = h;
        _lastResolvedAt = uint64(block.timestamp);
        emit ChallengeResolved(index, valid, msg.sender);
    }

    /// @notice Index the next commit must use (= number of live batches).
    function nextBatchIndex() external view returns (uint64) {
        return _head.nextIndex;
    }

    /// @notice The latest of: the commit time of the last live batch, the last challenge
    ///         resolution, the deployment. The StakingRegistry's escape hatch opens a long while
    ///         after it (the rollup has stopped).
    function lastCommitTime() external view returns (uint64 t) {
        t = deployedAt > _lastResolvedAt ? deployedAt : _lastResolvedAt;
        uint64 next = _head.nextIndex;
        if (next == 0) return t;
        uint256 lane = _laneOf(next - 1);
        if (!_holds(lane, next - 1)) return t;
        uint64 committed = uint64(lane & TIME_MASK);
        if (committed > t) t = committed;
    }

    /// @notice Lowest frozen batch index (`NOT_FROZEN` if none).
    function frozenFrom() external view returns (uint64) {
        return _head.frozenFrom;
    }

    /// @notice Batch indices with a pending challenge (unordered).
    function pendingChallenges() external view returns (uint64[] memory) {
        return _pendingChallenges;
    }

    /// @notice Whether batch `index` is committed, not frozen and past its challenge window.
    function isFinalized(uint64 index) public view returns (bool) {
        return _outputRoots[index] != bytes32(0) && _laneFinal(_laneOf(index), index);
    }

    /// @notice Output root of a finalized batch (reverts `BatchNotFinalized` otherwise).
    function finalizedOutputRoot(uint64 index) external view returns (bytes32 root) {
        root = _outputRoots[index];
        if (root == bytes32(0) || !_laneFinal(_laneOf(index), index)) revert BatchNotFinalized(index);
    }

    /// @notice Output root of a committed (live, possibly not final) batch.
    function committedOutputRoot(uint64 index) external view returns (bytes32 root) {
        root = _outputRoots[index];
        if (root == bytes32(0)) revert BatchNotCommitted(index);
    }

    /// @notice Everything known about committed batch `index`. `committedAt`/`finalizesAt` are 0 once
    ///         the batch's lane was taken over (the batch is then final).
    function batchStatus(uint64 index)
        external
        view
        returns (bytes32 outputRoot, uint64 committedAt, uint64 finalizesAt, bool frozen, bool finalized)
    {
        outputRoot = _outputRoots[index];
        if (outputRoot == bytes32(0)) revert BatchNotCommitted(index);
        uint256 lane = _laneOf(index);
        if (_holds(lane, index)) {
            committedAt = uint64(lane & TIME_MASK);
            finalizesAt = committedAt + challengeWindow;
            frozen = lane & FROZEN != 0;
        }
        finalized = _laneFinal(lane, index);
    }

    // ------------------------------------------------------------------ messages

    /// @notice Deposit ETH to `rollupKey`'s L2 balance. The ETH is forwarded to the RewardTreasury.
    function deposit(bytes32 rollupKey) external payable returns (uint256 nonce) {
        if (msg.value == 0) revert ZeroAmount();
        if (rollupKey == bytes32(0)) revert ZeroRollupKey();
        nonce = _append(MessageKinds.DEPOSIT, rollupKey, msg.sender, msg.value, "");
        Address.sendValue(payable(rewardTreasury), msg.value);
    }

    /// @notice Append a message (StakingRegistry: STAKE, STAKE_WITHDRAWN; RewardManager: JOB_FUNDED).
    function sendMessage(uint8 kind, bytes32 rollupKey, address sender, uint256 amount, bytes calldata data)
        external
        returns (uint256 nonce)
    {
        bool allowed = msg.sender == stakingRegistry
            ? (kind == MessageKinds.STAKE || kind == MessageKinds.STAKE_WITHDRAWN)
            : (msg.sender == rewardManager && kind == MessageKinds.JOB_FUNDED);
        if (!allowed) revert UnauthorizedMessageSender(msg.sender, kind);
        return _append(kind, rollupKey, sender, amount, data);
    }

    /// @notice Number of messages sent so far (the next message's nonce).
    function messageCount() external view returns (uint256) {
        return _stream.messageCount;
    }

    /// @notice When message `nonce` was sent (0 if it was not).
    function messageTime(uint256 nonce) external view returns (uint256) {
        return _messageTime[nonce];
    }

    // ------------------------------------------------------------------ internals

    function _append(uint8 kind, bytes32 rollupKey, address sender, uint256 amount, bytes memory data)
        private
        returns (uint256 nonce)
    {
        nonce = _stream.messageCount;
        _stream.messageCount = uint96(nonce + 1);
        _messageTime[nonce] = block.timestamp;
        emit MessageSent(nonce, kind, rollupKey, sender, amount, data);
    }

    /// @dev Take over the lane of batch `index - maxPendingBatches`, which must be final by now, for
    ///      batch `index` committed now (frozen if a challenge is pending).
    function _takeLane(uint64 index, bool frozen) private {
        uint256 capacity = maxPendingBatches;
        uint256 position = index % capacity;
        uint256 slot = position >> 2;
        uint256 shift = (position & 3) << 6;
        uint256 word = _ring[slot];
        uint256 previous = (word >> shift) & LANE_MASK;
        if (
            previous != LANE_FREE
                && (previous & FROZEN != 0 || (previous & TIME_MASK) + challengeWindow > block.timestamp)
        ) revert TooManyPendingBatches(index);
        uint256 lane = block.timestamp | (((index / capacity) & EPOCH_MASK) << EPOCH_SHIFT);
        if (frozen) lane |= FROZEN;
        _ring[slot] = (word & ~(LANE_MASK << shift)) | (lane << shift);
    }

    /// @dev Forced inclusion: `messagesConsumed` messages exist, and the first one not consumed (if
    ///      any) is younger than the inclusion window.
    function _checkInclusion(uint64 messagesConsumed, uint256 sent) private view {
        if (messagesConsumed > sent) revert MessagesNotSent(messagesConsumed, sent);
        if (messagesConsumed < sent) {
            uint256 sentAt = _messageTime[messagesConsumed];
            if (sentAt + inclusionWindow < block.timestamp) revert MessageNotIncluded(messagesConsumed, sentAt);
        }
    }

    /// @dev Whether `lane` (of a committed batch `index`) proves `index` final.
    function _laneFinal(uint256 lane, uint64 index) private view returns (bool) {
        if (!_holds(lane, index)) return true; // free, or taken over by a later batch
        return lane & FROZEN == 0 && (lane & TIME_MASK) + challengeWindow <= block.timestamp;
    }

    /// @dev Whether `lane` holds batch `index` (rather than being free or a later epoch's).
    function _holds(uint256 lane, uint64 index) private view returns (bool) {
        return lane != LANE_FREE && (lane >> EPOCH_SHIFT) & EPOCH_MASK == _epoch(index);
    }

    function _setFrozen(uint64 from, uint64 to, bool frozen) private {
        for (uint64 j = from; j < to; ++j) {
            (uint256 slot, uint256 shift) = _lane(j);
            uint256 word = _ring[slot];
            _ring[slot] = frozen ? word | (FROZEN << shift) : word & ~(FROZEN << shift);
        }
    }

    function _laneOf(uint64 index) private view returns (uint256) {
        (uint256 slot, uint256 shift) = _lane(index);
        return (_ring[slot] >> shift) & LANE_MASK;
    }

    function _epoch(uint64 index) private view returns (uint256) {
        return (uint256(index) / maxPendingBatches) & EPOCH_MASK;
    }

    function _lane(uint64 index) private view returns (uint256 slot, uint256 shift) {
        uint256 position = uint256(index) % maxPendingBatches;
        slot = position >> 2;
        shift = (position & 3) << 6;
    }

    /// @dev `_tag(root)` as the integer stored in the head's high 128 bits.
    function _tagWord(bytes32 root) private pure returns (uint256 t) {
        assembly ("memory-safe") {
            mstore(0x00, root)
            t := shr(128, keccak256(0x00, 0x20))
        }
    }

    function _tag(bytes32 root) private pure returns (bytes16 t) {
        assembly ("memory-safe") {
            mstore(0x00, root)
            t := and(keccak256(0x00, 0x20), not(0xffffffffffffffffffffffffffffffff))
        }
    }
}
