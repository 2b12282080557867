"""RoPE context extension: every rule against its formula, computed here independently in numpy."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from posenc_jax.encodings import Rope, Xpos, apply_rope, rope_frequencies, yarn_attention_factor
from posenc_jax.encodings.rope_scaling import yarn_correction_range
from posenc_jax.errors import ConfigError
from posenc_jax.train import train

from helpers import make_settings


def _theta(head_dim, base=10000.0):
    return np.array([base ** (-2 * i / head_dim) for i in range(head_dim // 2)])


def test_none_and_pi():
    np.testing.assert_allclose(rope_frequencies(8), _theta(8), rtol=1e-6)
    np.testing.assert_allclose(rope_frequencies(8, scaling="none"), _theta(8), rtol=1e-6)
    np.testing.assert_allclose(
        rope_frequencies(8, scaling="pi", scale=4.0), _theta(8) / 4, rtol=1e-6
    )


def test_ntk_changes_the_base():
    d, s = 16, 8.0
    new_base = 10000.0 * s ** (d / (d - 2))
    frequencies = np.asarray(rope_frequencies(d, scaling="ntk", scale=s))
    np.testing.assert_allclose(frequencies, _theta(d, new_base), rtol=1e-5)
    # The highest frequency is kept, the lowest is interpolated by exactly s.
    assert frequencies[0] == pytest.approx(1.0)
    assert frequencies[-1] == pytest.approx(_theta(d)[-1] / s, rel=1e-5)


def test_dynamic_ntk_scales_only_past_the_trained_length():
    d, trained = 16, 64

    def dynamic(length, scale=1.0):
        return np.asarray(
            rope_frequencies(
                d, scaling="dynamic_ntk", scale=scale, original_max_len=trained, length=length
            )
        )

    np.testing.assert_allclose(dynamic(10), _theta(d), rtol=1e-6)
    np.testing.assert_allclose(dynamic(trained), _theta(d), rtol=1e-6)
    np.testing.assert_allclose(
        dynamic(2 * trained), _theta(d, 10000.0 * 2 ** (d / (d - 2))), rtol=1e-5
    )
    # HF's factor with s = 2 at length 3L: 2·3 − 1 = 5.
    np.testing.assert_allclose(
        dynamic(3 * trained, 2.0), _theta(d, 10000.0 * 5 ** (d / (d - 2))), rtol=1e-5
    )
    # Per-example lengths give per-example frequencies.
    batch = dynamic(jnp.array([10, 2 * trained]))
    np.testing.assert_allclose(batch, np.stack([dynamic(10), dynamic(2 * trained)]), rtol=1e-6)


# θ'_i / θ_i under "yarn", computed in float64 by a line-by-line transcription of the authors'
# code (jquesnelle/yarn, scaled_rope/LlamaYaRNScaledRotaryEmbedding.py: yarn(),
# find_correction_range, linear_ramp_mask), with their defaults β_fast = 32, β_slow = 1.
YARN_GOLDEN = [
    # The README's run: d = 16, base 10^4, L = 17 positions, s = 4. Correction range (0, 1):
    # the fastest pair keeps its frequency, every other pair is interpolated.
    ((16, 10000.0, 4.0, 17), (0, 1), {i: r for i, r in enumerate([1.0] + [0.25] * 7)}),
    # LLaMA: d = 128, base 10^4, L = 4096, s = 8. Range (20, 46): the ramp runs in between.
    (
        (128, 10000.0, 8.0, 4096),
        (20, 46),
        {0: 1.0, 20: 1.0, 21: 0.9663461538, 33: 0.5625, 45: 0.1586538462, 46: 0.125, 63: 0.125},
    ),
    # LLaMA-3's base: d = 32, base 5·10^5, L = 512, s = 2. Range (1, 6).
    (
        (32, 500000.0, 2.0, 512),
        (1, 6),
        dict(enumerate([1.0, 1.0, 0.9, 0.8, 0.7, 0.6] + [0.5] * 10)),
    ),
]


@pytest.mark.parametrize("setting, correction_range, ratios", YARN_GOLDEN)
def test_yarn_matches_the_authors_code(setting, correction_range, ratios):
    d, base, s, trained = setting
    assert yarn_correction_range(d, base, trained) == correction_range
    theta = _theta(d, base)
    yarn = np.asarray(rope_frequencies(d, base, "yarn", s, trained), dtype=np.float64)
    for i, ratio in ratios.items():
        assert yarn[i] / theta[i] == pytest.approx(ratio, rel=1e-6), i


def test_yarn_paper_ramps_in_turns_and_differs_between_the_bounds():
    """The paper's γ(r) = (r − 1)/31, r = L·θ/(2π): at the README's run it shrinks the fastest
    pair to about 0.29·θ_0, where the authors' code keeps θ_0."""
    d, base, s, trained = 16, 10000.0, 4.0, 17
    theta = _theta(d, base)
    paper = np.asarray(rope_frequencies(d, base, "yarn_paper", s, trained), dtype=np.float64)
    turns = trained * theta[0] / (2 * math.pi)  # 2.71 turns
    gamma = (turns - 1) / 31
    assert paper[0] == pytest.approx((1 - gamma) * theta[0] / s + gamma * theta[0], rel=1e-6)
    assert paper[0] / theta[0] == pytest.approx(0.2913, abs=1e-4)  # (1 − γ)/4 + γ, γ = 0.055
    np.testing.assert_allclose(paper[1:], theta[1:] / s, rtol=1e-6)  # fewer than α = 1 turn


