// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/// @notice Settlement record v2 (versioned consensus format, mirrored by `l1_bridge/settlement.py`).
/// @dev ABI: `abi.encode(uint8 version, uint8 kind, uint64 jobId, uint64 round, bytes32 rollupKey,
///      address payee, uint256 amount, bytes32 recordId)`; all fields are static so `abi.encode(record)`
///      of this struct is byte-identical to encoding the eight fields in order.
///
///      `payee` (v2): the L1 address the record pays (rewards, withdrawals, stake releases, refunds);
///      the L2 fixed it from an authenticated source (the key's signed `bind_l1` action, the
///      withdrawal's signed recipient, or the L1 sender of the message being refunded). L1 pays
///      exactly this address and looks nothing up. For slashes it names the slashed party: the
///      key's bound address, whose stake for the key the slash takes.
///      `recordId` (v2): bits 95..0 = the record's *execution key* (uint96, unique per record, dense:
///      the L2's global record counter); the high bits are zero. The contracts keep one executed
///      bit per key in a bitmap, so dense keys make the flag a ~5k instead of a ~22k gas store.
struct SettlementRecord {
    uint8 version;
    uint8 kind;
    uint64 jobId;
    uint64 round;
    bytes32 rollupKey;
    address payee;
    uint256 amount;
    bytes32 recordId;
}

/// @notice Constants and pure hashing helpers of the commitment formats.
library Settlement {
    uint8 internal constant RECORD_VERSION = 2;
    uint8 internal constant OUTPUT_ROOT_VERSION = 2;

    uint8 internal constant KIND_SLASH = 1;
    uint8 internal constant KIND_REWARD = 2;
    uint8 internal constant KIND_WITHDRAWAL = 3;
    uint8 internal constant KIND_STAKE_RELEASE = 4;
    uint8 internal constant KIND_REFUND = 5;

    /// @dev Leaf = keccak256(bytes.concat(keccak256(abi.encode(record)))) (OpenZeppelin
    ///      StandardMerkleTree double hash).
    function leaf(SettlementRecord calldata r) internal pure returns (bytes32) {
        return keccak256(bytes.concat(keccak256(abi.encode(r))));
    }

    /// @dev Output root v2 = keccak256(abi.encode(uint8 2, uint256 chainId, address inbox, stateRoot,
    ///      settlementRoot, lastBlockHash)): bound to one L1 chain and one inbox, so a second inbox
    ///      following the same L2 (a migration, a testnet/mainnet pair) cannot pay a record again.
    function outputRoot(
        uint256 chainId,
        address inbox,
        bytes32 stateRoot,
        bytes32 settlementRoot,
        bytes32 lastBlockHash
    ) internal pure returns (bytes32) {
        return keccak256(abi.encode(OUTPUT_ROOT_VERSION, chainId, inbox, stateRoot, settlementRoot, lastBlockHash));
    }

    /// @dev The once-only execution key of a record: the low 96 bits of its recordId.
    function executionKey(bytes32 recordId) internal pure returns (uint256) {
        return uint256(recordId) & type(uint96).max;
    }
}

/// @notice Kinds of L1→L2 messages emitted by {RollupInbox.MessageSent}.
/// @dev Field meaning per kind (`rollupKey`, `sender`, `amount`, `data`):
///  - DEPOSIT (1): credited key, depositor, wei deposited (backing moved to RewardTreasury), "".
///    The L2 credits the key only if the depositor is the key's bound address, else refunds it.
///  - STAKE (2): staker's key, staker address, wei added, abi.encode(uint256 newTotalStake).
///    The L2 credits the key's stake only if the staker is the key's bound address, else releases
///    it back to the staker (a STAKE_RELEASE record).
///  - UNSTAKE_REQUEST (3): no longer sent (v1 only; stake exits are decided on L2 now).
///  - JOB_FUNDED (4): bytes32(0), funder, net wei credited to the job pool,
///    abi.encode(uint64 jobId, uint256 protocolFee).
///  - STAKE_WITHDRAWN (5): key, staker, wei paid out by the escape hatch (`escapeExit`), "".
///  Slash executions emit no message: the slash record itself came from the L2.
library MessageKinds {
    uint8 internal constant DEPOSIT = 1;
    uint8 internal constant STAKE = 2;
    uint8 internal constant UNSTAKE_REQUEST = 3;
    uint8 internal constant JOB_FUNDED = 4;
    uint8 internal constant STAKE_WITHDRAWN = 5;
}
