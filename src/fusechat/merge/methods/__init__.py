"""Merge methods as pure tensor functions: no file IO, no model names, only tensors and numbers.

Each file holds one method's math (`rules.py` the torch-free parts the kernels share); `registry.py` lists
the methods and `torch_path.py` adapts these functions to the engine.
"""
