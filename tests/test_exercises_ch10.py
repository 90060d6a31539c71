"""The chapter-10 checkers accept the reference solutions and reject stubs and typical mistakes."""

from __future__ import annotations

import torch
from solutions import ch10 as solutions

from ebflow_lite.exercises import ch10 as check
from ebflow_lite.experiments.sampling_study import PreparedInverse, benchmark_model
from ebflow_lite.sampling import langevin


def _stub(*args, **kwargs):
    raise NotImplementedError


# ----------------------------------------------------------------------------- precision form


def test_precision_conditional_accepts_the_reference() -> None:
    assert check.precision_conditional(solutions.precision_conditional)


def test_precision_conditional_rejects_the_stub() -> None:
    result = check.precision_conditional(_stub)
    assert not result and "not implemented" in result.message


def test_precision_conditional_rejects_an_uninverted_precision() -> None:
    def uninverted(a, b, x, mask):
        mean, _ = solutions.precision_conditional(a, b, x, mask)
        p = a.T @ a
        return mean, p[mask][:, mask]

    result = check.precision_conditional(uninverted)
    assert not result and "its inverse" in result.message


def test_precision_conditional_rejects_the_marginal_covariance() -> None:
    def marginal(a, b, x, mask):
        mean, _ = solutions.precision_conditional(a, b, x, mask)
        return mean, torch.linalg.inv(a.T @ a)[mask][:, mask]

    result = check.precision_conditional(marginal)
    assert not result and "marginal" in result.message


def test_precision_conditional_rejects_a_flipped_correction() -> None:
    def flipped(a, b, x, mask):
        mean, cov = solutions.precision_conditional(a, b, x, mask)
        mu = -torch.linalg.solve(a, b)
        return 2 * mu[mask] - mean, cov

    result = check.precision_conditional(flipped)
    assert not result and "sign" in result.message


def test_precision_conditional_rejects_ignoring_the_observed_entries() -> None:
    def unconditioned(a, b, x, mask):
        _, cov = solutions.precision_conditional(a, b, x, mask)
        mu = -torch.linalg.solve(a, b)
        return mu[mask].expand(x.shape[0], -1).clone(), cov

    result = check.precision_conditional(unconditioned)
    assert not result and "ignores x_O" in result.message


# ----------------------------------------------------------------------------- masked MALA


def test_masked_mala_accepts_the_reference() -> None:
    assert check.masked_mala(solutions.masked_mala)


def test_masked_mala_rejects_the_stub() -> None:
    result = check.masked_mala(_stub)
    assert not result and "not implemented" in result.message


def test_masked_mala_rejects_the_full_gradient_in_the_proposal() -> None:
    def full_gradient(model, z, y, mask, h):
        return solutions.masked_mala(model, z, y, torch.ones_like(mask), h)

    result = check.masked_mala(full_gradient)
    assert not result and "observed entries' gradient" in result.message


def test_masked_mala_rejects_the_random_walk_ratio() -> None:
    def random_walk(model, z, y, mask, h):
        with torch.no_grad():
            return model.energy(z) - model.energy(y)

    result = check.masked_mala(random_walk)
    assert not result and "not symmetric" in result.message


def test_masked_mala_rejects_swapped_proposal_terms() -> None:
    def swapped(model, z, y, mask, h):
        with torch.no_grad():
            e = model.energy(z) - model.energy(y)
        return 2 * e - solutions.masked_mala(model, z, y, mask, h)

    result = check.masked_mala(swapped)
    assert not result and "swapped" in result.message


def test_masked_mala_reference_is_the_library_chain() -> None:
    # The library's MALA on the clamped energy accepts with exactly this ratio.
    model = check._ToyEnergy()
    z = torch.randn(6, 5, dtype=torch.float64)
    mask = torch.zeros(6, 5, dtype=torch.bool)
    mask[:, 1:3] = True
    y = z.clone()
    y[mask] += 0.1
    ours = solutions.masked_mala(model, z, y, mask, 0.2)
    torch.testing.assert_close(ours, check.reference_log_ratio(model, z, y, mask, 0.2))


# ----------------------------------------------------------------------------- crossover


def test_crossover_batch_accepts_the_reference() -> None:
    result = check.crossover_batch(solutions.crossover_vs_batch)
    assert result, result


def test_crossover_batch_rejects_the_stub() -> None:
    result = check.crossover_batch(_stub)
    assert not result and "not implemented" in result.message


def test_crossover_batch_rejects_a_prepared_inverse() -> None:
    # Timing the inverse without its factorisation: T* is about one step at every batch.
    def warm(dim, batch_sizes):
        model = benchmark_model(dim)
        prepared = PreparedInverse(model)
        out = {}
        for batch in batch_sizes:
            x0, u = torch.randn(batch, dim), torch.randn(batch, dim)
            step = solutions._median_seconds(lambda x0=x0: langevin(model, x0, 1e-3, 4)) / 4
            out[batch] = solutions._median_seconds(lambda u=u: prepared(u)) / step
        return out

    result = check.crossover_batch(warm)
    assert not result and "factorisation" in result.message


def test_crossover_batch_rejects_sample_by_sample_inversion() -> None:
    # One model.sample(1) per sample: the factorisation is paid B times, T* does not fall.
    def one_by_one(dim, batch_sizes):
        model = benchmark_model(dim)
        out = {}
        for batch in batch_sizes:
            x0 = torch.randn(batch, dim)
            step = solutions._median_seconds(lambda x0=x0: langevin(model, x0, 1e-3, 4)) / 4

            def each(batch=batch):
                for _ in range(batch):
                    model.sample(1)

            out[batch] = solutions._median_seconds(each, repeats=1) / step
        return out

    result = check.crossover_batch(one_by_one)
    assert not result and "sample by sample" in result.message


def test_crossover_batch_rejects_a_measurement_off_by_a_constant_factor() -> None:
    # Right trend, wrong unit: each inverse timed five times over (or steps counted as a
    # fifth of a step); the side-by-side re-measurements disagree every time.
    def five_times(dim, batch_sizes):
        return {b: 5 * t for b, t in solutions.crossover_vs_batch(dim, batch_sizes).items()}

    result = check.crossover_batch(five_times)
    assert not result and "measured here" in result.message and "tries" in result.message


def test_crossover_batch_rejects_a_wrong_shape() -> None:
    result = check.crossover_batch(lambda dim, batches: [1.0, 2.0, 3.0])
    assert not result and "dict" in result.message
