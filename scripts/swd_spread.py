"""How much of an SWD figure is the estimator's: trained students scored again with other
estimator seeds and more images.

Each ``--student`` (a student snapshot) makes ``count`` images from seeded latents; their SWD
(x 1e3, per pyramid level, as ``distill_sweep.py`` scores it) against the first ``count``
dataset images is computed once per ``--seeds`` value, the seed drawing the patches, the
projection directions and the latents anew, and for each ``--counts`` value. Prints one line
per (count, seed): every student's SWD at the finest level and the mean over levels; then
each student's range over the seeds. A spread between students far above their ranges is the
students' own, not the estimator's. Asserts nothing.

    python scripts/swd_spread.py --dataset data/prepared --student runs/a/student.pt \\
        --student runs/b/student.pt --seeds 0,1,2 --counts 500,1500
"""

import sys
from pathlib import Path

import torch
import typer
from distill_sweep import quantized

from pipeline.data.dataset import FaceDataset
from pipeline.metrics import swd
from pipeline.models.blazestylegan import load_student


def main(dataset: Path = typer.Option(..., help="dataset directory (prepare stage)"),
         student: list[Path] = typer.Option(..., help="student snapshot(s)"),
         seeds: str = typer.Option("0,1,2", help="estimator seeds"),
         counts: str = typer.Option("500", help="images per set, comma-separated")) -> None:
    data = FaceDataset(dataset)
    students = {str(path): load_student(path).eval() for path in student}
    finest: dict[str, list[float]] = {name: [] for name in students}
    for count in (int(c) for c in counts.split(",")):
        if len(data) < count:
            raise typer.BadParameter(f"{dataset} holds {len(data)} images, fewer than {count}")
        real = quantized(torch.stack([data[i] for i in range(count)]))
        for seed in (int(s) for s in seeds.split(",")):
            reference = swd.SWD(swd.level_descriptors(real, seed), seed)
            row = []
            for name, model in students.items():
                z = torch.randn(count, model.config.z_dim,
                                generator=torch.Generator().manual_seed(123 + seed))
                with torch.no_grad():
                    images = torch.cat([model(c)[0] for c in z.split(100)])
                distances = reference.distance(swd.level_descriptors(quantized(images),
                                                                     seed + 10))
                level = max(int(k.removeprefix("swd_")) for k in distances if k != "swd_mean")
                finest[name].append(distances[f"swd_{level}"])
                row.append(f"{name}: swd_{level} {distances[f'swd_{level}']:.1f}, "
                           f"mean {distances['swd_mean']:.1f}")
            print(f"count {count}, seed {seed}: " + "; ".join(row), flush=True)
    for name, values in finest.items():
        print(f"{name}: finest level {min(values):.1f}-{max(values):.1f} "
              f"(range {max(values) - min(values):.1f})")


if __name__ == "__main__":
    sys.exit(typer.run(main))