def test_yarn_ramp_never_divides_by_zero_when_the_range_is_one_index():
    # d = 2: both bounds clamp to index 0 or 1 of a single pair.
    for trained in (1, 17, 10**6):
        low, high = yarn_correction_range(2, 10000.0, trained)
        assert high > low
        assert np.isfinite(np.asarray(rope_frequencies(2, 10000.0, "yarn", 4.0, trained))).all()


def test_yarn_attention_factor():
    assert yarn_attention_factor(1.0) == 1.0
    assert yarn_attention_factor(4.0) == pytest.approx(0.1 * math.log(4) + 1)
    assert yarn_attention_factor(8.0) == pytest.approx(1.2079441541679836)


def test_pi_is_rope_at_divided_positions():
    x = jax.random.normal(jax.random.key(0), (2, 12, 3, 16))
    positions = jnp.broadcast_to(jnp.arange(12), (2, 12))
    for s in (2.0, 3.0, 8.0):
        pi = Rope(scaling="pi", scale=s).rotate(x, positions, is_query=True)
        np.testing.assert_allclose(
            pi, apply_rope(x, positions / s, rope_frequencies(16)), rtol=1e-5, atol=1e-6
        )


def test_yarn_multiplies_queries_and_keys_by_the_attention_factor():
    x = jax.random.normal(jax.random.key(1), (1, 5, 2, 16))
    positions = jnp.arange(5)[None]
    spec = Rope(scaling="yarn", scale=4.0, original_max_len=8)
    unscaled = apply_rope(
        x, positions, rope_frequencies(16, scaling="yarn", scale=4.0, original_max_len=8)
    )
    np.testing.assert_allclose(
        spec.rotate(x, positions, is_query=False), unscaled * (0.1 * math.log(4) + 1), rtol=1e-5
    )


def test_dynamic_ntk_in_the_model_reads_each_sequence_length():
    """Inside the trained length it is plain RoPE; past it, each example gets its own base."""
    x = jax.random.normal(jax.random.key(2), (2, 40, 1, 16))
    short = jnp.where(jnp.arange(40) < 10, jnp.arange(40), 0)  # length 10, then padding at 0
    positions = jnp.stack([short, jnp.arange(40)])  # lengths 10 and 40
    rotated = Rope(scaling="dynamic_ntk", original_max_len=20).rotate(x, positions, is_query=True)
    plain = apply_rope(x, positions, rope_frequencies(16))
    np.testing.assert_allclose(rotated[0], plain[0], rtol=1e-6)
    ntk = apply_rope(x[1:], positions[1:], rope_frequencies(16, scaling="ntk", scale=2.0))
    np.testing.assert_allclose(rotated[1:], ntk, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("scaling", ["pi", "ntk", "yarn"])
def test_static_rules_keep_rope_relative(scaling):
    q, k = jax.random.normal(jax.random.key(3), (2, 1, 1, 1, 16))
    spec = Rope(scaling=scaling, scale=4.0, original_max_len=32)

    def dot(m, n):
        return float(
            jnp.sum(
                spec.rotate(q, jnp.array([[m]]), True) * spec.rotate(k, jnp.array([[n]]), False)
            )
        )

    assert dot(3, 10) == pytest.approx(dot(103, 110), rel=1e-4, abs=1e-5)


def test_xpos_takes_the_rules_in_its_rotation():
    x = jax.random.normal(jax.random.key(4), (1, 6, 1, 8))
    positions = jnp.arange(6)[None]
    plain, pi = Xpos(), Xpos(scaling="pi", scale=2.0)
    ratio = pi.rotate(x, positions, True) / Rope(scaling="pi", scale=2.0).rotate(x, positions, True)
    np.testing.assert_allclose(
        ratio, plain.rotate(x, positions, True) / Rope().rotate(x, positions, True), rtol=1e-4
    )


def test_trained_length_is_filled_in_from_the_task():
    settings = make_settings("encoding=rope", "task=reverse", "task.train_max_len=6")
    assert settings.encoding.original_max_len == 12  # 6 input tokens and 6 answer slots
    randomized = make_settings(
        "encoding=rope", "encoding.randomized=true", "encoding.max_position=100"
    )
    assert randomized.encoding.original_max_len == 100
    explicit = make_settings("encoding=rope", "encoding.original_max_len=50")
    assert explicit.encoding.original_max_len == 50


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["encoding.scaling=longrope"],
            r"scaling='longrope' in encoding 'rope' is unknown; valid choices are \['none', 'pi', "
            r"'ntk', 'dynamic_ntk', 'yarn', 'yarn_paper'\]",
        ),
        (["encoding.scaling=pi", "encoding.scale=0.5"], r"encoding.scale=0.5 must be at least 1"),
        (["encoding.scale=4"], r"encoding.scale=4.0 has no effect with encoding.scaling=none"),
        (
            ["encoding.scaling=ntk", "model.d_model=4", "model.num_heads=2"],
            r"needs a rotated dimension d of at least 4; it is 2",
        ),
    ],
)
def test_bad_scaling_is_a_clear_error(overrides, message):
    with pytest.raises(ConfigError, match=message):
        make_settings("encoding=rope", *overrides)


@pytest.mark.parametrize("rule", ["dynamic_ntk", "yarn"])
def test_rules_train_through_the_jitted_step(rule):
    """At training time too; original_max_len=4 makes dynamic_ntk act on the longer examples."""
    settings = make_settings(
        "encoding=rope",
        f"encoding.scaling={rule}",
        "encoding.scale=2",
        "encoding.original_max_len=4",
        "train.steps=10",
        "train.log_every=5",
    )
    summary = train(settings, lambda *_: None).summary
    assert summary["status"] == "completed" and math.isfinite(summary["final_loss"])
