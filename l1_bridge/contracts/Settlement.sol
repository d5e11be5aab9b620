// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/// @notice Settlement record v1 (versioned consensus format, mirrored by `l1_bridge/settlement.py`).
/// @dev ABI: `abi.encode(uint8 version, uint8 kind, uint64 jobId, uint64 round, bytes32 rollupKey,
///      uint256 amount, bytes32 recordId)`; all fields are static so `abi.encode(record)` of this struct
///      is byte-identical to encoding the seven fields in order.
///
///      `recordId` layout (v1): bits 95..0 = the record's *execution key* (uint96, unique per
///      record; the contracts keep its executed bit in a bitmap, so keys allocated densely — e.g. the
///      L2's global record counter — make the flag a ~5k instead of a ~22k gas store);
///      bits 255..96 = for withdrawals (kind 3) an optional L1 recipient address (0 = pay the address
///      bound to `rollupKey` in the StakingRegistry); ignored for other kinds. A plain counter
///      `bytes32(uint256(n))` is a valid recordId with no embedded recipient.
struct SettlementRecord {
    uint8 version;
    uint8 kind;
    uint64 jobId;
    uint64 round;
    bytes32 rollupKey;
    uint256 amount;
    bytes32 recordId;
}

/// @notice Constants and pure hashing helpers of the commitment formats.
library Settlement {
    uint8 internal constant RECORD_VERSION = 1;
    uint8 internal constant OUTPUT_ROOT_VERSION = 1;

    uint8 internal constant KIND_SLASH = 1;
    uint8 internal constant KIND_REWARD = 2;
    uint8 internal constant KIND_WITHDRAWAL = 3;

    /// @dev Leaf = keccak256(bytes.concat(keccak256(abi.encode(record)))) (OpenZeppelin
    ///      StandardMerkleTree double hash).
    function leaf(SettlementRecord calldata r) internal pure returns (bytes32) {
        return keccak256(bytes.concat(keccak256(abi.encode(r))));
    }

    /// @dev Output root v1 = keccak256(abi.encode(uint8 1, stateRoot, settlementRoot, lastBlockHash)).
    function outputRoot(bytes32 stateRoot, bytes32 settlementRoot, bytes32 lastBlockHash)
        internal
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(OUTPUT_ROOT_VERSION, stateRoot, settlementRoot, lastBlockHash));
    }

    /// @dev The once-only execution key of a record: the low 96 bits of its recordId.
    function executionKey(bytes32 recordId) internal pure returns (uint256) {
        return uint256(recordId) & type(uint96).max;
    }

    /// @dev The explicit L1 recipient embedded in the high 160 bits of a recordId (0 = none).
    function embeddedRecipient(bytes32 recordId) internal pure returns (address) {
        return address(uint160(uint256(recordId) >> 96));
    }
}

/// @notice Kinds of L1→L2 messages emitted by {RollupInbox.MessageSent}.
/// @dev Field meaning per kind (`rollupKey`, `sender`, `amount`, `data`):
///  - DEPOSIT (1): credited key, depositor, wei deposited (backing moved to RewardTreasury), "".
///  - STAKE (2): staker's key, staker address, wei added, abi.encode(uint256 newTotalStake).
///  - UNSTAKE_REQUEST (3): key, staker, current stake, abi.encode(uint64 unlockAt).
///  - JOB_FUNDED (4): bytes32(0), funder, net wei credited to the job pool,
///    abi.encode(uint64 jobId, uint256 protocolFee).
///  - STAKE_WITHDRAWN (5): key, staker, wei paid out, "".
///  Slash executions emit no message: the slash record itself came from the L2.
library MessageKinds {
    uint8 internal constant DEPOSIT = 1;
    uint8 internal constant STAKE = 2;
    uint8 internal constant UNSTAKE_REQUEST = 3;
    uint8 internal constant JOB_FUNDED = 4;
    uint8 internal constant STAKE_WITHDRAWN = 5;
}
