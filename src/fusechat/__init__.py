"""fusechat: knowledge fusion of chat LLMs with different architectures and tokenizers (FuseChat)."""

__version__ = "0.1.0"
