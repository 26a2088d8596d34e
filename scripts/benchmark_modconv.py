"""The two forms of StyleGAN2's modulated convolution side by side: activation modulation (the
default: style on the input, one static convolution for the batch, demodulation on the output)
and fused (style and demodulation folded into per-sample weights, one grouped convolution).

One generator of ``--preset`` with random weights, in one process, the forms interleaved round by
round: a training-like step (generator forward, discriminator on its images, backward into the
generator) and a no-grad forward (what the distillation's teacher runs). Prints each form's
median milliseconds and how far the images of the two forms are apart. Asserts nothing; the
whole trainers' rates are ``benchmark_teacher.py`` and ``benchmark_distill.py``.

    python scripts/benchmark_modconv.py --preset tiny-32 --batch 8
"""

import statistics
import time

import torch
import typer

from pipeline.models.stylegan2 import PRESETS, Discriminator, Generator


def timed(step, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - start) / repeats * 1e3


def main(preset: str = typer.Option("tiny-32", help=f"one of {sorted(PRESETS)}"),
         batch: int = typer.Option(8, help="images per call"),
         rounds: int = typer.Option(15, help="interleaved rounds"),
         repeats: int = typer.Option(10, help="calls per form and round"),
         threads: int = typer.Option(0, help="torch threads (0: torch's default)")) -> None:
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = PRESETS[preset]
    G, D = Generator(config), Discriminator(config).requires_grad_(False)  # as in G's step
    z = torch.randn(batch, config.z_dim)

    def train_step() -> None:
        G.zero_grad(set_to_none=True)
        D(G(z, noise_mode="const")).sum().backward()

    def forward() -> None:
        with torch.no_grad():
            G(z, noise_mode="const")

    with torch.no_grad():
        gap = (G.set_fused(True)(z, noise_mode="const")
               - G.set_fused(False)(z, noise_mode="const")).abs().max().item()
    times: dict[tuple[str, bool], list[float]] = {}
    for round_ in range(rounds + 1):  # round 0 warms up, untimed
        for name, step in (("training step", train_step), ("no-grad forward", forward)):
            for fused in (False, True):
                G.set_fused(fused)
                ms = timed(step, repeats)
                if round_:
                    times.setdefault((name, fused), []).append(ms)
    print(f"{preset}, batch {batch}, {torch.get_num_threads()} threads; images of the two forms "
          f"differ by {gap:.2g} at most")
    for name in ("training step", "no-grad forward"):
        activation = statistics.median(times[name, False])
        fused = statistics.median(times[name, True])
        print(f"  {name:16s} activation modulation {activation:7.2f} ms, fused {fused:7.2f} ms "
              f"(activation / fused: {activation / fused:.2f})")


if __name__ == "__main__":
    typer.run(main)
