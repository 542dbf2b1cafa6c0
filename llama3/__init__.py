"""llama3: a reference implementation of Llama 3, one concept per module, built step by step in the course."""

from llama3.attention import MultiHeadGQAttention, build_attention_mask
from llama3.config import ModelArgs, ffn_hidden_size
from llama3.decoder import DecoderLayer
from llama3.ffn import FFN
from llama3.kv_cache import KV_Cache
from llama3.model import CausalLMOutput, Llama3
from llama3.norm import RMSNorm
from llama3.rope import RoPE, apply_rotary
from llama3.tokenizer import load_tokenizer

__all__ = [
    "ModelArgs", "ffn_hidden_size", "RMSNorm", "RoPE", "apply_rotary", "FFN", "KV_Cache", "MultiHeadGQAttention",
    "build_attention_mask", "DecoderLayer", "Llama3", "CausalLMOutput", "load_tokenizer",
]
__version__ = "0.1.0"
