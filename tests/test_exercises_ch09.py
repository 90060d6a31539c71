"""The chapter-9 checkers accept the reference solutions and reject stubs and typical mistakes."""

from __future__ import annotations

import torch
from solutions import ch09 as solutions

from ebflow_lite.exercises import ch09 as check
from ebflow_lite.layers import circular_conv_logabsdet


def _stub(*args, **kwargs):
    raise NotImplementedError


# ----------------------------------------------------------------------------- 1x1 convolution


def test_conv1x1_accepts_the_reference() -> None:
    result = check.conv1x1_jacobian(solutions.conv1x1_jacobian)
    assert result, result


def test_conv1x1_rejects_the_stub() -> None:
    result = check.conv1x1_jacobian(_stub)
    assert not result and "not implemented" in result.message


def test_conv1x1_rejects_pixel_major_order() -> None:
    def pixel_major(weight, h, w):
        _, logdet = solutions.conv1x1_jacobian(weight, h, w)
        return torch.kron(torch.eye(h * w, dtype=weight.dtype), weight), logdet

    result = check.conv1x1_jacobian(pixel_major)
    assert not result and "pixel-major" in result.message


def test_conv1x1_rejects_a_transposed_weight() -> None:
    def transposed(weight, h, w):
        return solutions.conv1x1_jacobian(weight.T.contiguous(), h, w)

    result = check.conv1x1_jacobian(transposed)
    assert not result and "transposed" in result.message


def test_conv1x1_rejects_a_log_det_without_the_pixel_count() -> None:
    def once(weight, h, w):
        matrix, _ = solutions.conv1x1_jacobian(weight, h, w)
        return matrix, torch.linalg.slogdet(weight)[1]

    result = check.conv1x1_jacobian(once)
    assert not result and "H W pixels" in result.message


def test_conv1x1_rejects_the_log_of_a_signed_determinant() -> None:
    def signed(weight, h, w):
        matrix, _ = solutions.conv1x1_jacobian(weight, h, w)
        return matrix, h * w * torch.log(torch.linalg.det(weight))

    result = check.conv1x1_jacobian(signed)
    assert not result and "negative" in result.message


def test_conv1x1_rejects_one_factor_per_entry() -> None:
    def per_entry(weight, h, w):
        matrix, _ = solutions.conv1x1_jacobian(weight, h, w)
        return matrix, weight.shape[0] * h * w * torch.linalg.slogdet(weight)[1]

    result = check.conv1x1_jacobian(per_entry)
    assert not result and "per pixel" in result.message


# ----------------------------------------------------------------------------- circular log-det


def test_circular_accepts_the_reference_and_the_library() -> None:
    assert check.circular_conv_logdet(solutions.circular_conv_logdet)
    assert check.circular_conv_logdet(circular_conv_logabsdet)


def test_circular_rejects_the_stub() -> None:
    result = check.circular_conv_logdet(_stub)
    assert not result and "not implemented" in result.message


def test_circular_rejects_the_zero_padded_determinant() -> None:
    def zero_padded(weight, h, w):
        return torch.linalg.slogdet(check.zero_padded_conv_matrix(weight, h, w))[1]

    result = check.circular_conv_logdet(zero_padded)
    assert not result and "zero-padded" in result.message


def test_circular_rejects_independent_channels() -> None:
    def diagonal_only(weight, h, w):
        spectrum = torch.fft.fft2(weight, s=(h, w))
        return torch.diagonal(spectrum, dim1=0, dim2=1).abs().log().sum()

    result = check.circular_conv_logdet(diagonal_only)
    assert not result and "channels separately" in result.message


def test_circular_rejects_an_unpadded_kernel_dft() -> None:
    def unpadded(weight, h, w):
        return torch.linalg.slogdet(torch.fft.fft2(weight).permute(2, 3, 0, 1))[1].sum()

    result = check.circular_conv_logdet(unpadded)
    assert not result and "zero-pad the kernel" in result.message


def test_circular_rejects_the_real_part() -> None:
    def real_part(weight, h, w):
        blocks = torch.fft.fft2(weight, s=(h, w)).permute(2, 3, 0, 1)
        return torch.linalg.det(blocks).real.abs().log().sum()

    result = check.circular_conv_logdet(real_part)
    assert not result and "modulus" in result.message


def test_circular_rejects_a_complex_result() -> None:
    def complex_sum(weight, h, w):
        blocks = torch.fft.fft2(weight, s=(h, w)).permute(2, 3, 0, 1)
        return torch.linalg.det(blocks).log().sum()

    result = check.circular_conv_logdet(complex_sum)
    assert not result and "real number" in result.message


def test_circular_reference_is_exact_on_a_large_image_where_dense_is_out_of_reach() -> None:
    weight = 0.2 * torch.randn(3, 3, 5, 5, generator=torch.Generator().manual_seed(0),
                               dtype=torch.float64)
    weight[:, :, 2, 2] += torch.eye(3, dtype=torch.float64)
    torch.testing.assert_close(solutions.circular_conv_logdet(weight, 64, 48),
                               circular_conv_logabsdet(weight, 64, 48), rtol=1e-10, atol=1e-8)


# ----------------------------------------------------------------------------- masks


def test_masks_accept_the_reference() -> None:
    result = check.pixel_space_mask(solutions.pixel_space_mask)
    assert result, result


def test_masks_reject_the_stub() -> None:
    result = check.pixel_space_mask(_stub)
    assert not result and "not implemented" in result.message


def test_masks_reject_the_squeezed_mask() -> None:
    def squeezed(kind, parity, shape):
        c, h, w = shape
        return solutions.pixel_space_mask(kind, parity, shape).view(
            c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3).reshape(4 * c, h // 2, w // 2)

    result = check.pixel_space_mask(squeezed)
    assert not result and "undo the squeeze" in result.message


def test_masks_reject_the_complement() -> None:
    result = check.pixel_space_mask(lambda k, p, s: ~solutions.pixel_space_mask(k, p, s))
    assert not result and "keeps x" in result.message


def test_masks_reject_swapped_parities() -> None:
    result = check.pixel_space_mask(lambda k, p, s: solutions.pixel_space_mask(k, 1 - p, s))
    # the complement and the other parity coincide for these masks: either hint is right
    assert not result and ("parities" in result.message or "keeps x" in result.message)


def test_masks_reject_a_mask_made_without_the_squeeze() -> None:
    def no_squeeze(kind, parity, shape):
        from ebflow_lite.layers import coupling_mask
        return coupling_mask(shape, kind, parity) if shape[0] > 1 or kind != "channel" \
            else torch.zeros(shape, dtype=torch.bool)

    result = check.pixel_space_mask(no_squeeze)
    assert not result and "wrong mask" in result.message
