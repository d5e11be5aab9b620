// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";
import {Address} from "@openzeppelin/contracts/utils/Address.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

/// @title SlashTreasury
/// @notice Receives slashed stake (from the StakingRegistry). Only the owner (governance; two-step
///         ownership transfer) can sweep it out.
contract SlashTreasury is Ownable2Step, ReentrancyGuardTransient {
    event Received(address indexed from, uint256 amount);
    event Swept(address indexed to, uint256 amount);

    constructor(address governance) Ownable(governance) {}

    receive() external payable {
        emit Received(msg.sender, msg.value);
    }

    /// @notice Send `amount` wei to `to`. Owner only.
    function sweep(address payable to, uint256 amount) external onlyOwner nonReentrant {
        emit Swept(to, amount);
        Address.sendValue(to, amount);
    }
}
