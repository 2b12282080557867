"""posenc-inspect: pictures for every encoding, and what they must show."""

import dataclasses

import numpy as np
import pytest

from posenc_jax.cli import inspect_main
from posenc_jax.encodings import alibi_slopes, available, make_encoding, rope_frequencies
from posenc_jax.errors import ConfigError
from posenc_jax.inspection import inspect_encoding, position_similarity, rope_decay_bound
from posenc_jax.model_config import ModelConfig

from helpers import modes, run_in_process

MODEL = ModelConfig()  # the default small model: 4 heads of 16 dimensions


@pytest.mark.parametrize("name", available())
def test_every_encoding_gets_nonempty_pictures(name, tmp_path):
    model = dataclasses.replace(MODEL, causal=modes(name)[0])
    summary = inspect_encoding(
        make_encoding({"name": name}), model, length=48, trained_len=12, out_dir=tmp_path
    )
    expected = {"similarity.png"} | (
        {"decay.png", "scaling.png"} if name in ("rope", "xpos") else set()
    )
    assert {p.name for p in tmp_path.glob("*.png")} == expected
    for picture in expected:
        assert (tmp_path / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (tmp_path / picture).stat().st_size > 5000
    assert (
        summary.startswith(f"encoding {name} (")
        and (tmp_path / "summary.txt").read_text() == summary + "\n"
    )


def test_sinusoidal_neighbours_look_alike_and_distant_positions_differ():
    similarity = position_similarity(make_encoding({"name": "sinusoidal"}), MODEL, 64)[0]
    neighbours = np.mean(np.diagonal(similarity, 1))
    distant = np.mean(np.diagonal(similarity, 32))
    assert similarity.shape == (64, 64) and np.allclose(np.diagonal(similarity), MODEL.d_model / 2)
    assert neighbours > 0.9 * MODEL.d_model / 2 > distant


def test_alibi_picture_is_its_bias_plus_the_content_logit():
    similarity = position_similarity(make_encoding({"name": "alibi"}), MODEL, 10)
    distance = np.abs(np.arange(10)[:, None] - np.arange(10)[None, :])
    content = MODEL.head_dim / np.sqrt(MODEL.head_dim)  # ones·ones / sqrt(d)
    expected = content - np.asarray(alibi_slopes(4))[:, None, None] * distance
    np.testing.assert_allclose(similarity, expected, rtol=1e-5)


def test_rope_decay_bound_matches_the_sum_by_hand():
    theta = np.asarray(rope_frequencies(8), np.float64)
    by_hand = np.mean([abs(sum(np.exp(1j * 5 * theta[k]) for k in range(j))) for j in range(1, 5)])
    assert rope_decay_bound(theta, np.array([5]))[0] == pytest.approx(by_hand)
    assert rope_decay_bound(theta, np.array([0]))[0] == pytest.approx(np.mean([1, 2, 3, 4]))


def test_length_beyond_a_learned_table_is_a_clear_error(tmp_path):
    with pytest.raises(
        ConfigError, match=r"length=600 needs positions up to 599.*'learned' represents only 512"
    ):
        inspect_encoding(make_encoding({"name": "learned"}), MODEL, 600, 12, tmp_path)


def test_cli_writes_pictures(tmp_path, capsys):
    argv = ["encoding=xpos", "length=40", "trained_len=10", f"out_dir={tmp_path}"]
    status, out, err = run_in_process(inspect_main, argv, capsys)
    assert status == 0, err
    assert "scaling rules extending trained_len=10 to length=40" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "decay.png",
        "scaling.png",
        "similarity.png",
        "summary.txt",
    ]


def test_a_decoder_summary_looks_at_the_keys_its_mask_keeps(tmp_path):
    causal = ModelConfig(causal=True)
    summary = inspect_encoding(make_encoding({"name": "fire"}), causal, 8, 4, tmp_path)
    line = summary.splitlines()[1]
    assert line.startswith("mean S[i, i-r]: r=0: ") and "nan" not in line
    assert [part.split(":")[0] for part in line.split(": ", 1)[1].split(", ")] == [
        "r=0",
        "r=1",
        "r=4",
    ]  # distances 0, 1, 8 // 8 and 8 // 2, each once


def test_cli_names_only_the_pictures_it_wrote(tmp_path, capsys):
    for encoding in ("rope", "alibi"):  # rope's decay.png and scaling.png stay in the folder
        status, out, err = run_in_process(
            inspect_main, [f"encoding={encoding}", "length=16", f"out_dir={tmp_path}"], capsys
        )
        assert status == 0, err
    assert f"wrote similarity.png, summary.txt in {tmp_path}" in out


@pytest.mark.parametrize("override", ["length=abc", "length=8.5", "seed=abc", "length=null"])
def test_cli_bad_option_types_are_one_paragraph(tmp_path, capsys, override):
    status, _, err = run_in_process(inspect_main, [override, f"out_dir={tmp_path}"], capsys)
    assert status == 2 and "has the wrong type" in err and "Traceback" not in err


def test_a_refused_inspection_leaves_no_folder(tmp_path, capsys):
    """Hydra makes out_dir before posenc-inspect can refuse (FoX needs a decoder): the refusal
    removes exactly the folders Hydra made."""
    argv = ["encoding=fox", f"out_dir={tmp_path / 'new' / 'fox'}"]
    code, _, err = run_in_process(inspect_main, argv, capsys)
    assert code == 2 and "encoding=fox is defined for decoders only" in err
    assert list(tmp_path.iterdir()) == []
