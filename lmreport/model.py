"""AWD-LSTM as the study used it (SPEC §3), plus greedy generation for Appendix C.

Shapes: T time steps, B streams, E = emsize, H = nhid, V = vocabulary.

    tokens (T, B) ─ embedding dropout ─ locked dropout(dropouti) ─┐
        LSTM_1 (E→H) ─ locked dropout(dropouth) ─ ... ─ LSTM_L (H→E) ─ locked dropout(dropout)
        ─ output (T, B, E) ─ tied decoder ─ logits (T, B, V)

Each layer is its own one-layer LSTM with DropConnect on the hidden-to-hidden matrix;
the last layer outputs E so the decoder can reuse the embedding matrix (weight tying,
Inan et al. 2017; Press & Wolf 2017). 1 layer: one E→E LSTM.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .regularize import EMBED_PADDINGS, WeightDropLSTM, embedded_dropout, locked_dropout

Hidden = list[tuple[torch.Tensor, torch.Tensor]]


class AWDLSTM(nn.Module):
    """Tied-weight multi-layer LSTM language model with the AWD-LSTM regularisers.

    Defaults are the paper's (Appendix B of the study): emsize 400, nhid 1150, dropouts
    0.4 / 0.25 / 0.4 / 0.1, weight drop 0.5 with the published (``frozen``) behaviour.

    ``embed_padding="last"`` keeps another quirk of the published code: its embedding
    lookup passes ``padding_idx=-1`` (the embedding has no padding index, and -1 was
    AWD-LSTM's stand-in for "none"), which PyTorch reads as the last vocabulary id. That
    word (PTB: "unilab", 6 training tokens, all in the last 140) gets no gradient from
    its input occurrences, only from the tied decoder and the weight decay.
    """

    def __init__(self, vocab_size: int, layers: int = 3, emsize: int = 400, nhid: int = 1150,
                 dropout: float = 0.4, dropouth: float = 0.25, dropouti: float = 0.4,
                 dropoute: float = 0.1, wdrop: float = 0.5, wdrop_mode: str = "frozen",
                 embed_padding: str = "last") -> None:
        super().__init__()
        if layers < 1:
            raise ValueError(f"layers={layers} must be at least 1")
        if embed_padding not in EMBED_PADDINGS:
            raise ValueError(f"embed_padding={embed_padding!r} is invalid: one of {', '.join(EMBED_PADDINGS)}")
        self.padding_idx = vocab_size - 1 if embed_padding == "last" else None
        self.vocab_size, self.layers, self.emsize, self.nhid = vocab_size, layers, emsize, nhid
        self.dropout, self.dropouth, self.dropouti, self.dropoute = dropout, dropouth, dropouti, dropoute
        # Construction order and every random draw below follow the published model, so
        # a given seed yields the same initial weights (and the same RNG stream after).
        self.encoder = nn.Embedding(vocab_size, emsize)
        self.rnns = nn.ModuleList(
            WeightDropLSTM(emsize if l == 0 else nhid, self._out_size(l), wdrop, wdrop_mode)
            for l in range(layers)
        )
        # The published model built an untied nn.Linear(nhid, V) here and then tied its
        # weight to the embedding; drawing (and discarding) that layer's initial values
        # keeps the torch RNG stream identical to the published code's.
        torch.empty(vocab_size, nhid).uniform_()
        torch.empty(vocab_size).uniform_()
        self.decoder = nn.Linear(emsize, vocab_size, device="meta")  # shapes only, no draw
        self.decoder.weight = self.encoder.weight
        self.decoder.bias = nn.Parameter(torch.zeros(vocab_size))
        with torch.no_grad():
            # The published init drew the tied matrix twice (as encoder, then as decoder).
            self.encoder.weight.uniform_(-0.1, 0.1)
            self.encoder.weight.uniform_(-0.1, 0.1)

    def _out_size(self, layer: int) -> int:
        return self.emsize if layer == self.layers - 1 else self.nhid

    def init_hidden(self, bsz: int) -> Hidden:
        weight = self.encoder.weight
        return [(weight.new_zeros(1, bsz, self._out_size(l)), weight.new_zeros(1, bsz, self._out_size(l)))
                for l in range(self.layers)]

    def forward(self, tokens: torch.Tensor, hidden: Hidden, return_h: bool = False):
        """tokens (T, B) -> output (T, B, E) and the new hidden state.

        With ``return_h`` also the per-layer outputs before and after their dropout,
        which AR (last dropped output) and TAR (last raw output) regularise.
        """
        emb = embedded_dropout(self.encoder, tokens, self.dropoute if self.training else 0.0, self.padding_idx)
        x = locked_dropout(emb, self.dropouti, self.training)  # (T, B, E)
        new_hidden, raw_outputs, dropped_outputs = [], [], []
        for l, rnn in enumerate(self.rnns):
            x, h = rnn(x, hidden[l])  # (T, B, H) or (T, B, E) for the last layer
            new_hidden.append(h)
            raw_outputs.append(x)
            if l != self.layers - 1:
                x = locked_dropout(x, self.dropouth, self.training)
                dropped_outputs.append(x)
        output = locked_dropout(x, self.dropout, self.training)
        dropped_outputs.append(output)
        if return_h:
            return output, new_hidden, raw_outputs, dropped_outputs
        return output, new_hidden

    def logits(self, output: torch.Tensor) -> torch.Tensor:
        """Tied decoder: (..., E) -> (..., V)."""
        return self.decoder(output)


def count_parameters(model: nn.Module) -> int:
    """Trainable-or-not parameters counted once each (the tied matrix once)."""
    return sum(p.numel() for p in model.parameters())


def repackage_hidden(hidden: Hidden) -> Hidden:
    """Cut the graph between batches: truncated BPTT keeps the values, drops the history."""
    return [(h.detach(), c.detach()) for h, c in hidden]


@torch.inference_mode()
def generate(model: AWDLSTM, dictionary, prompt: str, n_words: int = 30) -> list[str]:
    """Greedy continuation of ``prompt``: the most probable next word, ``n_words`` times.

    Feeding one word at a time with the hidden state carried is the same computation as
    re-reading the whole growing sequence from a fresh state (the model is deterministic
    in eval mode), only cheaper.
    """
    was_training = model.training
    model.eval()
    device = model.encoder.weight.device
    ids = torch.tensor(dictionary.encode(prompt), device=device).view(-1, 1)  # (T, 1)
    hidden = model.init_hidden(1)
    words: list[str] = []
    try:
        for _ in range(n_words):
            output, hidden = model(ids, hidden)
            next_id = model.logits(output[-1]).argmax(dim=-1)  # (1,)
            words.append(dictionary.idx2word[int(next_id)])
            ids = next_id.view(1, 1)
    finally:
        model.train(was_training)
    return words


@torch.inference_mode()
def continuation_logprobs(model: AWDLSTM, prefix: list[int], continuation: list[int]) -> torch.Tensor:
    """log p(continuation[k] | prefix + continuation[:k]) for every k (teacher forcing)."""
    was_training = model.training
    model.eval()
    device = model.encoder.weight.device
    ids = torch.tensor(prefix + continuation, device=device).view(-1, 1)  # (T, 1)
    try:
        output, _ = model(ids[:-1], model.init_hidden(1))
        logp = torch.log_softmax(model.logits(output.squeeze(1)), dim=-1)  # (T-1, V)
        targets = ids[len(prefix):, 0]
        return logp[len(prefix) - 1:].gather(1, targets.view(-1, 1)).squeeze(1).cpu()
    finally:
        model.train(was_training)


def find_in_stream(stream: torch.Tensor, pattern: list[int]) -> int | None:
    """First position where ``pattern`` occurs in a 1-D token stream, or None."""
    n = len(pattern)
    if n == 0 or n > stream.numel():
        return None
    windows = stream.unfold(0, n, 1)  # (N-n+1, n)
    hits = (windows == torch.tensor(pattern, dtype=stream.dtype, device=stream.device)).all(dim=1).nonzero()
    return int(hits[0]) if len(hits) else None
