"""PLACEHOLDER: the chain-structured CNN macro space is being written."""
