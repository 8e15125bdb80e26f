# The native Merkle tree is typed through its twin: same class surface, same behaviour.
from fastcore._merkle_py import MerkleTree as MerkleTree
from fastcore._merkle_py import item_digest as item_digest
from fastcore._merkle_py import key_token as key_token

__all__ = ["MerkleTree", "item_digest", "key_token"]
