"""Draw a run's loss terms, learning rate and evaluation curves to a PNG.

    python tools/plot_metrics.py RUN_DIR [--out metrics.png]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Not engine.launch.run_tool: it imports torch (engine.dist), and drawing a curve needs none.
from engine.cli import fail  # noqa: E402
from engine.data import DataError  # noqa: E402
from engine.plotting import plot_metrics  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run's output_dir (holds metrics.jsonl)")
    parser.add_argument("--out", metavar="PNG", help="image to write (default: RUN_DIR/metrics.png)")
    args = parser.parse_args()
    print(plot_metrics(args.run_dir, args.out))


if __name__ == "__main__":
    try:
        main()
    except (DataError, FileNotFoundError) as e:
        fail(str(e), 1)
    except OSError as e:
        fail(f"{e.filename}: {e.strerror or e}; check the path and its permissions", 1)
