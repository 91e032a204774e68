#!/usr/bin/env bash
# The main job: a small demonstration study (warm-start vs reset-all under the permute shift, 3 seeds),
# printing the normalised reward per round. Installs everything it needs first.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$root/scripts/setup.sh" dev,stats
cd "$root"
plasticity-lab run --env gridworld --shift permute --condition warm_start,reset_all --seeds 0-2 \
    --preset smoke --rounds 4 --epochs-per-round 25 --threads 2 "$@"
