"""The published logs: names, duplicates, and the tables recomputed from them."""
from __future__ import annotations

import pytest

from lmreport import published
from lmreport.data import DataError
from lmreport.report import PUBLISHED


@pytest.fixture(scope="module")
def logs():
    folder = published.default_logs_dir()
    if not (folder / "1layer").is_dir():
        pytest.skip(f"published logs not in {folder}; set LMREPORT_PUBLISHED_LOGS")
    return published.load_published_logs(folder, download=False)


def test_file_names_follow_the_repository():
    assert published.log_name(1, "adabelief", 141) == "lstm_adabelief_log_1layer"
    assert published.log_name(2, "lm-x2", 6) == "lstm_adabelief_lm_log_2layer_xx_seed6"
    assert published.log_name(3, "lm-cbrt", 42) == "lstm_adabelief_lm_log_3layer_cuberoot_seed42"
    assert len(published.published_runs()) == 48


def test_logs_recompute_the_printed_tables_and_reveal_the_duplicates(logs):
    assert logs.file.nunique() == 48 and logs.groupby("file").size().max() == 200
    assert published.duplicates(logs) == [
        ["lstm_adabelief_log_2layer_seed42", "lstm_adabelief_log_2layer_seed6"],
        ["lstm_adabelief_lm_log_1layer_x", "lstm_adabelief_lm_log_1layer_xx"]]
    minima = published.run_minima(logs)
    means = minima.groupby(["layers", "variant"])[["min_train", "min_test"]].mean()
    for (layers, variant), (train, test) in PUBLISHED.items():
        assert means.loc[(layers, variant), "min_train"] == pytest.approx(train, abs=0.05 + 1e-9)
        assert means.loc[(layers, variant), "min_test"] == pytest.approx(test, abs=0.05 + 1e-9)


def test_missing_logs_without_network_give_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setattr(published, "REPO_RAW", "http://127.0.0.1:9/")
    with pytest.raises(DataError) as err:
        published.load_published_logs(tmp_path)
    assert "\n" not in str(err.value) and "LMREPORT_PUBLISHED_LOGS" in str(err.value)
