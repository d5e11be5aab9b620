// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Address} from "@openzeppelin/contracts/utils/Address.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

import {IRollupInbox, ISlashingManager, IStakingRegistry} from "./Interfaces.sol";
import {MessageKinds} from "./Settlement.sol";

/// @title StakingRegistry
/// @notice Holds participants' stakes. `stake(rollupKey)` binds the caller's L1 address to an ed25519
///         rollup key, one-to-one and for good (the binding survives withdrawal so later rewards still
///         have a payee; the same pair may stake again). Leaving is `requestUnstake()` then, once
///         `unbondingPeriod` has elapsed and no slash is pending for the key, `withdrawStake()`.
///
/// Pending slashes: a slash record in a committed but not yet final batch can be shown to the
/// SlashingManager (`flagPendingSlash`) by anyone; while such a flag exists the key cannot withdraw.
/// The flag goes away when the slash executes after finalization, or when the batch is discarded.
/// For this to protect every slash, `unbondingPeriod` must exceed the challenge window plus the L2's
/// worst-case posting delay (time from the offence to the batch carrying its slash record being
/// committed) plus the time a watcher needs to flag it. The constructor enforces
/// `unbondingPeriod > challengeWindow`; the posting-delay margin is the deployer's responsibility.
contract StakingRegistry is IStakingRegistry, ReentrancyGuardTransient {
    struct StakeInfo {
        address owner;
        uint96 amount;
    }

    IRollupInbox public immutable inbox;
    address public immutable slashTreasury;
    address public immutable slashingManager;
    uint256 public immutable minStake;
    uint64 public immutable unbondingPeriod;

    mapping(bytes32 rollupKey => StakeInfo) private _stakes;
    mapping(bytes32 rollupKey => uint64) private _unlockAt;
    mapping(address staker => bytes32) private _keyOf;

    event KeyBound(bytes32 indexed rollupKey, address indexed owner);
    event Staked(bytes32 indexed rollupKey, address indexed owner, uint256 amount, uint256 newTotal);
    event UnstakeRequested(bytes32 indexed rollupKey, address indexed owner, uint256 amount, uint64 unlockAt);
    event StakeWithdrawn(bytes32 indexed rollupKey, address indexed owner, uint256 amount);
    /// @notice `slashed` = min(`requested`, stake) wei moved to the SlashTreasury.
    event Slashed(bytes32 indexed rollupKey, uint256 requested, uint256 slashed);

    error ZeroRollupKey();
    error ZeroAmount();
    error KeyBoundToOther(bytes32 rollupKey, address owner);
    error AddressBoundToOtherKey(address staker, bytes32 rollupKey);
    error StakeBelowMinimum(uint256 total, uint256 minimum);
    error StakeTooLarge(uint256 total);
    error NotStaker(address caller);
    error NothingStaked(bytes32 rollupKey);
    error UnbondingInProgress(bytes32 rollupKey, uint64 unlockAt);
    error UnstakeNotRequested(bytes32 rollupKey);
    error StillUnbonding(bytes32 rollupKey, uint64 unlockAt);
    error SlashPending(bytes32 rollupKey, uint256 pendingSlashes);
    error NotSlashingManager(address caller);
    error InvalidConfig();

    /// @dev `inbox_` must already be deployed (its challenge window is checked).
    constructor(
        IRollupInbox inbox_,
        address slashTreasury_,
        address slashingManager_,
        uint256 minStake_,
        uint64 unbondingPeriod_
    ) {
        if (slashTreasury_ == address(0) || slashingManager_ == address(0) || minStake_ == 0) revert InvalidConfig();
        if (unbondingPeriod_ <= inbox_.challengeWindow()) revert InvalidConfig();
        inbox = inbox_;
        slashTreasury = slashTreasury_;
        slashingManager = slashingManager_;
        minStake = minStake_;
        unbondingPeriod = unbondingPeriod_;
    }

    /// @notice Stake `msg.value` for `rollupKey`. The first stake binds caller and key (total must
    ///         reach `minStake`); later calls by the same address top up. Not allowed while unbonding.
    function stake(bytes32 rollupKey) external payable {
        if (rollupKey == bytes32(0)) revert ZeroRollupKey();
        if (msg.value == 0) revert ZeroAmount();
        StakeInfo memory s = _stakes[rollupKey];
        if (s.owner == address(0)) {
            bytes32 bound = _keyOf[msg.sender];
            if (bound != bytes32(0)) revert AddressBoundToOtherKey(msg.sender, bound);
            _keyOf[msg.sender] = rollupKey;
            s.owner = msg.sender;
            emit KeyBound(rollupKey, msg.sender);
        } else if (s.owner != msg.sender) {
            revert KeyBoundToOther(rollupKey, s.owner);
        }
        uint64 unlockAt = _unlockAt[rollupKey];
        if (unlockAt != 0) revert UnbondingInProgress(rollupKey, unlockAt);
        uint256 total = uint256(s.amount) + msg.value;
        if (total < minStake) revert StakeBelowMinimum(total, minStake);
        if (total > type(uint96).max) revert StakeTooLarge(total);
        s.amount = uint96(total);
        _stakes[rollupKey] = s;
        emit Staked(rollupKey, msg.sender, msg.value, total);
        inbox.sendMessage(MessageKinds.STAKE, rollupKey, msg.sender, msg.value, abi.encode(total));
    }

    /// @notice Start unbonding the caller's whole stake.
    function requestUnstake() external {
        bytes32 key = _keyOf[msg.sender];
        if (key == bytes32(0)) revert NotStaker(msg.sender);
        uint256 amount = _stakes[key].amount;
        if (amount == 0) revert NothingStaked(key);
        uint64 current = _unlockAt[key];
        if (current != 0) revert UnbondingInProgress(key, current);
        uint64 unlockAt = uint64(block.timestamp) + unbondingPeriod;
        _unlockAt[key] = unlockAt;
        emit UnstakeRequested(key, msg.sender, amount, unlockAt);
        inbox.sendMessage(MessageKinds.UNSTAKE_REQUEST, key, msg.sender, amount, abi.encode(unlockAt));
    }

    /// @notice Withdraw the caller's remaining stake: only at/after `unlockAt` and with no pending slash.
    function withdrawStake() external nonReentrant returns (uint256 amount) {
        bytes32 key = _keyOf[msg.sender];
        if (key == bytes32(0)) revert NotStaker(msg.sender);
        uint64 unlockAt = _unlockAt[key];
        if (unlockAt == 0) revert UnstakeNotRequested(key);
        if (block.timestamp < unlockAt) revert StillUnbonding(key, unlockAt);
        uint256 pending = ISlashingManager(slashingManager).pendingSlashCount(key);
        if (pending != 0) revert SlashPending(key, pending);
        amount = _stakes[key].amount;
        _stakes[key].amount = 0;
        _unlockAt[key] = 0;
        emit StakeWithdrawn(key, msg.sender, amount);
        inbox.sendMessage(MessageKinds.STAKE_WITHDRAWN, key, msg.sender, amount, "");
        Address.sendValue(payable(msg.sender), amount);
    }

    /// @notice Move min(`amount`, stake) of `rollupKey`'s stake to the SlashTreasury. SlashingManager only.
    function slash(bytes32 rollupKey, uint256 amount) external returns (uint256 slashed) {
        if (msg.sender != slashingManager) revert NotSlashingManager(msg.sender);
        StakeInfo storage s = _stakes[rollupKey];
        uint256 current = s.amount;
        slashed = amount < current ? amount : current;
        if (slashed != 0) {
            s.amount = uint96(current - slashed);
        }
        emit Slashed(rollupKey, amount, slashed);
        if (slashed != 0) {
            Address.sendValue(payable(slashTreasury), slashed);
        }
    }

    /// @notice L1 address bound to `rollupKey` (0 if none).
    function ownerOf(bytes32 rollupKey) external view returns (address) {
        return _stakes[rollupKey].owner;
    }

    /// @notice Rollup key bound to `staker` (0 if none).
    function keyOf(address staker) external view returns (bytes32) {
        return _keyOf[staker];
    }

    /// @notice Stake record of `rollupKey`; `unlockAt` is 0 unless unbonding.
    function stakeOf(bytes32 rollupKey) external view returns (address owner, uint256 amount, uint64 unlockAt) {
        StakeInfo memory s = _stakes[rollupKey];
        return (s.owner, s.amount, _unlockAt[rollupKey]);
    }
}
