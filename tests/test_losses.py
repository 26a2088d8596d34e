"""GAN losses on inputs whose values are known in closed form."""

import math

import torch

from pipeline.training import losses


def test_logistic_losses_at_zero_logits():
    zeros = torch.zeros(4, 1)
    assert math.isclose(losses.d_logistic_loss(zeros, zeros).item(), 2 * math.log(2), rel_tol=1e-6)
    assert math.isclose(losses.g_nonsaturating_loss(zeros).item(), math.log(2), rel_tol=1e-6)


def test_losses_move_the_right_way():
    confident_real, confident_fake = torch.full((4, 1), 5.0), torch.full((4, 1), -5.0)
    assert losses.d_logistic_loss(confident_real, confident_fake) < 0.02
    assert losses.g_nonsaturating_loss(confident_fake) > 4.9


def test_r1_of_a_linear_discriminator_is_its_squared_weight_norm():
    a = torch.randn(3, 4, 4)
    x = torch.randn(5, 3, 4, 4, requires_grad=True)
    logits = (x * a).flatten(1).sum(1, keepdim=True)
    assert torch.allclose(losses.d_r1_penalty(logits, x), a.pow(2).sum())


def test_path_length_of_a_linear_map():
    # images = ws @ M: J^T y = M y, so the path length is |M y| averaged over ws rows.
    torch.manual_seed(0)
    ws = torch.randn(2, 3, 8, requires_grad=True)
    images = ws.sum(1).view(2, 1, 2, 4) * 3.0
    penalty, lengths, new_mean = losses.g_path_length_penalty(images, ws, torch.zeros(()))
    assert lengths.shape == (2,) and torch.isfinite(penalty)
    assert torch.allclose(new_mean, 0.01 * lengths.mean())


def test_level_mean_weighs_the_final_level_alone():
    from pipeline.training.losses import level_mean

    terms = [torch.tensor(1.0), torch.tensor(2.0), torch.tensor(6.0)]
    assert level_mean(terms, 1.0) == torch.stack(terms).mean()  # the paper's plain mean
    assert level_mean(terms, 3.0) == (1 + 2 + 3 * 6) / 5
