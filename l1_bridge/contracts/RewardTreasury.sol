// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Address} from "@openzeppelin/contracts/utils/Address.sol";

import {IRewardTreasury} from "./Interfaces.sol";

/// @title RewardTreasury
/// @notice Holds the ETH backing L2 balances: net job funding (from the RewardManager) and deposits
///         (forwarded by the RollupInbox). Anyone may send ETH in; only the RewardManager pays out.
contract RewardTreasury is IRewardTreasury {
    /// @notice The only address that can move funds out.
    address public immutable manager;

    event Received(address indexed from, uint256 amount);
    event Paid(address indexed to, uint256 amount);

    error NotManager(address caller);
    error InvalidConfig();

    constructor(address manager_) {
        if (manager_ == address(0)) revert InvalidConfig();
        manager = manager_;
    }

    receive() external payable {
        emit Received(msg.sender, msg.value);
    }

    /// @notice Pay `amount` wei to `to`. Manager only.
    function pay(address payable to, uint256 amount) external {
        if (msg.sender != manager) revert NotManager(msg.sender);
        emit Paid(to, amount);
        Address.sendValue(to, amount);
    }
}
