// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/// @notice The parts of {RollupInbox} the other contracts use.
interface IRollupInbox {
    function challengeWindow() external view returns (uint64);

    function nextBatchIndex() external view returns (uint64);

    function lastCommitTime() external view returns (uint64);

    function committedOutputRoot(uint64 index) external view returns (bytes32);

    function finalizedOutputRoot(uint64 index) external view returns (bytes32);

    function sendMessage(uint8 kind, bytes32 rollupKey, address sender, uint256 amount, bytes calldata data)
        external
        returns (uint256 nonce);
}

/// @notice The parts of {StakingRegistry} the SlashingManager uses.
interface IStakingRegistry {
    function slash(bytes32 rollupKey, address staker, uint256 amount) external returns (uint256 slashed);

    function release(bytes32 rollupKey, address payable payee, uint256 amount) external returns (uint256 paid);
}

/// @notice The part of {RewardTreasury} the reward manager uses.
interface IRewardTreasury {
    function pay(address payable to, uint256 amount) external;
}
