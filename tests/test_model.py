"""AWD-LSTM: exact sizes, weight-drop modes, masks, determinism, RNG parity, generation."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lmreport.data import Dictionary
from lmreport.model import AWDLSTM, count_parameters, generate
from lmreport.optim import AdaBelief
from lmreport.regularize import (WeightDropLSTM, activation_reg, embedded_dropout,
                                 locked_dropout, temporal_activation_reg)


@pytest.mark.parametrize("mode", ["frozen", "trained"])
@pytest.mark.parametrize("layers,expected", [(1, 5_293_200), (2, 13_632_400), (3, 24_221_600)])
def test_parameter_counts_match_the_paper(layers, expected, mode):
    assert count_parameters(AWDLSTM(10_000, layers, wdrop_mode=mode)) == expected


def _small(mode="frozen", **kw):
    torch.manual_seed(0)
    return AWDLSTM(50, 2, emsize=8, nhid=12, wdrop_mode=mode, **kw)


def _one_step(model):
    tokens = torch.randint(50, (7, 3))
    opt = AdaBelief(model.parameters(), lr=1e-2, weight_decay=1e-2)
    out, _ = model(tokens[:-1], model.init_hidden(3))
    F.cross_entropy(model.logits(out).view(-1, 50), tokens[1:].reshape(-1)).backward()
    opt.step()


def test_frozen_mode_never_updates_raw_recurrent_matrix():
    model = _small("frozen")
    before = [rnn.weight_hh_l0.detach().clone() for rnn in model.rnns]
    w_ih = model.rnns[0].weight_ih_l0.detach().clone()
    model.train()
    _one_step(model)
    for rnn, w in zip(model.rnns, before):
        assert rnn.weight_hh_l0.grad is None
        assert torch.equal(rnn.weight_hh_l0, w)  # not even weight decay touches it
    assert not torch.equal(model.rnns[0].weight_ih_l0, w_ih)


def test_trained_mode_updates_raw_recurrent_matrix():
    model = _small("trained")
    before = [rnn.weight_hh_l0.detach().clone() for rnn in model.rnns]
    model.train()
    _one_step(model)
    for rnn, w in zip(model.rnns, before):
        assert rnn.weight_hh_l0.grad is not None
        assert not torch.equal(rnn.weight_hh_l0, w)


def test_dropconnect_mask_changes_every_training_step_and_matches_masked_lstm():
    torch.manual_seed(1)
    layer = WeightDropLSTM(4, 5, wdrop=0.5).train()
    x, h = torch.randn(6, 2, 4), (torch.zeros(1, 2, 5), torch.zeros(1, 2, 5))
    state = torch.get_rng_state()
    out1, _ = layer(x, h)
    out2, _ = layer(x, h)
    assert not torch.equal(out1, out2)
    # Same RNG state -> same mask; the result equals a plain LSTM with the masked matrix.
    torch.set_rng_state(state)
    mask_source = F.dropout(layer.weight_hh_l0.detach(), 0.5, training=True)
    reference = nn.LSTM(4, 5)
    reference.load_state_dict({**layer.state_dict(), "weight_hh_l0": mask_source})
    assert torch.allclose(out1, reference(x, h)[0], atol=1e-6)


def test_evaluation_is_deterministic_and_uses_the_unmasked_matrix():
    model = _small().eval()
    tokens = torch.randint(50, (9, 2))
    a, _ = model(tokens, model.init_hidden(2))
    b, _ = model(tokens, model.init_hidden(2))
    assert torch.equal(a, b)
    layer = model.rnns[0]
    plain = nn.LSTM(layer.input_size, layer.hidden_size)
    plain.load_state_dict(layer.state_dict())
    x = torch.randn(3, 2, layer.input_size)
    h = (torch.zeros(1, 2, layer.hidden_size),) * 2
    assert torch.equal(layer(x, h)[0], plain(x, h)[0])


def test_initial_weights_replay_the_published_construction():
    """Same seed -> same initial weights as the published model's construction order:
    embedding, LSTMs, an untied Linear(nhid, V), then the tied matrix drawn twice."""
    vocab, layers, emsize, nhid = 30, 2, 6, 10
    torch.manual_seed(141)
    encoder = nn.Embedding(vocab, emsize)
    lstms = [nn.LSTM(emsize if l == 0 else nhid, nhid if l < layers - 1 else emsize) for l in range(layers)]
    decoder = nn.Linear(nhid, vocab)
    decoder.weight = encoder.weight
    with torch.no_grad():
        encoder.weight.uniform_(-0.1, 0.1)
        decoder.bias.fill_(0)
        decoder.weight.uniform_(-0.1, 0.1)
    after_reference = torch.rand(3)
    torch.manual_seed(141)
    model = AWDLSTM(vocab, layers, emsize, nhid)
    after_ours = torch.rand(3)
    assert torch.equal(model.encoder.weight, encoder.weight)
    assert torch.equal(model.decoder.bias, decoder.bias)
    for ours, ref in zip(model.rnns, lstms):
        for name, value in ref.state_dict().items():
            assert torch.equal(ours.state_dict()[name], value), name
    assert torch.equal(after_ours, after_reference)  # the stream continues identically
    assert model.decoder.weight is model.encoder.weight


def test_dropout_helpers():
    torch.manual_seed(0)
    x = torch.ones(5, 3, 4)
    y = locked_dropout(x, 0.5, training=True)
    assert torch.equal(y[0], y[4])  # one mask shared over time
    assert set(y.unique().tolist()) <= {0.0, 2.0}
    assert locked_dropout(x, 0.5, training=False) is x
    emb = nn.Embedding(10, 3)
    words = torch.tensor([[1, 1], [2, 1]])
    out = embedded_dropout(emb, words, 0.5)
    assert torch.equal(out[0, 0], out[0, 1]) and torch.equal(out[0, 0], out[1, 1])  # per word


def _published_lookup(embed, words, p):
    """The published embedded_dropout: mask the rows, then look up with padding_idx=-1."""
    mask = embed.weight.new_empty(embed.weight.size(0), 1).bernoulli_(1 - p).expand_as(embed.weight) / (1 - p)
    return F.embedding(words, mask * embed.weight, -1)


def _input_grads(padding):
    """Row gradients of the embedding when only the input lookup is differentiated."""
    torch.manual_seed(3)
    model = AWDLSTM(50, 1, emsize=6, nhid=6, embed_padding=padding).train()
    words = torch.tensor([[49, 3], [7, 49], [49, 49]])  # the last id, as an input
    torch.manual_seed(1)  # a mask that keeps words 3, 7 and 49 (and drops others)
    emb = embedded_dropout(model.encoder, words, 0.1, model.padding_idx)
    (emb * torch.arange(1.0, 7.0)).sum().backward()
    return model.encoder.weight.grad, emb


def test_embedding_lookup_replays_the_published_padding_quirk():
    grad, ours = _input_grads("last")
    torch.manual_seed(3)
    model = AWDLSTM(50, 1, emsize=6, nhid=6)
    torch.manual_seed(1)  # a mask that keeps words 3, 7 and 49 (and drops others)
    theirs = _published_lookup(model.encoder, torch.tensor([[49, 3], [7, 49], [49, 49]]), 0.1)
    (theirs * torch.arange(1.0, 7.0)).sum().backward()
    assert torch.equal(ours, theirs) and torch.equal(grad, model.encoder.weight.grad)
    assert not grad[49].any() and grad[3].any() and grad[7].any()  # the last word alone is cut
    grad_none, out_none = _input_grads("none")
    assert torch.equal(out_none, ours)  # the forward pass is the same
    assert grad_none[49].abs().sum() > 0 and torch.equal(grad_none[:49], grad[:49])
    with pytest.raises(ValueError, match=r"embed_padding='first' is invalid: one of last, none"):
        AWDLSTM(50, 1, embed_padding="first")


def test_ar_and_tar_values():
    h = torch.tensor([[[1.0, 2.0]], [[3.0, 5.0]]])  # (T=2, B=1, H=2)
    assert activation_reg(h, 2.0).item() == pytest.approx(2.0 * (1 + 4 + 9 + 25) / 4)
    assert temporal_activation_reg(h, 1.0).item() == pytest.approx((4 + 9) / 2)


def test_greedy_generation_is_deterministic():
    d = Dictionary()
    for i in range(50):
        d.add_word(f"w{i}")
    model = _small().train()
    first = generate(model, d, "w1 w2 w3", n_words=7)
    assert len(first) == 7 and all(w in d.word2idx for w in first)
    assert generate(model, d, "w1 w2 w3", n_words=7) == first
    assert model.training  # restored
