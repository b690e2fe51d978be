# The project on Debian bookworm (Python 3.11), for the live-network tests in a container:
# `scripts/container-test.sh` (`sudo make test-container`) builds this image and runs it
# privileged with no network (its own network namespace and Open vSwitch), where it runs
# the Mininet tests and a fidelity smoke run. By hand, with a registry:
#   docker build --network host -t rlte-ci . && docker run --rm --privileged --network none rlte-ci
# Everything is installed here, at build time, by the same steps as on a machine (the Makefile's
# stamps, scripts/setup-live.sh): the container cannot reach a package index.
# --network host: the build's downloads, and the loopback server through which
# container-test.sh hands over the host's CA bundle and pip wheels. A failed download fails the build.
ARG BASE_IMAGE=debian:bookworm
FROM ${BASE_IMAGE}
SHELL ["/bin/bash", "-euo", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update -q --error-on=any \
 && apt-get install -y -q --no-install-recommends python3 python3-venv make ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# The CA bundle pip must trust where TLS goes through a proxy (container-test.sh serves the
# host's; checked against its SHA-256, which also keys this step's cache).
ARG HOST_CA_URL=
ARG HOST_CA_SHA256=
RUN if [ -n "$HOST_CA_URL" ]; then \
        python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' \
            "$HOST_CA_URL" /etc/ssl/certs/host-ca-bundle.crt \
        && echo "$HOST_CA_SHA256  /etc/ssl/certs/host-ca-bundle.crt" | sha256sum --check --quiet \
        && printf '[global]\ncert = /etc/ssl/certs/host-ca-bundle.crt\n' > /etc/pip.conf; \
    fi

# torch==2.13.0 from PyPI is a multi-GB CUDA build: the CPU index offers 2.13.0+cpu, which the
# pin accepts. container-test.sh passes PIP_FIND_LINKS (the host's pip wheels) and, when those
# hold a torch wheel, clears this (that index may be out of reach).
ARG PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG PIP_FIND_LINKS
WORKDIR /rlte
# The dependencies first, from pyproject.toml alone, so that a change of the code reuses this
# layer (README.md is part of the package's metadata: a placeholder until the code comes).
COPY pyproject.toml Makefile ./
RUN touch README.md && make .venv/.installed-test
COPY scripts/setup-live.sh scripts/
RUN scripts/setup-live.sh --install-only .venv && rm -rf /var/lib/apt/lists/*
COPY . .
# the project itself, installed again now that its packages are here (-W: as if pyproject.toml changed)
RUN make -W pyproject.toml .venv/.installed-test \
 && .venv/bin/rlte --help >/dev/null && .venv/bin/python -c 'import mininet.net, torch, os_ken'
CMD ["scripts/container-test.sh", "--in-container"]
