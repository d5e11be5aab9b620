// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Address} from "@openzeppelin/contracts/utils/Address.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

import {TwoStepAdmin} from "./TwoStepAdmin.sol";

/// @title SlashTreasury
/// @notice Receives slashed stake (from the StakingRegistry). Only the admin (the deployment's
///         admin; two-step transfer, see {TwoStepAdmin}) can sweep it out.
contract SlashTreasury is TwoStepAdmin, ReentrancyGuardTransient {
    event Received(address indexed from, uint256 amount);
    event Swept(address indexed to, uint256 amount);

    constructor(address admin_) TwoStepAdmin(admin_) {}

    receive() external payable {
        emit Received(msg.sender, msg.value);
    }

    /// @notice Send `amount` wei to `to`. Admin only.
    function sweep(address payable to, uint256 amount) external onlyAdmin nonReentrant {
        emit Swept(to, amount);
        Address.sendValue(to, amount);
    }
}
