"""Merge methods as pure tensor functions: no file IO, no model names, only tensors and numbers.

Each file holds one method's math; `fusechat.merge.registry` lists them and adapts them to the engine.
"""
