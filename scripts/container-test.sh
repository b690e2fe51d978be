#!/usr/bin/env bash
# The live-network tests in a container: `sudo make test-container` (also .ci/run and the GitHub
# workflow). As root on a Debian machine (or a CI runner with Docker), this
#   1. installs what is missing, from Debian packages: docker.io, debootstrap where needed, python3;
#   2. uses the Docker daemon that is running, or starts one (and stops that one on exit);
#   3. where this machine withholds a capability that `docker run --privileged` asks for (a VM
#      without CAP_SYS_RESOURCE), registers scripts/docker-runtime-wrapper (runc, less the
#      missing capabilities) with the daemon it starts and says so; elsewhere nothing changes;
#   4. takes debian:bookworm from the registry where one answers (docker pull, short timeout),
#      else makes a minimal bookworm with debootstrap and `docker import`s it (rlte-base:bookworm,
#      kept for later runs);
#   5. builds ./Dockerfile on it (--network host; the layer cache makes a second build quick),
#      serving the host's CA bundle and the wheels of its pip find-links directories (the torch
#      CPU wheel) to the build over a loopback HTTP server;
#   6. runs the image --privileged --network none: in its own network namespace, with its own
#      Open vSwitch, it runs the live-network tests and a fidelity smoke run
#      (`rlte fidelity --topology abilene --count 1`): this script again, with --in-container.
#      The host's Open vSwitch bridges are never touched. The rest of the suite is `make test`'s.
# One line per step, the timings at the end; the logs are in out/container-test/. On exit,
# even on failure, it removes its container, stops its HTTP server and the daemon it started,
# and deletes its temporary directory.
# Settings (environment): RLTE_IMAGE (rlte-ci), RLTE_BASE_IMAGE (use this base, no detection),
# RLTE_PULL_TIMEOUT (30 s), RLTE_HTTP_PORT (8799), RLTE_RUN_TIMEOUT (1800 s).
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${RLTE_IMAGE:-rlte-ci}
LOCAL_BASE=rlte-base:bookworm
RUNTIME_NAME=rlte-runc
LOG=out/container-test

say() { echo "container-test: $*"; }
die() { echo "container-test: error: $*" >&2; exit 1; }
duration() { if [ "$1" -ge 60 ]; then printf '%dm%02ds' $(($1 / 60)) $(($1 % 60)); else printf '%ds' "$1"; fi; }

