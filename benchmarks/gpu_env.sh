# Sourced by the GPU scripts (gpu_check.sh, gpu_study.sh): install the wheels carried in .whl/ (made where pip
# reaches a registry by benchmarks/gpu_wheels.sh; the GPU machine reaches none) into /tmp/site, and put them and
# this checkout on PYTHONPATH. Run from the repository's root.
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
