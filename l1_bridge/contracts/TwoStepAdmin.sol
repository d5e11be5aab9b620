// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/// @title TwoStepAdmin
/// @notice One admin address that moves in two steps: the admin names a pending admin with
///         `transferAdmin` (calling it again replaces the pending one; `cancelAdminTransfer`
///         clears it), and only that pending address can take the role with `acceptAdmin`. A
///         mistyped address therefore never becomes admin. The zero address is never admin nor
///         pending admin, and there is no renounce: the role always has a holder.
abstract contract TwoStepAdmin {
    address private _admin;
    address private _pendingAdmin;

    event AdminTransferStarted(address indexed admin, address indexed pendingAdmin);
    event AdminTransferCancelled(address indexed admin, address indexed pendingAdmin);
    event AdminTransferred(address indexed previousAdmin, address indexed newAdmin);

    error NotAdmin(address caller);
    error NotPendingAdmin(address caller);
    error NoPendingAdmin();
    error ZeroAddress();

    constructor(address admin_) {
        _requireNonZero(admin_);
        _admin = admin_;
        emit AdminTransferred(address(0), admin_);
    }

    modifier onlyAdmin() {
        if (msg.sender != _admin) revert NotAdmin(msg.sender);
        _;
    }

    /// @notice The current admin.
    function admin() public view returns (address) {
        return _admin;
    }

    /// @notice The address that may accept the admin role (zero if none).
    function pendingAdmin() public view returns (address) {
        return _pendingAdmin;
    }

    /// @notice Step one (admin only): name `newAdmin` as the pending admin, replacing any other.
    function transferAdmin(address newAdmin) external onlyAdmin {
        _requireNonZero(newAdmin);
        _pendingAdmin = newAdmin;
        emit AdminTransferStarted(msg.sender, newAdmin);
    }

    /// @notice Withdraw the pending transfer (admin only).
    function cancelAdminTransfer() external onlyAdmin {
        address pending = _pendingAdmin;
        if (pending == address(0)) revert NoPendingAdmin();
        delete _pendingAdmin;
        emit AdminTransferCancelled(msg.sender, pending);
    }

    /// @notice Step two: the pending admin takes the role.
    function acceptAdmin() external {
        address pending = _pendingAdmin;
        if (pending == address(0) || msg.sender != pending) revert NotPendingAdmin(msg.sender);
        address previous = _admin;
        _admin = pending;
        delete _pendingAdmin;
        emit AdminTransferred(previous, pending);
    }

    function _requireNonZero(address account) internal pure {
        if (account == address(0)) revert ZeroAddress();
    }
}
