"""Few-shot stylization: the latents and losses of the stylizer fine-tune, as small pure functions.

The recipe is JoJoGAN's, as MediaPipe's Model Maker ``face_stylizer`` runs it: the style images
are inverted by the (frozen) encoder, ``w_s = E(style)``; each step mixes them at the *swap
layers* with mapped random latents, ``alpha * w_s + (1 - alpha) * w_random``, and the generator is
fine-tuned so that every such latent still gives the style image. The layers outside the swap
set keep ``w_s``: at inference they carry the face photo's code, and the fine-tuned generator
renders it in the style. More swap layers or a smaller ``alpha``: a stronger style, less of the
face.

Losses compare the generated image with its style image: pixel L1; a content term and a Gram
style term on a feature network (a list of activations, finest first); and feature matching on
the frozen discriminator (JoJoGAN's only loss). The Gram term is summed over every layer given
(MediaPipe's returns only the last one's), each relative to the style image's own Gram energy.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def stylization_latents(w_style: torch.Tensor, w_random: torch.Tensor, swap_layers: Sequence[int],
                        alpha: float) -> torch.Tensor:
    """The fine-tune's latents: ``w_style`` (N, num_ws, w_dim), except at ``swap_layers`` where
    they are ``alpha * w_style + (1 - alpha) * w_random`` (``w_random``: (N, w_dim), mapped z)."""
    mask = torch.zeros(w_style.shape[1], 1, dtype=w_style.dtype, device=w_style.device)
    mask[list(swap_layers)] = 1.0                                    # (num_ws, 1)
    mixed = alpha * w_style + (1 - alpha) * w_random[:, None, :]
    return w_style * (1 - mask) + mixed * mask


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, C): channel correlations, normalized by C * H * W."""
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w).float()
    return flat @ flat.transpose(1, 2) / (c * h * w)


def _relative(difference: torch.Tensor, target_gram: torch.Tensor) -> torch.Tensor:
    """A squared Gram difference relative to the target's own energy (the mean square of its
    Gram matrix): a number of order one on any feature network, whatever its activation scale."""
    return difference / (target_gram ** 2).mean().clamp_min(1e-12)


def gram_loss(features: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]) -> torch.Tensor:
    """Style loss: the squared distance between Gram matrices relative to the target's, summed
    over every layer (mean over the batch and the matrix entries of each layer). Relative, so
    that MediaPipe's weight (1, for VGG19's raw Gram matrices) keeps the style term in play on
    the discriminator's features, whose raw Gram matrices are thousands of times smaller."""
    total = 0.0
    for f, t in zip(features, targets, strict=True):
        target = gram_matrix(t)
        total = total + _relative(((gram_matrix(f) - target) ** 2).mean(), target)
    return total


def content_loss(features: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]) -> torch.Tensor:
    """Content loss: the mean squared distance between the deepest activations."""
    return ((features[-1].float() - targets[-1].float()) ** 2).mean()


def feature_matching_loss(features: Sequence[torch.Tensor],
                          targets: Sequence[torch.Tensor]) -> torch.Tensor:
    """JoJoGAN's loss: the mean L1 distance between activations, averaged over the layers."""
    return sum((f.float() - t.float()).abs().mean()
               for f, t in zip(features, targets, strict=True)) / len(features)


def pixel_l1(image: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The mean absolute pixel difference."""
    return (image.float() - target.float()).abs().mean()


def gram_distance(features: Sequence[torch.Tensor],
                  targets: Sequence[torch.Tensor]) -> torch.Tensor:
    """Evaluation: per image of ``features`` (N images), the Gram distance to the mean Gram matrix
    of ``targets`` (the style images, any number), relative to that matrix's energy and summed
    over layers, as in :func:`gram_loss`; (N,)."""
    total = 0.0
    for f, t in zip(features, targets, strict=True):
        reference = gram_matrix(t).mean(dim=0, keepdim=True)          # (1, C, C)
        total = total + _relative(((gram_matrix(f) - reference) ** 2).mean(dim=(1, 2)), reference)
    return total
