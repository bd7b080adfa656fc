"""The regularisers of AWD-LSTM, each small enough to read in a minute.

Merity, Keskar & Socher, "Regularizing and Optimizing LSTM Language Models" (ICLR 2018):
embedding dropout (§4.3, after Gal & Ghahramani 2016), locked/variational dropout (§4.2),
DropConnect on the hidden-to-hidden matrix (§2, after Wan et al. 2013), and activation /
temporal activation regularisation (§4.6).

Every random mask is drawn with the same torch call, shape and order as the published
code, so a seeded run draws the same masks (see ``model.AWDLSTM.forward``).
"""
from __future__ import annotations

import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

WDROP_MODES = ("frozen", "trained")
# last: the published lookup's padding_idx=-1, i.e. the last vocabulary id gets no gradient
# from its input occurrences; none: every row trains through the lookup
EMBED_PADDINGS = ("last", "none")


def embedded_dropout(embed: nn.Embedding, words: torch.Tensor, p: float,
                     padding_idx: int | None = None) -> torch.Tensor:
    """Drop whole words: zero rows of the embedding matrix, scale the rest by 1/(1-p).

    One mask per call over the vocabulary, so every occurrence of a dropped word in the
    batch is dropped together. ``padding_idx`` is passed to the lookup: that row's
    output is unchanged, but it gets no gradient from the lookup (see ``AWDLSTM``).
    """
    weight = embed.weight
    if p:
        mask = weight.new_empty(weight.size(0), 1).bernoulli_(1 - p) / (1 - p)  # (V, 1)
        weight = mask.expand_as(weight) * weight
    return F.embedding(words, weight, padding_idx)  # (T, B, E)


def locked_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Variational dropout: one mask per sequence, shared by all time steps. x: (T, B, H)."""
    if not training or not p:
        return x
    mask = x.new_empty(1, x.size(1), x.size(2)).bernoulli_(1 - p) / (1 - p)  # (1, B, H)
    return mask.expand_as(x) * x


class WeightDropLSTM(nn.LSTM):
    """A one-layer ``nn.LSTM`` with DropConnect on its hidden-to-hidden matrix.

    ``weight_hh_l0`` stays an ordinary parameter; every training forward draws a fresh
    mask over it and hands the masked copy to the same fused kernel ``nn.LSTM`` uses
    (cuDNN on GPU, oneDNN/ATen on CPU), so no per-time-step Python loop and no edits of
    ``_parameters`` are needed.

    ``mode`` chooses what the published code did or the correction (SPEC §3):

    * ``"frozen"`` (default, faithful): the mask is applied to a detached copy, so the
      raw matrix never receives a gradient or weight decay and stays at its random
      initialisation, exactly like the published wrapper, which re-wrapped the masked
      matrix in a fresh ``nn.Parameter`` on every call and so cut the autograd path.
    * ``"trained"``: the gradient flows through the mask into the raw matrix.
    """

    def __init__(self, input_size: int, hidden_size: int, wdrop: float = 0.5,
                 mode: str = "frozen") -> None:
        if mode not in WDROP_MODES:
            raise ValueError(f"wdrop_mode {mode!r} is not one of {', '.join(WDROP_MODES)}")
        super().__init__(input_size, hidden_size, num_layers=1)
        self.wdrop = wdrop
        self.mode = mode

    def forward(self, x: torch.Tensor, hx: tuple[torch.Tensor, torch.Tensor]):  # type: ignore[override]
        if not (self.training and self.wdrop):
            return super().forward(x, hx)
        w_hh = self.weight_hh_l0.detach() if self.mode == "frozen" else self.weight_hh_l0
        w_hh = F.dropout(w_hh, self.wdrop, training=True)  # (4H, H)
        weights = [self.weight_ih_l0, w_hh, self.bias_ih_l0, self.bias_hh_l0]
        with warnings.catch_warnings():
            # cuDNN warns that the masked matrix is not in the flattened weight buffer; it
            # copies the weights for the call, which a fresh mask per step requires anyway.
            warnings.filterwarnings("ignore", message="RNN module weights are not part")
            out, h, c = torch._VF.lstm(x, hx, weights, True, 1, 0.0, True, False, False)
        return out, (h, c)


def activation_reg(dropped_output: torch.Tensor, alpha: float) -> torch.Tensor:
    """AR: alpha * mean(h_t^2) on the last layer's dropped output."""
    return alpha * dropped_output.pow(2).mean()


def temporal_activation_reg(raw_output: torch.Tensor, beta: float) -> torch.Tensor:
    """TAR: beta * mean((h_{t+1} - h_t)^2) on the last layer's output before dropout."""
    return beta * (raw_output[1:] - raw_output[:-1]).pow(2).mean()
