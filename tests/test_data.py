"""PTB loading, vocabulary, batching, download and its failure modes."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from lmreport import data as data_mod
from lmreport.data import (DataError, Dictionary, batchify, get_batch, load_corpus,
                           sample_seq_len)


def test_ptb_counts_exactly_as_published(ptb_dir):
    corpus = load_corpus(ptb_dir, download=False, progress=False)
    assert corpus.is_ptb
    assert len(corpus.dictionary) == 10_000
    assert (corpus.train.numel(), corpus.valid.numel(), corpus.test.numel()) == (929_589, 73_760, 82_430)
    assert corpus.dictionary.idx2word[:3] == ["aer", "banknote", "berlitz"]
    assert corpus.dictionary.word2idx["<eos>"] == corpus.train[corpus.train.numel() - 1]
    assert batchify(corpus.train, 20).shape == (46_479, 20)
    assert batchify(corpus.valid, 10).shape == (7_376, 10)
    assert batchify(corpus.test, 1).shape == (82_430, 1)
    # The word whose input gradient the published lookup cuts (embed_padding="last"): 6
    # training tokens near the end, none in the first 200k tokens the cpu profile trains on
    last = (corpus.train == 9_999).nonzero().flatten()
    assert corpus.dictionary.idx2word[9_999] == "unilab" and len(last) == 6
    assert last.min() == 929_453 and last.max() < batchify(corpus.train, 20).numel()
    assert not (corpus.valid == 9_999).any() and not (corpus.test == 9_999).any()


def test_vocabulary_in_order_of_first_appearance_over_train_valid_test(tmp_path):
    (tmp_path / "train.txt").write_text(" b a\n a\n")
    (tmp_path / "valid.txt").write_text(" c a\n")
    (tmp_path / "test.txt").write_text(" d\n")
    corpus = load_corpus(tmp_path, download=False)
    assert corpus.dictionary.idx2word == ["b", "a", "<eos>", "c", "d"]
    assert corpus.train.tolist() == [0, 1, 2, 1, 2]
    assert corpus.valid.tolist() == [3, 1, 2]
    assert corpus.test.tolist() == [4, 2]
    assert not corpus.is_ptb


def test_batchify_and_get_batch_cut_as_drawn():
    stream = torch.arange(26)
    source = batchify(stream, 4)
    assert source.shape == (6, 4)
    assert source[:, 0].tolist() == [0, 1, 2, 3, 4, 5]
    assert source[0].tolist() == [0, 6, 12, 18]
    x, y = get_batch(source, 1, 2)
    assert x.tolist() == [[1, 7, 13, 19], [2, 8, 14, 20]]
    assert y.tolist() == [2, 8, 14, 20, 3, 9, 15, 21]
    x, y = get_batch(source, 3, 70)  # shortened at the end so every input has a target
    assert x.shape == (2, 4) and y.numel() == 8


def test_seq_len_draws_follow_numpy_global_stream():
    np.random.seed(141)
    draws = [sample_seq_len(70) for _ in range(2000)]
    np.random.seed(141)
    expected = []
    for _ in range(2000):
        base = 70 if np.random.random() < 0.95 else 35.0
        expected.append(max(5, int(np.random.normal(base, 5))))
    assert draws == expected
    assert min(draws) >= 5 and 60 < np.mean(draws) < 70


def test_dictionary_encode_rejects_unknown_words():
    d = Dictionary()
    for w in "the cat".split():
        d.add_word(w)
    assert d.encode("the cat the") == [0, 1, 0]
    with pytest.raises(KeyError, match="dog"):
        d.encode("the dog")


def test_download_verifies_md5_and_writes_atomically(ptb_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(data_mod, "PTB_URL", ptb_dir.resolve().as_uri() + "/")
    target = tmp_path / "fresh" / "ptb"
    corpus = load_corpus(target, progress=False)
    assert corpus.is_ptb and len(corpus.dictionary) == 10_000
    assert sorted(p.name for p in target.iterdir()) == ["ptb.test.txt", "ptb.train.txt", "ptb.valid.txt"]


def test_download_of_corrupt_file_is_refused_and_leaves_nothing(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "ptb.train.txt").write_text(" not the real thing\n")
    monkeypatch.setattr(data_mod, "PTB_URL", mirror.as_uri() + "/")
    target = tmp_path / "new" / "ptb"
    with pytest.raises(DataError) as err:
        load_corpus(target, progress=False)
    message = str(err.value)
    assert "\n" not in message
    assert "ptb.train.txt" in message and data_mod.PTB_MD5["train"] in message
    assert not (tmp_path / "new").exists()


def test_offline_error_is_one_line_naming_file_md5_and_remedy(tmp_path, monkeypatch):
    monkeypatch.setattr(data_mod, "PTB_URL", "http://127.0.0.1:9/")  # discard port: refused
    with pytest.raises(DataError) as err:
        load_corpus(tmp_path / "ptb", progress=False)
    message = str(err.value)
    assert "\n" not in message
    for part in ("ptb.train.txt", data_mod.PTB_MD5["train"], "by hand", "LMREPORT_DATA_DIR"):
        assert part in message
    assert not (tmp_path / "ptb").exists()


def test_data_dir_setting_comes_from_environment(tmp_path, monkeypatch, tiny_corpus):
    copy = tmp_path / "elsewhere"
    shutil.copytree(tiny_corpus, copy)
    monkeypatch.setenv("LMREPORT_DATA_DIR", str(copy))
    assert data_mod.default_data_dir() == copy
    assert load_corpus(download=False).data_dir == copy


def test_a_file_that_is_not_text_is_named(tmp_path):
    for split in ("train", "valid", "test"):
        (tmp_path / f"ptb.{split}.txt").write_text("a b c\n")
    (tmp_path / "ptb.valid.txt").write_bytes(b"a \x81 b\n")
    with pytest.raises(data_mod.DataError, match=r"ptb.valid.txt is not UTF-8 text \(byte 2: invalid start byte\)"):
        load_corpus(tmp_path, download=False, progress=False)
