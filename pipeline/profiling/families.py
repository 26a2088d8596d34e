"""The unit families of the speed model and its data: micro-models of one family have the same
operators (``measure_latency`` checks it), and the speed model one-hot encodes them.

* ``block``: a level's block, 2x bilinear upsampling and two modulated separable convolutions;
  ``block-const``: the first level's, from the learned constant, no upsampling;
* ``head-bilinear`` / ``head-subpixel``: the last UpToRGB head, by variant;
* ``block-short`` / ``block-const-short``: either block with its first convolution only, as the
  latency search's block-length variables leave it. Last, so that a speed model of the first
  four (one fitted on data without short blocks, or before they existed) has the same features
  and fit as before.
"""

from __future__ import annotations

PLAIN_FAMILIES = ("block", "block-const", "head-bilinear", "head-subpixel")
FAMILIES = (*PLAIN_FAMILIES, "block-short", "block-const-short")
BLOCKS = ("block", "block-const", "block-short", "block-const-short")


def block_family(upsample: bool, convs: int = 2) -> str:
    """The family of a level's block: ``block`` (upsampling first) or ``block-const`` (the
    first level's), ``-short`` with one convolution."""
    return ("block" if upsample else "block-const") + ("-short" if convs == 1 else "")
