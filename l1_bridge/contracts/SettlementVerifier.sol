// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

import {IRollupInbox} from "./Interfaces.sol";
import {Settlement, SettlementRecord} from "./Settlement.sol";

/// @title SettlementVerifier
/// @notice Shared base of the managers: checks that a settlement record is part of a batch's output
///         root, keeps the once-only execution bitmap, and exposes the commitment-format helpers as
///         pure views (used by the Python/Solidity agreement tests and by off-chain tooling).
///
/// Execution bitmap: records are keyed by their execution key (low 96 bits of `recordId`); each
/// manager packs a fixed number of records per storage word (see `_position`), and bit 255 of every
/// word is a sentinel. The first record executed in a never-touched word pays ~17k extra gas for the
/// zero→non-zero store; anyone (e.g. the node's keeper) can pre-pay that with
/// `prepareExecutionWords`, which sets the sentinel of untouched words.
abstract contract SettlementVerifier is ReentrancyGuardTransient {
    /// @notice The inbox whose batches are trusted. Fixed at deployment.
    IRollupInbox public immutable inbox;

    uint256 internal constant WORD_SENTINEL = 1 << 255;

    mapping(uint256 word => uint256) internal _words;

    event ExecutionWordsPrepared(uint256 firstWord, uint256 count);

    error UnsupportedRecordVersion(uint8 version);
    error WrongRecordKind(uint8 kind);
    error OutputRootMismatch(uint64 batchIndex, bytes32 computed);
    error InvalidProof(bytes32 recordId);
    error RecordAlreadyExecuted(bytes32 recordId);

    constructor(IRollupInbox inbox_) {
        inbox = inbox_;
    }

    /// @notice Output root v2 of the three roots on this chain, for this contract's inbox.
    function outputRootOf(bytes32 stateRoot, bytes32 settlementRoot, bytes32 lastBlockHash)
        external
        view
        returns (bytes32)
    {
        return Settlement.outputRoot(block.chainid, address(inbox), stateRoot, settlementRoot, lastBlockHash);
    }

    /// @notice Merkle leaf of a settlement record.
    function leafOf(SettlementRecord calldata r) external pure returns (bytes32) {
        return Settlement.leaf(r);
    }

    /// @notice ABI encoding of a settlement record (the leaf's inner preimage).
    function encodeRecord(SettlementRecord calldata r) external pure returns (bytes memory) {
        return abi.encode(r);
    }

    /// @notice Whether `proof` shows `r` is in the settlement tree with root `settlementRoot`.
    function verifyRecord(bytes32 settlementRoot, SettlementRecord calldata r, bytes32[] calldata proof)
        external
        pure
        returns (bool)
    {
        return MerkleProof.verifyCalldata(proof, settlementRoot, Settlement.leaf(r));
    }

    /// @notice The once-only execution key of `recordId` (its low 96 bits).
    function executionKeyOf(bytes32 recordId) external pure returns (uint256) {
        return Settlement.executionKey(recordId);
    }

    /// @notice Index of the bitmap word holding `recordId`'s execution state.
    function executionWordOf(bytes32 recordId) external pure returns (uint256 word) {
        (word,) = _position(recordId);
    }

    /// @notice Pre-initialise bitmap words `firstWord` .. `firstWord + count - 1` (sets the sentinel
    ///         bit of untouched words) so that executing their first record costs no zero→non-zero
    ///         store. Anyone may call; it changes no execution state.
    function prepareExecutionWords(uint256 firstWord, uint256 count) external {
        for (uint256 w = firstWord; w < firstWord + count; ++w) {
            if (_words[w] == 0) _words[w] = WORD_SENTINEL;
        }
        emit ExecutionWordsPrepared(firstWord, count);
    }

    /// @dev Bitmap word and bit offset of `recordId`'s state (bits below 255 only).
    function _position(bytes32 recordId) internal pure virtual returns (uint256 word, uint256 shift);

    /// @dev Reverts unless `r` (version 2) is in the settlement tree committed by `expectedOutputRoot`.
    ///      Same computation as {Settlement.outputRoot}, {Settlement.leaf} and
    ///      {MerkleProof.verifyCalldata}, in assembly (the record is hashed straight from calldata; a
    ///      non-canonical encoding, e.g. dirty high bits of `payee`, hashes to a leaf no honest tree
    ///      contains).
    function _checkRecord(
        uint64 batchIndex,
        bytes32 expectedOutputRoot,
        bytes32 stateRoot,
        bytes32 settlementRoot,
        bytes32 lastBlockHash,
        SettlementRecord calldata r,
        bytes32[] calldata proof
    ) internal view {
        if (r.version != Settlement.RECORD_VERSION) revert UnsupportedRecordVersion(r.version);
        bytes32 computed;
        bytes32 node;
        address inbox_ = address(inbox);
        assembly ("memory-safe") {
            let ptr := mload(0x40)
            mstore(ptr, 2) // OUTPUT_ROOT_VERSION
            mstore(add(ptr, 0x20), chainid())
            mstore(add(ptr, 0x40), inbox_)
            mstore(add(ptr, 0x60), stateRoot)
            mstore(add(ptr, 0x80), settlementRoot)
            mstore(add(ptr, 0xa0), lastBlockHash)
            computed := keccak256(ptr, 0xc0)
            calldatacopy(ptr, r, 0x100)
            mstore(0x00, keccak256(ptr, 0x100))
            node := keccak256(0x00, 0x20)
            let p := proof.offset
            for { let end := add(p, shl(5, proof.length)) } lt(p, end) { p := add(p, 0x20) } {
                let sibling := calldataload(p)
                switch lt(node, sibling)
                case 1 {
                    mstore(0x00, node)
                    mstore(0x20, sibling)
                }
                default {
                    mstore(0x00, sibling)
                    mstore(0x20, node)
                }
                node := keccak256(0x00, 0x40)
            }
        }
        if (computed != expectedOutputRoot) revert OutputRootMismatch(batchIndex, computed);
        if (node != settlementRoot) revert InvalidProof(r.recordId);
    }
}
