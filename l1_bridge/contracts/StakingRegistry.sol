// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Address} from "@openzeppelin/contracts/utils/Address.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

import {IRollupInbox, IStakingRegistry} from "./Interfaces.sol";
import {MessageKinds} from "./Settlement.sol";

/// @title StakingRegistry
/// @notice Holds participants' stakes, per (rollup key, L1 staker). It binds nothing: a rollup key
///         names its L1 address by a signed, once-only L2 action (`bind_l1`), and the L2 credits a
///         STAKE message to the key's stake only when its L1 sender is that bound address; any other
///         sender gets its ETH back by a stake-release record paid to it. So a stranger's
///         `stake(victimKey)` neither blocks the victim nor earns anything.
///
/// Ledger: `stakeOf(key, staker)` is what `staker` holds for `key`. Slash records name the key's bound
/// address (their `payee` field) and take from its part; stake-release records pay their payee from
/// its own part. Nothing here can move one staker's ETH to another.
///
/// Leaving: stake leaves only by (a) a stake-release record of a finalized batch, executed by the
/// SlashingManager (`release`), which the L2 emits only once no slash can still fall on the key, or
/// (b) the escape hatch `escapeExit`, open only when the inbox has committed nothing for
/// `escapeDelay` seconds (the rollup has stopped). `escapeDelay` exceeds the challenge window, so
/// every committed batch is past its window, and its slashes were executable for at least
/// `escapeDelay - challengeWindow` seconds, before anyone can exit. An exit is final for its
/// (key, staker): that staker cannot stake for that key again. The exit also paid the release and
/// slash records of (key, staker) the L2 had emitted but L1 had not executed; executed later, they
/// must find nothing to take, or they would take it from new stake the L2 credits to the key
/// (unbacked L2 stake: a slash of it would take nothing).
contract StakingRegistry is IStakingRegistry, ReentrancyGuardTransient {
    IRollupInbox public immutable inbox;
    address public immutable slashTreasury;
    address public immutable slashingManager;
    /// @notice Smallest `stake` call (anti-spam: every call is an L1 message the L2 must include).
    uint256 public immutable minStake;
    /// @notice Seconds without any commit after which the escape hatch opens.
    uint64 public immutable escapeDelay;

    mapping(bytes32 rollupKey => mapping(address staker => uint256)) private _stakes;
    /// @notice (key, staker) pairs that left by the escape hatch: they stake no more.
    mapping(bytes32 rollupKey => mapping(address staker => bool)) public exited;

    event Staked(bytes32 indexed rollupKey, address indexed staker, uint256 amount, uint256 newTotal);
    event Released(bytes32 indexed rollupKey, address indexed payee, uint256 requested, uint256 paid);
    event EscapeExit(bytes32 indexed rollupKey, address indexed staker, uint256 amount);
    /// @notice `slashed` = min(`requested`, stake) wei moved to the SlashTreasury.
    event Slashed(bytes32 indexed rollupKey, address indexed staker, uint256 requested, uint256 slashed);

    error ZeroRollupKey();
    error StakeBelowMinimum(uint256 amount, uint256 minimum);
    error NotSlashingManager(address caller);
    error RollupLive(uint64 opensAt);
    error NothingToExit(bytes32 rollupKey, address staker);
    error ExitedStaker(bytes32 rollupKey, address staker);
    error InvalidConfig();

    /// @dev `inbox_` must already be deployed (its challenge window is checked).
    constructor(
        IRollupInbox inbox_,
        address slashTreasury_,
        address slashingManager_,
        uint256 minStake_,
        uint64 escapeDelay_
    ) {
        if (slashTreasury_ == address(0) || slashingManager_ == address(0) || minStake_ == 0) revert InvalidConfig();
        if (escapeDelay_ <= inbox_.challengeWindow()) revert InvalidConfig();
        inbox = inbox_;
        slashTreasury = slashTreasury_;
        slashingManager = slashingManager_;
        minStake = minStake_;
        escapeDelay = escapeDelay_;
    }

    /// @notice Stake `msg.value` (at least `minStake`) for `rollupKey`. The L2 credits it to the key
    ///         only if the caller is the key's bound L1 address; otherwise it releases it back.
    ///         Refused for a (key, caller) that left by the escape hatch (see the contract doc).
    function stake(bytes32 rollupKey) external payable {
        if (rollupKey == bytes32(0)) revert ZeroRollupKey();
        if (exited[rollupKey][msg.sender]) revert ExitedStaker(rollupKey, msg.sender);
        if (msg.value < minStake) revert StakeBelowMinimum(msg.value, minStake);
        uint256 total = _stakes[rollupKey][msg.sender] + msg.value;
        _stakes[rollupKey][msg.sender] = total;
        emit Staked(rollupKey, msg.sender, msg.value, total);
        inbox.sendMessage(MessageKinds.STAKE, rollupKey, msg.sender, msg.value, abi.encode(total));
    }

    /// @notice Move min(`amount`, stake) of what `staker` holds for `rollupKey` to the SlashTreasury.
    ///         SlashingManager only.
    function slash(bytes32 rollupKey, address staker, uint256 amount) external returns (uint256 slashed) {
        if (msg.sender != slashingManager) revert NotSlashingManager(msg.sender);
        uint256 current = _stakes[rollupKey][staker];
        slashed = amount < current ? amount : current;
        if (slashed != 0) _stakes[rollupKey][staker] = current - slashed;
        emit Slashed(rollupKey, staker, amount, slashed);
        if (slashed != 0) Address.sendValue(payable(slashTreasury), slashed);
    }

    /// @notice Pay min(`amount`, stake) of what `payee` holds for `rollupKey` to `payee` (a
    ///         stake-release record). SlashingManager only. Less than `amount` only if the escape
    ///         hatch already paid it out.
    function release(bytes32 rollupKey, address payable payee, uint256 amount)
        external
        nonReentrant
        returns (uint256 paid)
    {
        if (msg.sender != slashingManager) revert NotSlashingManager(msg.sender);
        uint256 current = _stakes[rollupKey][payee];
        paid = amount < current ? amount : current;
        _stakes[rollupKey][payee] = current - paid;
        emit Released(rollupKey, payee, amount, paid);
        if (paid != 0) Address.sendValue(payee, paid);
    }

    /// @notice Escape hatch: once the inbox has committed nothing for `escapeDelay` seconds, take back
    ///         what the caller holds for `rollupKey`. Emits a STAKE_WITHDRAWN message so a resumed L2
    ///         lowers the key's stake. Final: the caller cannot stake for `rollupKey` again.
    function escapeExit(bytes32 rollupKey) external nonReentrant returns (uint256 amount) {
        uint64 opensAt = inbox.lastCommitTime() + escapeDelay;
        if (block.timestamp < opensAt) revert RollupLive(opensAt);
        amount = _stakes[rollupKey][msg.sender];
        if (amount == 0) revert NothingToExit(rollupKey, msg.sender);
        _stakes[rollupKey][msg.sender] = 0;
        exited[rollupKey][msg.sender] = true;
        emit EscapeExit(rollupKey, msg.sender, amount);
        inbox.sendMessage(MessageKinds.STAKE_WITHDRAWN, rollupKey, msg.sender, amount, "");
        Address.sendValue(payable(msg.sender), amount);
    }

    /// @notice Wei `staker` holds for `rollupKey`.
    function stakeOf(bytes32 rollupKey, address staker) external view returns (uint256) {
        return _stakes[rollupKey][staker];
    }

    /// @notice When the escape hatch opens (it moves on with every commit).
    function escapeOpensAt() external view returns (uint64) {
        return inbox.lastCommitTime() + escapeDelay;
    }
}
