"""The latency search's supernet: straight-through channel masks, where they act, and the
extracted student that computes what the masked supernet does."""

import pytest
import torch

from pipeline.models.blazestylegan import PRESETS, BlazeStyleGAN
from pipeline.models.masked import (
    ChannelMasks,
    MaskedStudent,
    extract,
    share_masks,
    supernet_config,
)
from pipeline.models.units import randomize_like_trained


def _masked(seed=0, head="bilinear"):
    config = supernet_config(PRESETS["blaze-tiny-32"].model_copy(update={"head": head}), 2.0)
    torch.manual_seed(seed)
    masked = MaskedStudent(randomize_like_trained(BlazeStyleGAN(config), seed))
    with torch.no_grad():
        for scores in masked.masks.vectors():
            scores.copy_(torch.rand(len(scores), generator=torch.Generator().manual_seed(seed)))
    return masked


def test_supernet_widens_levels_and_last_head_to_multiples_of_8():
    config = supernet_config(PRESETS["blaze-tiny-32"], 1.3)
    assert config.channels == [88, 88, 48] and config.head_channels == [16, 16, 48]
    with pytest.raises(ValueError, match="multiples of 8"):
        ChannelMasks(PRESETS["blaze-512"])  # its last head is 20 wide


def test_masks_start_kept_seeded_and_staggered():
    config = supernet_config(PRESETS["blaze-tiny-32"], 2.0)
    masks = ChannelMasks(config, seed=3)
    assert all(len(k) == c for k, c in zip(masks.kept(), [*config.channels, 64]))
    scores = torch.cat(list(masks.parameters()))
    assert 0.5 <= scores.min() and scores.max() <= 1 and len(set(scores.tolist())) == len(scores)
    assert torch.equal(scores, torch.cat(list(ChannelMasks(config, seed=3).parameters())))


def test_binary_masks_keep_a_floor_and_pass_gradients_straight_through():
    scores = torch.tensor([0.2, 0.4, 0.3], requires_grad=True)
    kept = ChannelMasks.binary(scores)
    assert kept.tolist() == [0.0, 1.0, 0.0]  # none above 0.5: the best group stays
    kept.sum().backward()
    assert scores.grad.tolist() == [1.0, 1.0, 1.0]
    assert ChannelMasks.binary(torch.tensor([0.9, 0.6, 0.1])).tolist() == [1.0, 1.0, 0.0]


def test_the_head_floor_keeps_its_best_groups_whatever_their_scores():
    assert ChannelMasks.binary(torch.tensor([0.2, 0.4, 0.3]), 2).tolist() == [0.0, 1.0, 1.0]
    assert ChannelMasks.binary(torch.tensor([0.3, 0.3, 0.1])).tolist() == [1.0, 0.0, 0.0]
    config = supernet_config(PRESETS["blaze-tiny-32"], 2.0)  # levels 128, 128, 64; head 64
    masks = ChannelMasks(config, head_floor=24)
    with torch.no_grad():
        for v in masks.vectors():
            v.zero_()
    assert [int(w) for w in masks.widths()] == [8, 8, 8, 24]
    for floor in (12, 72):
        with pytest.raises(ValueError, match=f"the head's floor {floor}"):
            ChannelMasks(config, head_floor=floor)


@pytest.mark.parametrize("head", ["bilinear", "subpixel"])
def test_the_extracted_student_computes_the_masked_supernet(head):
    masked = _masked(head=head)
    student = extract(masked)
    kept = [len(k) for k in masked.masks.kept()]
    assert student.config.channels == kept[:-1] and student.config.head_channels[-1] == kept[-1]
    assert student.config.channels != masked.config.channels  # something was removed
    ws = torch.randn(4, masked.num_ws, masked.config.w_dim)
    with torch.no_grad():
        image, pyramid = masked.synthesis(ws)
        image2, pyramid2 = student.synthesis(ws)
    for a, b in zip(pyramid, pyramid2):
        assert a.shape == b.shape and (a - b).abs().max() < 1e-5
    assert (image - image2).abs().max() < 1e-5


