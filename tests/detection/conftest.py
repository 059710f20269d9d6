"""The torchvision reference detectors live with the benchmarks (benchmarks/torchvision_reference.py),
which compare against the same networks; the tests import them from there."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "benchmarks"))

