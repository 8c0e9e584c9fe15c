"""Tests for edge_asr.models.augment: measured physics, not just shapes."""

from __future__ import annotations

import numpy as np
import pytest

from edge_asr.models import augment as A

SR = A.SAMPLE_RATE


def bursty_speech(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Voiced bursts on a 20 ms grid with silent gaps; returns audio and the burst mask,
    which is the ground-truth "active part" for level and SNR checks."""
    rng = np.random.default_rng(seed)
    x = np.zeros(3 * SR, dtype=np.float32)
    mask = np.zeros(len(x), dtype=bool)
    t = np.arange(len(x)) / SR
    for start, stop in ((0.2, 0.8), (1.0, 1.6), (2.0, 2.8)):
        i0, i1 = int(start * SR), int(stop * SR)
        f0 = rng.uniform(100.0, 220.0)
        tone = sum(np.sin(2 * np.pi * k * f0 * t[i0:i1]) / k for k in range(1, 12))
        x[i0:i1] = 0.1 * tone
        mask[i0:i1] = True
    return x, mask


def db(p: float) -> float:
    return 10.0 * np.log10(p)


def power(x: np.ndarray) -> float:
    return float(np.mean(np.square(x, dtype=np.float64)))


@pytest.mark.parametrize("kind", [*A.NOISE_KINDS])
@pytest.mark.parametrize("snr", [0.0, 5.0, 10.0, 20.0])
def test_add_noise_hits_snr_on_active_part(kind: str, snr: float) -> None:
    x, mask = bursty_speech()
    noise = A.make_noise(kind, len(x), np.random.default_rng(1))
    y = A.add_noise(x, noise, snr)
    assert y.shape == x.shape and y.dtype == np.float32
    measured = db(power(x[mask]) / power((y - x)[mask]))
    assert abs(measured - snr) < 0.5


def test_add_noise_rejects_short_noise() -> None:
    x, _ = bursty_speech()
    with pytest.raises(ValueError):
        A.add_noise(x, np.ones(10, np.float32), 10.0)


@pytest.mark.parametrize("target", [-35.0, -20.0, -6.0])
def test_set_level_hits_target_on_active_part(target: float) -> None:
    x, mask = bursty_speech()
    y = A.set_level(x, target)
    assert abs(db(power(y[mask])) - target) < 0.5


def test_band_limit_8k_removes_energy_above_4k_and_keeps_length() -> None:
    x = A.make_noise("white", 2 * SR, np.random.default_rng(0)) * np.float32(0.1)
    f = np.fft.rfftfreq(len(x), 1.0 / SR)
    for seed in range(4):  # covers with / without band-pass and companding
        y = A.band_limit_8k(x, np.random.default_rng(seed))
        assert y.shape == x.shape and np.all(np.isfinite(y))
        spec = np.abs(np.fft.rfft(y * np.hanning(len(y)))) ** 2
        assert db(spec[f > 4100].sum() / spec[f < 3900].sum()) < -50.0
        assert db(spec[(f > 500) & (f < 3000)].sum() / spec.sum()) > -3.0  # band kept


def schroeder_rt60(h: np.ndarray) -> float:
    """T20: Schroeder backward integration of h^2 gives the energy decay curve; fit its
    slope between -5 and -25 dB and extrapolate to 60 dB."""
    energy = np.cumsum(np.square(h.astype(np.float64))[::-1])[::-1]
    edc = 10.0 * np.log10(energy / energy[0] + 1e-30)
    idx = np.nonzero((edc <= -5.0) & (edc >= -25.0))[0]
    slope = np.polyfit(idx / SR, edc[idx], 1)[0]
    return -60.0 / slope


@pytest.mark.parametrize("rt60", [0.25, 0.5, 0.8])
def test_simulate_rir_decay_matches_rt60(rt60: float) -> None:
    for seed in range(3):
        h = A.simulate_rir(rt60, np.random.default_rng(seed))
        assert np.all(np.isfinite(h)) and h[0] == pytest.approx(1.0)
        assert abs(schroeder_rt60(h) / rt60 - 1.0) < 0.35


def test_simulate_rir_fixed_room_and_distance() -> None:
    near = A.simulate_rir(0.5, np.random.default_rng(0), (5.0, 4.0, 3.0), distance=(0.5, 0.8))
    far = A.simulate_rir(0.5, np.random.default_rng(0), (5.0, 4.0, 3.0), distance=(3.0, 4.0))
    # Further away, the reverberant field dominates the direct sound (critical distance).
    assert np.sum(far[1:] ** 2) > 2.0 * np.sum(near[1:] ** 2)


def test_reverberate_keeps_length_level_and_timing() -> None:
    x, mask = bursty_speech()
    y = A.reverberate(x, A.simulate_rir(0.6, np.random.default_rng(3)))
    assert y.shape == x.shape
    assert abs(db(A.active_rms(y) ** 2) - db(A.active_rms(x) ** 2)) < 0.1
    first = int(np.argmax(np.abs(y) > 1e-3 * np.abs(y).max()))
    assert abs(first - int(np.argmax(mask))) < 0.002 * SR  # no propagation delay added


@pytest.mark.parametrize("factor", [0.8, 0.9, 1.0, 1.15, 1.3])
def test_speed_perturb_changes_length_by_factor(factor: float) -> None:
    x, _ = bursty_speech()
    y = A.speed_perturb(x, factor)
    assert abs(len(y) - len(x) / factor) <= 2


def test_clip_and_dc() -> None:
    x, _ = bursty_speech()
    assert np.max(np.abs(A.clip(x, 0.05))) == pytest.approx(0.05)
    assert np.mean(A.add_dc(x, 0.02) - x) == pytest.approx(0.02, abs=1e-6)


@pytest.mark.parametrize("kind", [*A.NOISE_KINDS])
def test_noise_kinds_are_finite_unit_rms(kind: str) -> None:
    v = A.make_noise(kind, 3 * SR + 17, np.random.default_rng(5))
    assert v.shape == (3 * SR + 17,) and v.dtype == np.float32
    assert np.all(np.isfinite(v))
    assert np.sqrt(power(v)) == pytest.approx(1.0, abs=1e-3)


def test_make_noise_unknown_kind() -> None:
    with pytest.raises(ValueError, match="pink"):
        A.make_noise("jackhammer", 100, np.random.default_rng(0))


def test_make_babble_unit_rms() -> None:
    pool = [bursty_speech(s)[0][: SR + 1000 * s] for s in range(5)]
    b = A.make_babble(pool, 4 * SR, np.random.default_rng(0))
    assert b.shape == (4 * SR,) and np.all(np.isfinite(b))
    assert np.sqrt(power(b)) == pytest.approx(1.0, abs=1e-3)


def small_config(**kw: object) -> A.AugmentConfig:
    return A.AugmentConfig(rir_pool_size=6, noise_beds_per_kind=1, noise_bed_seconds=3.0, **kw)


def test_augmenter_output_finite_bounded_deterministic() -> None:
    pool = [bursty_speech(s)[0] for s in range(4)]
    x, _ = bursty_speech(9)
    outs = []
    for _ in range(2):
        aug = A.Augmenter(small_config(pool_refresh_p=0.3), babble_pool=pool, seed=7)
        rng = np.random.default_rng(123)
        outs.append([aug(x, rng) for _ in range(12)])
    for a, b in zip(*outs, strict=True):
        assert a.dtype == np.float32 and np.all(np.isfinite(a))
        assert np.max(np.abs(a)) <= 1.0
        np.testing.assert_array_equal(a, b)
    assert len({len(a) for a in outs[0]}) > 1  # speed and padding vary the length


def test_augmenter_every_stage_on() -> None:
    cfg = small_config(p_speed=1.0, p_reverb=1.0, p_noise=1.0, p_clip=1.0, p_band8k=1.0,
                       p_dc=1.0, level_dbfs=(-6.0, -6.0))
    aug = A.Augmenter(cfg, babble_pool=[bursty_speech(s)[0] for s in range(4)], seed=1)
    x, _ = bursty_speech()
    for seed in range(4):
        y = aug(x, np.random.default_rng(seed))
        assert np.all(np.isfinite(y)) and np.max(np.abs(y)) <= 1.0


def test_augmenter_handles_silence_and_int16() -> None:
    aug = A.Augmenter(small_config(), seed=0)
    for audio in (np.zeros(SR, np.float32), np.zeros(0, np.float32),
                  (bursty_speech()[0] * 32767).astype(np.int16)):
        y = aug(audio, np.random.default_rng(0))
        assert np.all(np.isfinite(y)) and np.max(np.abs(y), initial=0.0) <= 1.0


def test_babble_pool_is_bounded() -> None:
    aug = A.Augmenter(small_config(babble_pool_size=3), seed=0)
    for s in range(6):
        aug.add_to_babble_pool(bursty_speech(s)[0])
    assert aug.babble_pool_len == 3


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        A.AugmentConfig(p_noise=1.5)
    with pytest.raises(ValueError):
        A.AugmentConfig(noise_kinds=("pink", "traffic"))


@pytest.mark.parametrize("condition", A.CONDITIONS)
def test_apply_condition_preserves_length_and_is_deterministic(condition: str) -> None:
    x, _ = bursty_speech()
    y = A.apply_condition(x, condition, np.random.default_rng(4))
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.all(np.isfinite(y)) and np.max(np.abs(y)) <= 1.0
    np.testing.assert_array_equal(y, A.apply_condition(x, condition, np.random.default_rng(4)))


@pytest.mark.parametrize("condition", ["snr10", "snr5"])
def test_apply_condition_snr_is_exact(condition: str) -> None:
    x, mask = bursty_speech()
    y = A.apply_condition(x, condition, np.random.default_rng(2))
    snr = db(power(x[mask]) / power((y - x)[mask]))
    assert abs(snr - float(condition[3:])) < 0.5


def test_apply_condition_reverb_keeps_timing() -> None:
    # Noise bursts: a sharp autocorrelation, unlike periodic voiced sound.
    x = A.make_noise("white", 2 * SR, np.random.default_rng(1)) * np.float32(0.05)
    x[: SR // 2] = 0.0
    y = A.apply_condition(x, "reverb", np.random.default_rng(0))
    lags = np.arange(-200, 201)
    xc = [float(np.dot(x[200:-200], y[200 + k : len(y) - 200 + k])) for k in lags]
    assert abs(int(lags[int(np.argmax(xc))])) <= 2


def test_apply_condition_unknown_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="far_noisy"):
        A.apply_condition(np.zeros(100, np.float32), "underwater", np.random.default_rng(0))
