# The CI environment as an image: Debian bookworm with Python 3.11, running the README's test
# command (.ci/run -> make test -> scripts/setup-live.sh as root). Mininet needs a privileged
# container:   docker build -t rlte-ci . && docker run --rm --privileged rlte-ci
# (This image is not built on the project's own machines: they have no Docker engine. Keep
# every step here a call of the scripts that run there, so the two cannot drift.)
FROM python:3.11-slim-bookworm
RUN apt-get update -q && apt-get install -y -q --no-install-recommends make git sudo && rm -rf /var/lib/apt/lists/*
# torch==2.13.0 from PyPI is a multi-GB CUDA build; the CPU index offers 2.13.0+cpu, which the pin accepts.
ENV PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
WORKDIR /rlte
COPY . .
CMD [".ci/run"]
