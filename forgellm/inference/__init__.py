"""Talking to a model: engines (transformers, llama.cpp), the choice of model and a chat session.

Nothing here imports torch, transformers or llama_cpp at module level; the engines load them when used.
"""
