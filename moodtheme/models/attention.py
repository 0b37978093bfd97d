"""Submission 2's self-attention head: a BERT-style post-LayerNorm encoder over the segment
embeddings, with fixed sinusoidal positions and a pooler on the first position."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class SinusoidalPositions(nn.Module):
    """Adds the fixed sine/cosine encoding of each position; position 0 gets none (zeros)."""

    def __init__(self, positions: int, dim: int) -> None:
        super().__init__()
        position = torch.arange(positions, dtype=torch.float64).unsqueeze(1)
        pair = torch.arange(dim, dtype=torch.float64) // 2
        angle = position / torch.pow(10000.0, 2 * pair / dim)
        table = torch.where(torch.arange(dim) % 2 == 0, torch.sin(angle), torch.cos(angle))
        table[0] = 0.0  # as in the AMLAG model, whose first segment is the pooled one
        self.register_buffer("table", table.float(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.table[: x.shape[1]].to(x.dtype)


class SelfAttention(nn.Module):
    """Multi-head scaled dot-product self-attention (BERT's query/key/value projections)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"{heads} attention heads must divide the width {dim}")
        self.heads = heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        batch, length, dim = x.shape

        def split_heads(t: Tensor) -> Tensor:
            return t.view(batch, length, self.heads, dim // self.heads).transpose(1, 2)

        q, k, v = split_heads(self.query(x)), split_heads(self.key(x)), split_heads(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(dim // self.heads)
        context = self.dropout(scores.softmax(dim=-1)) @ v
        return context.transpose(1, 2).reshape(batch, length, dim)


class DenseResidualNorm(nn.Module):
    """BERT's sublayer output: dense, dropout, add the sublayer's input, LayerNorm."""

    def __init__(self, in_dim: int, dim: int, dropout: float, eps: float = 1e-12) -> None:
        super().__init__()
        self.dense = nn.Linear(in_dim, dim)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        return self.norm(self.dropout(self.dense(x)) + residual)


class EncoderLayer(nn.Module):
    """One post-LayerNorm BERT layer: self-attention, then a GELU feed-forward block."""

    def __init__(
        self, dim: int, heads: int, ff_dim: int, attention_dropout: float, hidden_dropout: float
    ) -> None:
        super().__init__()
        self.attention = SelfAttention(dim, heads, attention_dropout)
        self.attention_output = DenseResidualNorm(dim, dim, hidden_dropout)
        self.intermediate = nn.Sequential(nn.Linear(dim, ff_dim), nn.GELU())
        self.output = DenseResidualNorm(ff_dim, dim, hidden_dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = self.attention_output(self.attention(x), x)
        return self.output(self.intermediate(x), x)


class AttentionHead(nn.Module):
    """Segment embeddings ``[B, S, D]`` -> logits ``[B, n_tags]`` through a BERT encoder.

    As BERT's pooler, it classifies the encoder's output at the first position.
    """

    def __init__(
        self,
        dim: int,
        segments: int,
        num_tags: int,
        heads: int = 4,
        layers: int = 2,
        ff_dim: int = 1024,
        attention_dropout: float = 0.1,
        hidden_dropout: float = 0.2,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.positions = SinusoidalPositions(segments, dim)
        self.encoder = nn.Sequential(
            *[
                EncoderLayer(dim, heads, ff_dim, attention_dropout, hidden_dropout)
                for _ in range(layers)
            ]
        )
        self.pooler = nn.Sequential(nn.Linear(dim, dim), nn.Tanh())
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, num_tags))

    def forward(self, embeddings: Tensor) -> Tensor:
        hidden = self.encoder(self.positions(embeddings))
        return self.classifier(self.pooler(hidden[:, 0]))
