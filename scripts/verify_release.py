"""Check a release zip: every file against SHA256SUMS, and the float16 model runs in LiteRT.

    python scripts/verify_release.py release/blazestylegan.zip
"""

import json
import sys

import typer

from pipeline.export.verify_bundle import verify_bundle
from pipeline.stage import stage_app, stage_run

app = stage_app(__doc__)


@app.command()
def main(zip_path: str = typer.Argument(..., help="release zip (the bundle stage's)")) -> None:
    with stage_run("verify_release"):
        json.dump(verify_bundle(zip_path), sys.stdout, indent=2)
        print()


if __name__ == "__main__":
    app()
