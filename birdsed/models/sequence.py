"""The soundscape student: a small sequence model over a file's teacher window embeddings (no Lightning).

BirdCLEF+ 2026's CPU-bound entries ran a small temporal model over the 12 window embeddings of each one-minute
soundscape (the teacher's, Perch v2's there, BirdNET's here), with learned position, site and hour embeddings, and
fused its logits with the teacher's per class. This is that model:

    emb (B, T, D) → LayerNorm → Linear → GELU, + position (T) + site (B) + hour (B)
      → temporal layer (bi-GRU | transformer | none) → Linear → student logits (B, T, C)
    fused = σ(g_c)·student + (1 − σ(g_c))·teacher logits where the teacher knows class c, the student alone where not

``g`` is one learned gate per class, started at ``gate_init`` (σ(−1) ≈ 0.27: close to the teacher at first). The
site and hour vocabularies are the training files' (index 0 = unknown: focal recordings and names that do not
follow ``data.name_pattern``).
"""

from __future__ import annotations

import torch
from torch import nn

TEMPORAL = ("gru", "transformer", "none")


class SoundscapeStudent(nn.Module):
    """Teacher window embeddings of a file → per-window class logits, fused with the teacher's.

    Args:
        dim_in: the teacher's embedding size D (BirdNET: 1,024).
        n_classes: C, the taxonomy's classes.
        sites: the site names seen in training (index i + 1; 0 is "unknown").
        hidden: H, the model width.
        temporal: ``gru`` (bidirectional), ``transformer`` (one pre-norm encoder layer) or ``none`` (per window).
        max_windows: positions learned; a later window shares the last position.
        dropout: on the projected features (noisy-student training).
        gate_init: the per-class gate's starting logit.
    """

    def __init__(
        self,
        dim_in: int,
        n_classes: int,
        sites: list[str],
        hidden: int = 256,
        temporal: str = "gru",
        max_windows: int = 64,
        dropout: float = 0.2,
        gate_init: float = -1.0,
    ) -> None:
        super().__init__()
        if temporal not in TEMPORAL:
            raise ValueError(f"temporal: {temporal!r} is not one of {TEMPORAL}")
        self.sites = list(sites)
        self.temporal_kind, self.max_windows = temporal, max_windows
        self.norm_in = nn.LayerNorm(dim_in)
        self.proj = nn.Sequential(nn.Linear(dim_in, hidden), nn.GELU(), nn.Dropout(dropout))
        self.position = nn.Embedding(max_windows, hidden)
        self.site = nn.Embedding(len(self.sites) + 1, hidden)
        self.hour = nn.Embedding(25, hidden)  # 0: unknown, 1..24: hour 0..23
        for emb in (self.position, self.site, self.hour):
            nn.init.normal_(emb.weight, std=0.02)
        if temporal == "gru":
            self.temporal = nn.GRU(hidden, hidden // 2, batch_first=True, bidirectional=True)
        elif temporal == "transformer":
            self.temporal = nn.TransformerEncoderLayer(
                hidden, nhead=4, dim_feedforward=2 * hidden, dropout=dropout, batch_first=True, norm_first=True
            )
        else:
            self.temporal = None
        self.norm_out = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, n_classes)
        self.gate = nn.Parameter(torch.full((n_classes,), float(gate_init)))

    def forward(
        self,
        emb: torch.Tensor,
        teacher: torch.Tensor,
        site: torch.Tensor,
        hour: torch.Tensor,
        valid: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Args:
            emb: (B, T, D) window embeddings (padding rows anything finite).
            teacher: (B, T, C) the teacher's logits, NaN where it has no opinion.
            site, hour: (B,) vocabulary indices (0 = unknown).
            valid: (B, T) bool, False at padding.

        Returns:
            ``{"logits": (B, T, C) fused, "student_logits": (B, T, C)}``.
        """
        t = emb.shape[1]
        pos = torch.arange(t, device=emb.device).clamp(max=self.max_windows - 1)
        x = self.proj(self.norm_in(emb))  # (B, T, H)
        x = x + self.position(pos)[None] + self.site(site)[:, None] + self.hour(hour)[:, None]
        x = x * valid[..., None]
        if self.temporal_kind == "gru":
            lengths = valid.sum(dim=1).clamp(min=1).cpu()
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            y, _ = self.temporal(packed)
            y, _ = nn.utils.rnn.pad_packed_sequence(y, batch_first=True, total_length=t)  # (B, T, H)
            x = x + y
        elif self.temporal_kind == "transformer":
            x = self.temporal(x, src_key_padding_mask=~valid)
        student = self.head(self.norm_out(x))  # (B, T, C)
        known = torch.isfinite(teacher)
        g = torch.sigmoid(self.gate)  # (C,)
        fused = torch.where(known, g * student + (1 - g) * torch.nan_to_num(teacher), student)
        return {"logits": fused, "student_logits": student}