def test_masked_channels_leave_data_path_and_demodulation():
    masked = _masked()
    ws = torch.randn(2, masked.num_ws, masked.config.w_dim)
    dropped = [int(i) for i in range(masked.config.channels[1])
               if i not in set(masked.masks.kept()[1].tolist())]
    assert dropped
    with torch.no_grad():
        before = masked.synthesis(ws)[1]
        # whatever the dropped channels' weights, every level's image is the same (level 1's
        # channels feed level 2's block and level 1's head)
        conv = masked.student.synthesis.blocks[1][1]
        conv.pointwise[dropped] *= 7.0
        conv.bias[:, dropped] += 3.0
        masked.student.synthesis.blocks[2][0].depthwise[dropped] *= -2.0
        masked.student.synthesis.heads[1].project.weight[:, dropped] *= 5.0
        after = masked.synthesis(ws)[1]
    assert all(torch.equal(a, b) for a, b in zip(before, after))


def test_the_latency_gradient_reaches_every_mask():
    masked = _masked()
    total = sum((i + 1) * w for i, w in enumerate(masked.masks.widths()))
    total.backward()
    assert all(v.grad is not None and (v.grad == 8 * (i + 1)).all()
               for i, v in enumerate(masked.masks.vectors()))


def test_an_ema_copy_shares_the_searched_masks():
    import copy
    live = _masked()
    ema = share_masks(copy.deepcopy(live), live)
    with torch.no_grad():
        live.masks.levels[0].zero_()
    assert [len(k) for k in ema.masks.kept()] == [len(k) for k in live.masks.kept()]
    assert len(ema.masks.kept()[0]) == 8  # the floor


def _gated(levels=(1.0, 0.2, 0.9)):
    """A supernet with block-length gates: level 16's second convolution gated off."""
    config = supernet_config(PRESETS["blaze-tiny-32"], 2.0)
    torch.manual_seed(0)
    masked = MaskedStudent(randomize_like_trained(BlazeStyleGAN(config), 0),
                           ChannelMasks(config, seed=0, depth=True))
    with torch.no_grad():
        masked.masks.second.copy_(torch.tensor(levels))
        masked.masks.levels[2][:3] = 0.1  # and some channels dropped
    return masked


def test_a_gated_off_convolution_extracts_to_a_block_of_one():
    masked = _gated()
    assert masked.masks.convs() == [2, 1, 2]
    student = extract(masked)
    assert student.config.convs == [2, 1, 2] and len(student.synthesis.blocks[1]) == 1
    assert student.config.channels[2] == masked.config.channels[2] - 24
    ws = torch.randn(4, masked.num_ws, masked.config.w_dim)
    with torch.no_grad():
        before = masked.synthesis(ws)[1]
        for a, b in zip(before, student.synthesis(ws)[1]):
            assert a.shape == b.shape and (a - b).abs().max() < 1e-5
        # the gated-off layer computes nothing the images keep, whatever its weights
        masked.student.synthesis.blocks[1][1].pointwise.mul_(-3.0)
        after = masked.synthesis(ws)[1]
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    kept = extract(_gated((1.0, 0.9, 0.7)))
    assert kept.config.convs is None  # every level at two: the plain config


def test_the_gates_pass_gradients_straight_through():
    masked = _gated()
    ws = torch.randn(2, masked.num_ws, masked.config.w_dim)
    image = masked.synthesis(ws)[0]
    image.square().mean().backward()
    # the gated-off level's gradient says what its second convolution would change
    assert masked.masks.second.grad is not None and (masked.masks.second.grad != 0).all()
    masks = ChannelMasks(supernet_config(PRESETS["blaze-tiny-32"], 2.0))
    assert masks.gates() is None and masks.convs() is None
    with pytest.raises(ValueError, match="two convolutions per level"):
        ChannelMasks(PRESETS["blaze-tiny-32"].model_copy(update={"convs": [2, 1, 2]}),
                     depth=True)
