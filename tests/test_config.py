"""RunConfig: published defaults per depth, JSON round trip, validation."""
from __future__ import annotations

import re

import pytest

from lmreport.config import RunConfig, make_config


@pytest.mark.parametrize("layers,lr,eps", [(1, 1e-3, 1e-16), (2, 1e-2, 1e-12), (3, 1e-2, 1e-12)])
def test_paper_profile_uses_appendix_b_values(layers, lr, eps):
    c = make_config("paper", layers=layers, optimizer="adabelief-lm", f="sqrt")
    assert (c.lr, c.eps, c.betas, c.wdecay, c.clip) == (lr, eps, (0.9, 0.999), 1.2e-6, 0.25)
    assert (c.emsize, c.nhid, c.dropout, c.dropouth, c.dropouti, c.dropoute, c.wdrop) == \
        (400, 1150, 0.4, 0.25, 0.4, 0.1, 0.5)
    assert (c.epochs, c.when, c.batch_size, c.bptt, c.eps_lm, c.c_mode) == \
        (200, [100, 145], 20, 70, 1.0, "running_min")
    assert (c.wdrop_mode, c.tf32, c.alpha, c.beta) == ("frozen", False, 2.0, 1.0)


def test_overrides_win_and_json_round_trips(tmp_path):
    c = make_config("smoke", layers=2, optimizer="adam-lm", f="x", lr=5e-3, c_mode="constant:1.5",
                    betas=(0.8, 0.99))
    path = tmp_path / "config.json"
    c.to_json(path)
    back = RunConfig.from_json(path)
    assert back == c and back.lr == 5e-3 and back.betas == (0.8, 0.99)
    assert c.name == "2layer-adam-lm-x-cconstant1.5-seed141"
    assert make_config("smoke", eval_mode="published").name == "3layer-adabelief-eval-published-seed141"
    assert make_config("smoke", embed_padding="none").name == "3layer-adabelief-pad-none-seed141"
    assert make_config("paper").embed_padding == "last"  # the published lookup


@pytest.mark.parametrize("overrides,message", [
    (dict(layers=True), "layers=True is invalid: a value of type int"),
    (dict(dropout="0.4"), "dropout='0.4' is invalid: a value of type float"),
    (dict(when=[2.5]), "when=[2.5] is invalid: a value of type list[int]"),
    (dict(trace=1), "trace=1 is invalid: a value of type bool"),
    (dict(c_mode="zero"), "c_mode='zero' is invalid: c_mode applies to the -lm optimizers only, not adabelief"),
    (dict(eps_lm=2.0), "eps_lm=2.0 is invalid: eps_lm applies to the -lm optimizers only"),
    (dict(c_reset="never"), "c_reset='never' is invalid: c_reset applies to the -lm optimizers only"),
    (dict(optimizer="sgd", eps=1e-8), "eps=1e-08 is invalid: eps applies to the adaptive optimizers only, not sgd"),
    (dict(optimizer="sgd-lm", f="x", betas=(0.8, 0.9)), "betas=(0.8, 0.9) is invalid: betas applies to the adaptive"),
    (dict(embed_padding="first"), "embed_padding='first' is invalid: one of last, none"),
])
def test_wrong_types_and_settings_that_would_do_nothing_are_refused(overrides, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make_config("smoke", **overrides)


def test_json_lists_become_tuples():
    assert RunConfig(betas=[0.8, 0.99]).validate().betas == (0.8, 0.99)
    assert RunConfig(when=(5, 7)).validate().when == [5, 7]  # a tuple from Python, a list in config.json
    assert make_config("smoke", optimizer="sgd").eps == 0.0  # its own default passes


def test_unknown_fields_and_profiles_are_refused():
    with pytest.raises(ValueError, match="unknown config fields: nlayer"):
        make_config("paper", nlayer=2)
    with pytest.raises(ValueError, match="profile='gpu'"):
        make_config("gpu")
    with pytest.raises(ValueError, match="dropout=1.5"):
        make_config("paper", dropout=1.5)
    with pytest.raises(ValueError, match="device='tpu'"):
        make_config("paper", device="tpu")