# ---------------------------------------------------------------- inside the container
in_container() {
    [ -e /.dockerenv ] || [ -e /run/.containerenv ] || die "--in-container runs in the image that this script builds"
    local setup
    setup=$(scripts/setup-live.sh .venv)
    say "(container) ${setup//$'\n'/; }"
    # the live-network tests: the test files that ask envs.emulation whether they can run
    local files summary rc start
    mapfile -t files < <(grep -rl --include='test_*.py' -e emulation_problems tests | sort)
    [ ${#files[@]} -gt 0 ] || die "no live-network tests found (test files that call emulation_problems)"
    start=$SECONDS
    set +e
    .venv/bin/python -m pytest -p no:cacheprovider -rs "${files[@]}" 2>&1 | tee /tmp/live-tests.log
    rc=${PIPESTATUS[0]}
    set -e
    summary=$(grep -E '^=+ .*(passed|failed|error|skipped|deselected|no tests ran).* =+$' /tmp/live-tests.log |
              tail -n 1 | sed -E 's/^=+ //; s/ =+$//')
    say "(container) live-network tests (${files[*]}): ${summary:-no summary} [$(duration $((SECONDS - start)))]"
    [ "$rc" = 0 ] || die "the live-network tests failed"
    case $summary in *skipped*) die "live-network tests were skipped in the container (reasons above)" ;; esac

    start=$SECONDS
    .venv/bin/rlte fidelity --topology abilene --count 1 --out /tmp/fidelity.json
    .venv/bin/python - /tmp/fidelity.json "$(duration $((SECONDS - start)))" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
samples, errors = report["samples"], report["errors"]
if not samples or not all(s["measured_mlu"] > 0 for s in samples):
    sys.exit("container-test: error: the fidelity smoke run measured no traffic")
print(f"container-test: (container) fidelity smoke: {len(samples)} runs on {report['topology']}, utilization MAE "
      f"{errors['utilization_mae']:.4f}, MLU rel. error {errors['mlu_relative_error_mean']:.1%} (mean), "
      f"same ranking: {report['same_ranking']} [{sys.argv[2]}]")
EOF
}

if [ "${1:-}" = "--in-container" ]; then
    in_container
    exit 0
fi
[ $# = 0 ] || die "usage: scripts/container-test.sh (as root; see the comment at its top)"
[ "$(id -u)" = 0 ] || die "run as root: sudo make test-container"

# ---------------------------------------------------------------- clean-up, whatever happens
TMP=$(mktemp -d /tmp/rlte-container-test.XXXXXX)
DOCKER="" CHILD="" CONTAINER="" HTTP_PID="" DOCKERD_PID="" POLICY_RC=""
unmount_under() {  # whatever debootstrap may have left mounted (before deleting the tree)
    awk -v d="$1" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do umount -l "$m"; done
}
in_background() {  # "$@", waited for: bash runs a trap only once its foreground command is done
    "$@" &
    CHILD=$!
    local rc=0
    wait "$CHILD" || rc=$?
    CHILD=""
    return "$rc"
}
exec 3>&1 4>&2  # this script's output, for cleanup: a signal may come while a step's output goes to its log
cleanup() {
    local rc=$?
    set +e
    exec 1>&3 2>&4
    [ -z "$CHILD" ] || kill "$CHILD" 2>/dev/null
    if [ -n "$CONTAINER" ] && "$DOCKER" container inspect "$CONTAINER" >/dev/null 2>&1; then
        "$DOCKER" rm -f "$CONTAINER" >/dev/null 2>&1 && say "removed container $CONTAINER"
    fi
    if [ -n "$HTTP_PID" ]; then
        kill "$HTTP_PID" 2>/dev/null
        wait "$HTTP_PID" 2>/dev/null
    fi
    if [ -n "$DOCKERD_PID" ]; then
        kill -TERM "$DOCKERD_PID" 2>/dev/null
        for _ in $(seq 120); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.25; done
        kill -0 "$DOCKERD_PID" 2>/dev/null && kill -KILL "$DOCKERD_PID"
        wait "$DOCKERD_PID" 2>/dev/null
        say "stopped the Docker daemon it started (pid $DOCKERD_PID)"
    fi
    [ -n "$POLICY_RC" ] && rm -f /usr/sbin/policy-rc.d
    unmount_under "$TMP"
    rm -rf --one-file-system "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
mkdir -p "$LOG"
START=$SECONDS

apt_install() {
    say "installing $* (Debian packages)"
    export DEBIAN_FRONTEND=noninteractive
    in_background apt-get update -q >"$LOG/apt.log" 2>&1 || true
    in_background apt-get install -y -q --no-install-recommends "$@" >>"$LOG/apt.log" 2>&1 ||
        { tail -n 20 "$LOG/apt.log"; die "apt-get install $* failed (log: $LOG/apt.log)"; }
}
pick_docker() { if [ -x /usr/bin/docker ]; then DOCKER=/usr/bin/docker; else DOCKER=$(command -v docker || true); fi; }
daemon_answers() { [ -n "$DOCKER" ] && timeout 20 "$DOCKER" info >/dev/null 2>&1; }

# ---------------------------------------------------------------- 1. packages
pick_docker
[ -x /usr/bin/python3 ] || apt_install python3
if ! daemon_answers && ! command -v dockerd >/dev/null; then
    if [ ! -e /usr/sbin/policy-rc.d ]; then  # the package must not start a daemon of its own: step 2 does
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && POLICY_RC=1
    fi
    apt_install docker.io
    [ -n "$POLICY_RC" ] && rm -f /usr/sbin/policy-rc.d && POLICY_RC=""
    pick_docker
else
    say "packages: Docker is installed ($(command -v dockerd || echo "$DOCKER"))"
fi

# ---------------------------------------------------------------- 2. capabilities, 3. daemon
MISSING=$(/usr/bin/python3 scripts/docker-runtime-wrapper --missing)
RUNTIME=""
if daemon_answers; then
    if [ -n "$MISSING" ]; then
        "$DOCKER" info --format '{{json .Runtimes}}' | grep -q "\"$RUNTIME_NAME\"" ||
            die "this machine lacks $MISSING, which docker run --privileged asks for, and the running Docker daemon" \
                "has no runtime that drops it: stop that daemon (this script then starts its own) or add" \
                "--add-runtime $RUNTIME_NAME=$PWD/scripts/docker-runtime-wrapper to it"
        RUNTIME=$RUNTIME_NAME
    fi
    say "docker: using the running daemon ($("$DOCKER" version --format '{{.Server.Version}}'))"
else
    flags=(--iptables=false --ip6tables=false --bridge=none --storage-driver=overlay2
           --exec-opt native.cgroupdriver=cgroupfs)
    if [ -n "$MISSING" ]; then
        flags+=(--add-runtime "$RUNTIME_NAME=$PWD/scripts/docker-runtime-wrapper")
        RUNTIME=$RUNTIME_NAME
    fi
    dockerd "${flags[@]}" >"$LOG/dockerd.log" 2>&1 </dev/null 3>&- 4>&- &
    DOCKERD_PID=$!
    for _ in $(seq 120); do
        daemon_answers && break
        kill -0 "$DOCKERD_PID" 2>/dev/null || { DOCKERD_PID=""; tail -n 20 "$LOG/dockerd.log"; die "dockerd exited"; }
        sleep 0.5
    done
    daemon_answers || die "dockerd did not answer within a minute (log: $LOG/dockerd.log)"
    say "docker: started dockerd $("$DOCKER" version --format '{{.Server.Version}}') (pid $DOCKERD_PID, log: $LOG/dockerd.log); stopped on exit"
fi
if [ -n "$MISSING" ]; then
    say "capabilities: this machine withholds $MISSING, which --privileged asks for: the container runs under" \
        "the runtime $RUNTIME_NAME (scripts/docker-runtime-wrapper: runc without $MISSING)"
else
    say "capabilities: every capability --privileged asks for is available: plain --privileged"
fi

# ---------------------------------------------------------------- 4. base image
debian_uri() {  # the host's Debian mirror for suite $1, from its APT sources (deb822 or one-line)
    { cat /etc/apt/sources.list.d/*.sources 2>/dev/null; echo; } | awk -v suite="$1" '
        /^[[:space:]]*$/ { if (uri != "" && ok && deb) { print uri; exit } uri = ""; ok = 0; deb = 0; next }
        $1 == "Types:"  { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
        $1 == "URIs:"   { uri = $2 }
        $1 == "Suites:" { for (i = 2; i <= NF; i++) if ($i == suite) ok = 1 }' | grep . && return
    cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | sed -E 's/\[[^]]*\]//' |
        awk -v suite="$1" '$1 == "deb" && $3 == suite { print $2; exit }' | grep .
}
base_start=$SECONDS
if [ -n "${RLTE_BASE_IMAGE:-}" ]; then
    BASE=$RLTE_BASE_IMAGE
    say "base image: $BASE (RLTE_BASE_IMAGE)"
elif "$DOCKER" image inspect debian:bookworm >/dev/null 2>&1; then
    BASE=debian:bookworm
    say "base image: debian:bookworm (already here)"
elif in_background timeout "${RLTE_PULL_TIMEOUT:-30}" "$DOCKER" pull -q debian:bookworm >"$LOG/pull.log" 2>&1; then
    BASE=debian:bookworm
    say "base image: debian:bookworm, pulled in $(duration $((SECONDS - base_start)))"
else
    why=$(tail -n 1 "$LOG/pull.log" | sed 's/^Error response from daemon: //')
    BASE=$LOCAL_BASE
    if "$DOCKER" image inspect "$LOCAL_BASE" >/dev/null 2>&1; then
        say "base image: $LOCAL_BASE, made by an earlier run (no registry: ${why:-docker pull timed out})"
    else
        command -v debootstrap >/dev/null && [ -e /usr/share/keyrings/debian-archive-keyring.gpg ] ||
            apt_install debootstrap debian-archive-keyring
        mirror=$(debian_uri bookworm || echo http://deb.debian.org/debian)
        security=$(debian_uri bookworm-security || echo http://deb.debian.org/debian-security)
        root=$TMP/rootfs
        in_background debootstrap --variant=minbase bookworm "$root" "$mirror" >"$LOG/debootstrap.log" 2>&1 ||
            { tail -n 20 "$LOG/debootstrap.log"; die "debootstrap failed (log: $LOG/debootstrap.log)"; }
        unmount_under "$root"
        rm -f "$root/etc/apt/sources.list"
        cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
        rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb
        tar --numeric-owner -C "$root" -c . | "$DOCKER" import --change 'CMD ["bash"]' - "$LOCAL_BASE" >/dev/null
        rm -rf --one-file-system "$root"
        say "base image: no registry (${why:-docker pull timed out}): debootstrapped bookworm from $mirror and" \
            "imported it as $LOCAL_BASE in $(duration $((SECONDS - base_start)))"
    fi
fi
base_s=$((SECONDS - base_start))

# ---------------------------------------------------------------- 5. the project's image
build_args=(--build-arg "BASE_IMAGE=$BASE")
served=$TMP/served
mkdir -p "$served"
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    cp /etc/ssl/certs/ca-certificates.crt "$served/ca-certificates.crt"
fi
wheels=0 torch=0
while read -r dir; do  # the host's pip find-links directories ($PIP_FIND_LINKS and pip's config files)
    for wheel in "$dir"/*.whl; do
        [ -e "$wheel" ] && [ ! -e "$served/${wheel##*/}" ] || continue
        ln -s "$wheel" "$served/"
        wheels=$((wheels + 1))
        case ${wheel##*/} in torch-*) torch=1 ;; esac
    done
done < <(/usr/bin/python3 - <<'EOF'
import configparser, os
links = os.environ.get("PIP_FIND_LINKS", "").split()
for name in ["/etc/xdg/pip/pip.conf", "/etc/pip.conf", os.path.expanduser("~/.pip/pip.conf"),
             os.path.expanduser("~/.config/pip/pip.conf"), os.environ.get("PIP_CONFIG_FILE", "")]:
    config = configparser.RawConfigParser()
    try:
        config.read(name)
    except (configparser.Error, OSError):
        continue
    for section in ("global", "install"):
        if config.has_option(section, "find-links"):
            links += config.get(section, "find-links").split()
for link in dict.fromkeys(links):
    path = link[len("file://"):] if link.startswith("file://") else link
    if os.path.isdir(path):
        print(path)
EOF
)
if [ -n "$(ls -A "$served")" ]; then
    wanted=${RLTE_HTTP_PORT:-8799}
    port=$(/usr/bin/python3 -c '
import socket, sys
with socket.socket() as s:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as http.server does
    try:
        s.bind(("127.0.0.1", int(sys.argv[1])))
    except OSError:
        s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])' "$wanted")
    /usr/bin/python3 -m http.server --bind 127.0.0.1 --directory "$served" "$port" >"$LOG/http.log" 2>&1 </dev/null 3>&- 4>&- &
    HTTP_PID=$!
    for _ in $(seq 100); do
        (exec 9<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        kill -0 "$HTTP_PID" 2>/dev/null || { HTTP_PID=""; die "the loopback HTTP server did not start (log: $LOG/http.log)"; }
        sleep 0.1
    done
    note=""
    [ "$port" = "$wanted" ] || note=" (port $wanted busy: the pip steps are built again, not taken from the cache)"
    if [ -e "$served/ca-certificates.crt" ]; then
        build_args+=(--build-arg "HOST_CA_URL=http://127.0.0.1:$port/ca-certificates.crt"
                     --build-arg "HOST_CA_SHA256=$(sha256sum "$served/ca-certificates.crt" | cut -d' ' -f1)")
    fi
    if [ "$wheels" -gt 0 ]; then
        build_args+=(--build-arg "PIP_FIND_LINKS=http://127.0.0.1:$port/")
    fi
    if [ "$torch" = 1 ]; then  # the host's torch wheel instead of the CPU index
        build_args+=(--build-arg "PIP_EXTRA_INDEX_URL=")
    fi
    what="the host's CA bundle"
    [ "$wheels" = 0 ] || what="$what and $wheels wheel(s) from its pip find-links"
    [ -e "$served/ca-certificates.crt" ] || what="$wheels wheel(s) from the host's pip find-links"
    say "serving $what to the build on 127.0.0.1:$port$note"
fi

old_image=$("$DOCKER" image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)
build_start=$SECONDS
if ! in_background "$DOCKER" build --network host --force-rm -t "$IMAGE" "${build_args[@]}" . >"$LOG/build.log" 2>&1; then
    tail -n 30 "$LOG/build.log"
    die "the image build failed (log: $LOG/build.log)"
fi
build_s=$((SECONDS - build_start))
new_image=$("$DOCKER" image inspect -f '{{.Id}}' "$IMAGE")
if [ -n "$old_image" ] && [ "$old_image" != "$new_image" ]; then  # the previous build of this script's image
    "$DOCKER" image rm "$old_image" >/dev/null 2>&1 || true
fi
size=$("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE" | awk '{ printf "%.2f GB", $1 / 1e9 }')
steps=$(grep -cE '^Step [0-9]+/|^#[0-9]+ \[[0-9]+/[0-9]+\]' "$LOG/build.log" || true)
cached=$(grep -cE 'Using cache|^#[0-9]+ CACHED' "$LOG/build.log" || true)
say "image: $IMAGE built in $(duration "$build_s"), $size, $cached of $steps steps from the cache (log: $LOG/build.log)"

# ---------------------------------------------------------------- 6. the tests, in the container
CONTAINER=rlte-container-test-$$
run_args=(--rm --name "$CONTAINER" --privileged --network none)
[ -z "$RUNTIME" ] || run_args+=(--runtime "$RUNTIME")
run_start=$SECONDS
rc=0
in_background timeout "${RLTE_RUN_TIMEOUT:-1800}" "$DOCKER" run "${run_args[@]}" "$IMAGE" \
    scripts/container-test.sh --in-container >"$LOG/run.log" 2>&1 || rc=$?
run_s=$((SECONDS - run_start))
grep -E '^container-test: ' "$LOG/run.log" | sed 's/^container-test: (container) /container-test: container: /' || true
if [ "$rc" != 0 ]; then
    tail -n 40 "$LOG/run.log"
    [ "$rc" != 124 ] || die "the container run took more than ${RLTE_RUN_TIMEOUT:-1800} s (log: $LOG/run.log)"
    die "the container run failed (log: $LOG/run.log)"
fi
CONTAINER=""

say "time: image build $(duration "$build_s") (base image $(duration "$base_s"))"
say "time: container run $(duration "$run_s")"
say "time: make test-container $(duration $((SECONDS - START)))"
