"""Test-wide settings."""

import torch

# One thread: results and timings then do not depend on what else the machine is running, and small test
# workloads gain nothing from a second thread.
torch.set_num_threads(1)
