"""GPT prior over VQGAN code indices (taming ``cond_transformer`` / minGPT) with a key/value cache.

The sequence is ``condition prefix (n_condition_tokens) + image codes (h*w, raster order)``; the
model predicts every image code from everything before it. Condition ids (class labels, an SOS
token, coordinate bins) share the token embedding with the codes, as in taming.

The cache is one tensor, ``past_key_values`` (L, 2, B, heads, P, d), the layout of the exported
``prior`` component: sampling h*w codes costs one single-token forward per code.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from genrt.errors import InputError
from genrt.sdk.nn.attention import additive_mask
from genrt.sdk.vqgan.config import PriorConfig
from genrt.sdk.vqgan.quantizer import exporting


class CausalSelfAttention(nn.Module):
    """x (B, T, C) at positions P..P+T-1, past (2, B, heads, P, d) -> (B, T, C), present (2, B, heads, P+T, d)."""

    def __init__(self, config: PriorConfig):
        super().__init__()
        self.heads = config.n_head
        self.to_q = nn.Linear(config.n_embd, config.n_embd)
        self.to_k = nn.Linear(config.n_embd, config.n_embd)
        self.to_v = nn.Linear(config.n_embd, config.n_embd)
        self.to_out = nn.Linear(config.n_embd, config.n_embd)
        self.attn_dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, past: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        batch, length, channels = x.shape
        split = lambda t: t.reshape(batch, length, self.heads, -1).transpose(1, 2)  # (B, heads, T, d)
        q, k, v = split(self.to_q(x)), split(self.to_k(x)), split(self.to_v(x))
        if past is not None:
            k = torch.cat([past[0], k], dim=2)  # (B, heads, P+T, d)
            v = torch.cat([past[1], v], dim=2)
        present = torch.stack([k, v])  # (2, B, heads, P+T, d)
        dropout = self.attn_dropout if self.training else 0.0
        if past is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)
        else:
            # query i sits at absolute position P + i and sees keys 0..P+i
            offset = k.shape[2] - length
            query_pos = torch.arange(length, device=x.device)[:, None] + offset  # (T, 1)
            key_pos = torch.arange(k.shape[2], device=x.device)[None, :]  # (1, P+T)
            # additive, not boolean: the boolean mask exports an IsNaN guard over the probabilities; every
            # query sees key 0, so no row is fully masked (sdk.nn.attention.additive_mask)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=additive_mask(key_pos <= query_pos, q.dtype),
                                                 dropout_p=dropout)
        out = out.transpose(1, 2).reshape(batch, length, channels)  # (B, T, C)
        return self.resid_dropout(self.to_out(out)), present


class MLP(nn.Module):
    """(B, T, C) -> (B, T, C): Linear to 4C, exact GELU, Linear back."""

    def __init__(self, config: PriorConfig):
        super().__init__()
        self.fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln_1(x)), then x + mlp(ln_2(x))."""

    def __init__(self, config: PriorConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, past: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h, present = self.attn(self.ln_1(x), past)
        x = x + h
        return x + self.mlp(self.ln_2(x)), present


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """logits (B, V) with everything outside the top-k and outside the top-p nucleus set to -inf."""
    if top_k is not None:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        # drop a token when the tokens ranked above it already hold top_p of the mass (the first always stays)
        drop_sorted = probs.cumsum(dim=-1) - probs >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


class GPTPrior(nn.Module):
    """minGPT: token + learned position embeddings, n_layer causal blocks, LayerNorm, linear head."""

    def __init__(self, config: PriorConfig):
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.pos_emb = nn.Parameter(torch.zeros(1, config.block_size, config.n_embd))
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd)
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def forward(self, ids: torch.Tensor, past_key_values: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """ids (B, T) at positions P..P+T-1, past_key_values (L, 2, B, heads, P, d) or None (P = 0)
        -> logits (B, T, vocab_size) float32, present_key_values (L, 2, B, heads, P+T, d)."""
        past_length = 0 if past_key_values is None else past_key_values.shape[4]
        if not exporting():
            self._check_ids(ids, past_length, past_key_values)
        x = self.tok_emb(ids) + self.pos_emb[:, past_length:past_length + ids.shape[1]]  # (B, T, C)
        x = self.drop(x)
        presents = []
        for i, block in enumerate(self.blocks):
            x, present = block(x, None if past_key_values is None else past_key_values[i])
            presents.append(present)
        logits = self.head(self.ln_f(x)).float()
        return logits, torch.stack(presents)  # (L, 2, B, heads, P+T, d)

    def _check_ids(self, ids: torch.Tensor, past_length: int, past: torch.Tensor | None) -> None:
        config = self.config
        if ids.ndim != 2 or ids.dtype.is_floating_point:
            raise InputError(f"token ids have shape {tuple(ids.shape)} and dtype {ids.dtype}",
                             fix="pass integer ids of shape (B, T)")
        if past_length + ids.shape[1] > config.block_size:
            raise InputError(f"sequence of {past_length + ids.shape[1]} tokens exceeds block_size={config.block_size}",
                             fix="generate at most block_size - n_condition_tokens + 1 codes")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= config.vocab_size):
            raise InputError(f"token ids span [{int(ids.min())}, {int(ids.max())}]",
                             fix=f"use ids in [0, {config.vocab_size - 1}]")
        expected = (config.n_layer, 2, ids.shape[0], config.n_head, past_length, config.head_dim)
        if past is not None and tuple(past.shape) != expected:
            raise InputError(f"past_key_values has shape {tuple(past.shape)}",
                             fix=f"pass (L, 2, B, heads, P, d) = {expected}, the present_key_values of the last call")

    def _check_condition(self, condition: torch.Tensor) -> None:
        config = self.config
        if condition.ndim != 2 or condition.shape[1] != config.n_condition_tokens or condition.dtype.is_floating_point:
            raise InputError(f"condition has shape {tuple(condition.shape)} and dtype {condition.dtype}",
                             fix=f"pass integer condition ids of shape (B, {config.n_condition_tokens})")
        if condition.numel() and (int(condition.min()) < 0 or int(condition.max()) >= config.condition_vocab_size):
            raise InputError(f"condition ids span [{int(condition.min())}, {int(condition.max())}]",
                             fix=f"use condition ids in [0, {config.condition_vocab_size - 1}]")

    def loss(self, condition: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy of the codes (B, N) given the condition prefix (B, n_cond)."""
        self._check_condition(condition)
        sequence = torch.cat([condition, codes], dim=1).long()  # (B, n_cond + N)
        logits, _ = self(sequence[:, :-1])
        image_logits = logits[:, self.config.n_condition_tokens - 1:]  # (B, N, V): predictions of the codes
        return F.cross_entropy(image_logits.reshape(-1, image_logits.shape[-1]), codes.reshape(-1).long())

    @torch.no_grad()
    def sample(self, condition: torch.Tensor, num_tokens: int, *, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None, generator: torch.Generator | None = None,
               use_cache: bool = True) -> torch.Tensor:
        """Draw ``num_tokens`` codes (B, num_tokens) int64 after the condition prefix (B, n_cond).

        With ``use_cache`` each new code costs one single-token forward on the cached keys/values;
        without it the whole sequence is re-run per code (same tokens for the same generator).
        """
        self._check_condition(condition)
        config = self.config
        if temperature <= 0:
            raise InputError(f"temperature={temperature}", fix="use a temperature > 0")
        if top_k is not None and not 1 <= top_k <= config.vocab_size:
            raise InputError(f"top_k={top_k}", fix=f"use top_k in [1, {config.vocab_size}] or None")
        if top_p is not None and not 0.0 < top_p <= 1.0:
            raise InputError(f"top_p={top_p}", fix="use top_p in (0, 1] or None")
        if config.n_condition_tokens + num_tokens - 1 > config.block_size:
            raise InputError(f"{num_tokens} codes after {config.n_condition_tokens} condition tokens exceed "
                             f"block_size={config.block_size}",
                             fix=f"sample at most {config.block_size - config.n_condition_tokens + 1} codes")
        sequence = condition.long()
        logits, past = self(sequence)
        for step in range(num_tokens):
            scores = filter_logits(logits[:, -1] / temperature, top_k, top_p)  # (B, V)
            token = torch.multinomial(scores.softmax(dim=-1), 1, generator=generator)  # (B, 1)
            sequence = torch.cat([sequence, token], dim=1)
            if step == num_tokens - 1:
                break
            logits, past = self(token, past) if use_cache else self(sequence)
        return sequence[:, config.n_condition_tokens:]
